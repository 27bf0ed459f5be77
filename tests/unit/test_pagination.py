"""Keyset pagination: the extra row says a next page exists; the cursor is the last row shown."""

from services.common.pagination import page


def test_a_full_page_with_one_more_row_points_at_the_next_page() -> None:
    assert page([1, 2, 3, 4], 3, key=lambda n: n * 10) == ([1, 2, 3], "30")


def test_the_last_page_has_no_cursor() -> None:
    assert page([1, 2, 3], 3, key=lambda n: n) == ([1, 2, 3], None)
    assert page([], 3, key=lambda n: n) == ([], None)
