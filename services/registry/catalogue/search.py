"""全文检索 — Chinese full-text search of the catalogue, without any PostgreSQL extension.

Chinese has no spaces to split words on, and the embedded PostgreSQL has no contrib (no ``pg_trgm``,
no ``zhparser``), so an entry is indexed by its *characters*: every character and every two adjacent
characters (unigrams and bigrams) of its name, summary and 信息项 names. PostgreSQL computes them in
generated columns (``search_terms``, and ``search_name`` for the name alone) with the SQL functions
of the registry's migration, so every write keeps them, whatever path it takes.

A query is split the same way (``registry.search_query``): the bigrams of each word, or the word
itself when it is one character. An entry matches when it holds *every* query term (``@>``, served by
the GIN index): "户籍信息" finds "居民户籍登记信息" but not an entry that only says "户籍". Ranking is by
where the terms are: all of them in the name (2), some in the name (1), only in the summary or the
item names (0); then by code. A page's cursor is ``<rank>:<code>`` of its last entry.
"""

from __future__ import annotations

import re
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Text, case, literal, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.pagination import one_more, page
from services.common.security import Principal
from services.registry.catalogue.service import filtered, visible_clause
from services.registry.models import Resource
from services.registry.problems import RegistryProblem

CURSOR = re.compile(r"([0-2]):([0-9]{6,12}/[0-9]{6})")


async def query_terms(session: AsyncSession, q: str) -> list[str]:
    """The terms an entry must hold to match ``q`` (empty when ``q`` has no letter, digit or 汉字)."""
    # PostgreSQL text cannot hold a NUL; the edge refuses one in a URL, and here it is punctuation.
    terms = await session.scalar(text("SELECT registry.search_query(:q)"), {"q": q.replace("\x00", " ")})
    return list(terms or [])


def rank(terms: list[str]) -> ColumnElement[int]:
    """2 when the name holds every term, 1 when it holds some, 0 when only the rest does."""
    wanted = literal(terms, ARRAY(Text))
    return case(
        (Resource.search_name.contains(wanted), 2),
        (Resource.search_name.overlap(wanted), 1),
        else_=0,
    )


def parse_cursor(cursor: str) -> tuple[int, str]:
    """The rank and code a search page's cursor holds; anything else is 400 ``invalid-cursor``."""
    match = CURSOR.fullmatch(cursor)
    if match is None:
        raise RegistryProblem.INVALID_CURSOR.problem("cursor 无效 (not a cursor this search handed out).")
    return int(match[1]), match[2]


async def search_resources(
    session: AsyncSession,
    principal: Principal,
    q: str,
    filters: dict[str, str | None],
    limit: int,
    cursor: str | None,
) -> tuple[list[Resource], str | None]:
    """The entries ``principal`` may see that match ``q`` and ``filters``, best first, one page."""
    after = parse_cursor(cursor) if cursor else None
    terms = await query_terms(session, q)
    if not terms:
        return [], None  # only punctuation or symbols: nothing can match
    score = rank(terms).label("score")
    # Typed as one column for the shared helpers; the rows are (Resource, rank).
    matching = cast(Select[Any], select(Resource, score))
    query = filtered(matching.where(Resource.search_terms.contains(literal(terms, ARRAY(Text)))), filters)
    query = query.where(visible_clause(principal))
    if after is not None:
        last_rank, last_code = after
        query = query.where((score < last_rank) | ((score == last_rank) & (Resource.code > last_code)))
    query = one_more(query.order_by(score.desc(), Resource.code), limit)
    rows: list[tuple[Resource, int]] = [(r, n) for r, n in (await session.execute(query)).all()]
    shown, next_cursor = page(rows, limit, lambda row: f"{row[1]}:{row[0].code}")
    return [resource for resource, _ in shown], next_cursor
