"""Keyset pagination, the one way every list of the platform pages (``limit`` and ``cursor`` in,
``{"items": [...], "next_cursor": ...}`` out): a query asks for ``limit + 1`` rows ordered by its
key; the extra row only says that there is a next page, which starts after the last row shown."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Select

Row = TypeVar("Row")


def one_more(query: Select[Any], limit: int) -> Select[Any]:
    """``query`` asking for one row more than a page, to learn whether another page follows."""
    return query.limit(limit + 1)


def page(rows: Sequence[Row], limit: int, key: Callable[[Row], object]) -> tuple[list[Row], str | None]:
    """The page of ``rows`` (fetched by :func:`one_more`) and the cursor of the next page, if any:
    the ``key`` of the page's last row."""
    shown = list(rows[:limit])
    return shown, str(key(shown[-1])) if len(rows) > limit else None
