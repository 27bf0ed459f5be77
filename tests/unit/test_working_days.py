"""Due dates counted in working days (工作日), weekends skipped."""

from datetime import date

import pytest

from services.registry.applications.service import add_working_days


def test_friday_plus_one_is_monday() -> None:
    assert add_working_days(date(2026, 11, 27), 1) == date(2026, 11, 30)


def test_ten_working_days_from_monday_is_monday_two_weeks_later() -> None:
    assert add_working_days(date(2026, 11, 23), 10) == date(2026, 12, 7)


@pytest.mark.parametrize("start", [date(2026, 11, 28), date(2026, 11, 29)])
def test_from_a_weekend_the_first_working_day_is_monday(start: date) -> None:
    assert add_working_days(start, 1) == date(2026, 11, 30)


def test_ten_working_days_from_saturday() -> None:
    assert add_working_days(date(2026, 11, 28), 10) == date(2026, 12, 11)


def test_within_the_week() -> None:
    assert add_working_days(date(2026, 11, 23), 4) == date(2026, 11, 27)


def test_zero_days_is_the_start_date() -> None:
    assert add_working_days(date(2026, 11, 27), 0) == date(2026, 11, 27)


def test_result_is_never_a_weekend() -> None:
    start = date(2026, 11, 23)
    assert all(add_working_days(start, n).weekday() < 5 for n in range(1, 30))
