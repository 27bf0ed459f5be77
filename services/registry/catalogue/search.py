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
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class TermStats:
    """How common each term is, from PostgreSQL's statistics of the two term columns (ANALYZE's
    most common elements with their frequencies, and the lowest of those as a ceiling for any
    other term), and about how many entries there are. Read once per search, no row touched."""

    entries: float
    text: dict[str, float]  # search_terms
    text_floor: float
    name: dict[str, float]  # search_name
    name_floor: float

    def most(self, tier: int, terms: list[str]) -> float:
        """At most about how many entries are of ``tier`` for ``terms``: an entry holding every
        term is no more common than its rarest term (bigrams of a word are far from independent,
        so this ceiling is close, where PostgreSQL's product of frequencies is far too low)."""
        in_text = min(self.text.get(t, self.text_floor) for t in terms)
        all_in_name = min(self.name.get(t, self.name_floor) for t in terms)
        some_in_name = sum(self.name.get(t, self.name_floor) for t in terms)
        share = all_in_name if tier == 2 else min(in_text, some_in_name) if tier == 1 else in_text
        return share * self.entries


STATS = text(
    # Per column, the frequency of each of the query's terms among its most common elements (or
    # none), and the lowest frequency listed (most_common_elem_freqs: one per element, then the
    # lowest, the highest and the share of nulls); only the query's terms leave the server.
    "SELECT s.attname, t.term, e.freq,"
    " s.most_common_elem_freqs[cardinality(s.most_common_elem_freqs) - 2] AS floor, c.reltuples"
    " FROM pg_stats s JOIN pg_class c ON c.oid = 'registry.resources'::regclass"
    " CROSS JOIN unnest(CAST(:terms AS text[])) AS t(term)"
    " LEFT JOIN LATERAL (SELECT u.freq FROM unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs)"
    " AS u(elem, freq) WHERE u.elem = t.term) AS e ON true"
    " WHERE s.schemaname = 'registry' AND s.tablename = 'resources'"
    " AND s.attname IN ('search_terms', 'search_name') AND s.most_common_elems IS NOT NULL"
)


async def term_stats(session: AsyncSession, terms: list[str]) -> TermStats | None:
    """The statistics :class:`TermStats` reads for ``terms``; ``None`` before the table was first
    analysed (then every tier is sought as if its matches were many)."""
    columns: dict[str, dict[str, float]] = {"search_terms": {}, "search_name": {}}
    floors: dict[str, float] = {}
    entries = 1.0
    for column, term, freq, floor, reltuples in await session.execute(STATS, {"terms": terms}):
        floors[column] = float(floor)
        if freq is not None:
            columns[column][term] = float(freq)
        entries = max(float(reltuples), 1.0)
    if len(floors) < 2:
        return None
    return TermStats(
        entries, columns["search_terms"], floors["search_terms"], columns["search_name"], floors["search_name"]
    )


async def tier_page(
    session: AsyncSession,
    principal: Principal,
    terms: list[str],
    tier: int,
    filters: dict[str, str | None],
    start: str | None,
    wanted: int,
    stats: TermStats | None = None,
) -> list[Resource]:
    """The first ``wanted`` entries of ``tier`` by code, after ``start``.

    PostgreSQL cannot estimate how many entries hold several bigrams of one word (they are far
    from independent: it guesses a handful when there are thousands), and a GIN scan of a common
    word fetches every match to sort them by code. So, unless a department is asked for (its
    b-tree index is selective), a page is sought by walking the codes in windows (of the entries
    :func:`walk_span` yields in code order): a common word fills the page in the first
    :data:`WINDOW` entries. Otherwise the window's share of
    matches estimates the rest: walking on costs about (entries still wanted) / share rows, the GIN
    index share × (all entries); the cheaper is taken — a larger next window, or the index.

    When the statistics (``stats``) say the tier has no more matches than a window has entries —
    a word only in the 信息项 asked for in the name tiers, a rare word — the index is taken at
    once: it fetches fewer rows than the first window would read."""
    found: list[Resource] = []
    size, after, span = WINDOW, start, walk_span(filters)
    few = stats is not None and stats.most(tier, terms) <= WINDOW
    while filters.get("provider") is None and not few:
        window = select(*Resource.__table__.columns).where(*span).order_by(Resource.code).limit(size)
        if after is not None:
            window = window.where(Resource.code > after)
        scanned = aliased(Resource, window.subquery("window"))
        query: Select[Any] = filtered(select(scanned), filters, scanned)
        query = query.where(tier_clause(tier, terms, scanned), visible_clause(principal, scanned))
        hits = list((await session.scalars(query.order_by(scanned.code).limit(wanted - len(found)))).all())
        found.extend(hits)
        if len(found) == wanted:
            return found
        codes = select(Resource.code).where(*span).order_by(Resource.code).limit(size)
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


def walk_span(filters: dict[str, str | None]) -> tuple[ColumnElement[bool], ...]:
    """The entries the walk reads, of those the filters keep, that an index yields by code: the
    codes of a 分类码 prefix, as a range of the primary key (a code begins with its 分类码,
    ``101010/000001``), and a sharing class with its status (the b-tree on share_type, status,
    code). Every other filter is applied to the entries read."""
    span: list[ColumnElement[bool]] = []
    if category := filters.get("category"):
        after_last = category[:-1] + chr(ord(category[-1]) + 1)  # "101" → "102", "9" → ":"
        span += [Resource.code >= category, Resource.code < after_last]
    if (share_type := filters.get("share_type")) is not None:
        span.append(Resource.share_type == share_type)
        if (status := filters.get("status")) is not None:
            span.append(Resource.status == status)
    return tuple(span)


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
    stats = None if filters.get("provider") else await term_stats(session, terms)  # a department: no walk
    for tier in TIERS:
        if after is not None and tier > after[0]:
            continue  # a tier before the cursor's
        if tier == 1 and len(terms) == 1:
            continue  # one term is in the name or not: there is no "some"
        start = after[1] if after is not None and tier == after[0] else None
        wanted = limit + 1 - len(found)  # one more than the page: is there a next one?
        found.extend((tier, r) for r in await tier_page(session, principal, terms, tier, filters, start, wanted, stats))
        if len(found) > limit:
            break
    shown, next_cursor = page(found, limit, lambda hit: f"{hit[0]}:{hit[1].code}")
    return [resource for _, resource in shown], next_cursor
