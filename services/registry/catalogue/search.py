"""全文检索 — Chinese full-text search of the catalogue, without any PostgreSQL extension.

An entry is indexed by its characters and pairs of adjacent characters (catalogue/terms.py), kept
in two GIN-indexed ``text[]`` columns: ``search_terms`` (name, summary and 信息项 names) and
``search_name`` (the name alone). An entry matches a query when it holds *every* term of the query
(``@>``): "户籍信息" finds "居民户籍信息" and "户籍信息变更记录", not "户籍登记信息", which lacks
籍信. Order is kept within each pair, so a match is close to finding each word as a substring.

Ranking is by where the terms are, in three tiers: all in the name (2), some in the name (1), only
in the summary or item names (0); within a tier, by code. Each tier is its own query ordered by
code with a ``LIMIT`` (see :func:`tier_page`), so a page never sorts every match of a common word.
A page's cursor is ``<tier>:<code>`` of its last entry.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import ColumnElement, Select, Text, func, literal, not_, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from services.common.pagination import page
from services.common.security import Principal
from services.registry.catalogue.service import filtered, visible_clause
from services.registry.catalogue.terms import query_terms
from services.registry.models import Resource
from services.registry.problems import RegistryProblem

CURSOR = re.compile(r"([0-2]):([0-9]{6,12}/[0-9]{6})")
TIERS = (2, 1, 0)
WINDOW = 1500  # entries by code a page is first sought in (tier_page)
MAX_WINDOW = 20_000


def tier_clause(tier: int, terms: list[str], table: type[Resource] = Resource) -> ColumnElement[bool]:
    """The entries of ``tier`` for ``terms`` (see the module's docstring)."""
    wanted = literal(terms, ARRAY(Text))
    all_in_name: ColumnElement[bool] = table.search_name.contains(wanted)
    some_in_name: ColumnElement[bool] = table.search_name.overlap(wanted)
    all_in_text: ColumnElement[bool] = table.search_terms.contains(wanted)
    if tier == 2:
        return all_in_name
    if tier == 1:
        return all_in_text & some_in_name & not_(all_in_name)
    return all_in_text & not_(some_in_name)


async def tier_page(
    session: AsyncSession,
    principal: Principal,
    terms: list[str],
    tier: int,
    filters: dict[str, str | None],
    start: str | None,
    wanted: int,
) -> list[Resource]:
    """The first ``wanted`` entries of ``tier`` by code, after ``start``.

    PostgreSQL cannot estimate how many entries hold several bigrams of one word (they are far
    from independent: it guesses a handful when there are thousands), and a GIN scan of a common
    word fetches every match to sort them by code. So, unless a department is asked for (its
    b-tree index is selective), a page is sought by walking the primary key in windows: a common
    word fills the page in the first :data:`WINDOW` entries. Otherwise the window's share of
    matches estimates the rest: walking on costs about (entries still wanted) / share rows, the GIN
    index share × (all entries); the cheaper is taken — a larger next window, or the index."""
    found: list[Resource] = []
    size, after = WINDOW, start
    while filters.get("provider") is None:
        window = select(*Resource.__table__.columns).order_by(Resource.code).limit(size)  # the search terms too
        if after is not None:
            window = window.where(Resource.code > after)
        scanned = aliased(Resource, window.subquery("window"))
        query: Select[Any] = filtered(select(scanned), filters, scanned)
        query = query.where(tier_clause(tier, terms, scanned), visible_clause(principal, scanned))
        hits = list((await session.scalars(query.order_by(scanned.code).limit(wanted - len(found)))).all())
        found.extend(hits)
        if len(found) == wanted:
            return found
        codes = select(Resource.code).order_by(Resource.code).limit(size)
        if after is not None:
            codes = codes.where(Resource.code > after)
        last = await session.scalar(select(func.max(codes.subquery().c.code)))
        if last is None:
            return found  # walked to the end: that is all there is
        # Walking on costs about (still wanted) / density rows; the index fetches every match,
        # about density × entries. Take the cheaper (a window without a match: the index).
        density = len(hits) / size
        if density == 0 or density * await entries(session) <= (wanted - len(found)) / density:
            del found[len(found) - len(hits) :]  # the index finds these again, in order
            break
        size, after = min(MAX_WINDOW, int((wanted - len(found)) / density * 1.2) + 100), last
    query = filtered(select(Resource).where(tier_clause(tier, terms)), filters)
    query = query.where(visible_clause(principal)).order_by(Resource.code).limit(wanted - len(found))
    if after is not None:
        query = query.where(Resource.code > after)
    return found + list((await session.scalars(query)).all())


async def entries(session: AsyncSession) -> float:
    """About how many entries there are (PostgreSQL's statistics: no count)."""
    estimate = await session.scalar(text("SELECT reltuples FROM pg_class WHERE oid = 'registry.resources'::regclass"))
    return max(float(estimate or 0), 1.0)


def parse_cursor(cursor: str) -> tuple[int, str]:
    """The tier and code a search page's cursor holds; anything else is 422 ``invalid-cursor``."""
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
    terms = query_terms(q)
    if not terms:
        return [], None  # only punctuation or symbols: nothing can match
    found: list[tuple[int, Resource]] = []
    for tier in TIERS:
        if after is not None and tier > after[0]:
            continue  # a tier before the cursor's
        if tier == 1 and len(terms) == 1:
            continue  # one term is in the name or not: there is no "some"
        start = after[1] if after is not None and tier == after[0] else None
        wanted = limit + 1 - len(found)  # one more than the page: is there a next one?
        found.extend((tier, r) for r in await tier_page(session, principal, terms, tier, filters, start, wanted))
        if len(found) > limit:
            break
    shown, next_cursor = page(found, limit, lambda hit: f"{hit[0]}:{hit[1].code}")
    return [resource for _, resource in shown], next_cursor
