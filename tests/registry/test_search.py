"""全文检索 — Chinese full-text search of the catalogue by character unigrams and bigrams (no
extension), with filters, ranking and keyset pages. Real PostgreSQL; each test is rolled back.

Each test's entries belong to a department of its own, and most searches filter by it, so entries
other tests leave (none are committed, but the concurrency test's may be visible while it runs)
never count."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import Problem
from services.common.security import Principal, Role
from services.registry.catalogue import search
from services.registry.catalogue import service as catalogue
from services.registry.catalogue.schemas import ItemSpec, ResourceCreate
from services.registry.catalogue.terms import query_terms, terms
from services.registry.models import Resource
from tests.factories import ResourceCreateFactory, conditional_share, credit_code, person
from tests.registry.calls import Catalogue

HOUSEHOLD = "101010"  # 基础/人口/户籍登记


@pytest.fixture
def registry(session: AsyncSession) -> Catalogue:
    return Catalogue(session)


@pytest.fixture
def admin() -> Principal:
    return person(credit_code(), Role.DATA_ADMIN)


@pytest.fixture
def reviewer() -> Principal:
    return person(credit_code(), Role.PLATFORM_ADMIN)


def entry(name: str, summary: str = "目录条目。", items: tuple[str, ...] = ("姓名",), **more: object) -> ResourceCreate:
    return ResourceCreateFactory.build(
        name=name,
        summary=summary,
        items=[ItemSpec(name=n, data_type="C", length=50) for n in items],
        category=more.pop("category", HOUSEHOLD),
        classification=more.pop("classification", "basic"),
        **more,
    )


async def found(
    session: AsyncSession, who: Principal, q: str, limit: int = 100, cursor: str | None = None, **filters: str
) -> tuple[list[str], str | None]:
    rows, next_cursor = await search.search_resources(session, who, q, {"provider": who.dept, **filters}, limit, cursor)
    return [r.name for r in rows], next_cursor


def test_terms_are_characters_and_adjacent_pairs_of_each_word() -> None:
    assert terms("居民户籍（2024年）") == sorted(
        {"居", "民", "户", "籍", "居民", "民户", "户籍", "2", "0", "4", "年", "20", "02", "24", "4年"}
    )
    assert terms("ＧＩＳ图层") == sorted({"g", "i", "s", "图", "层", "gi", "is", "s图", "图层"})  # NFKC, lower case
    assert query_terms("户籍 信息") == ["信息", "户籍"]  # no pair across the space
    assert query_terms("亡") == ["亡"]
    assert query_terms("「」，。！ \x00") == []


async def test_words_are_found_in_the_name_the_summary_and_the_item_names(
    registry: Catalogue, admin: Principal, session: AsyncSession
) -> None:
    await registry.create(admin, entry("居民户籍登记信息"))
    await registry.create(admin, entry("婚姻登记信息", summary="民政部门的婚姻登记记录，含户籍所在地。"))
    await registry.create(admin, entry("不动产登记信息", items=("权利人", "户籍地址")))
    await registry.create(admin, entry("残疾人证信息"))
    assert sorted((await found(session, admin, "户籍"))[0]) == ["不动产登记信息", "婚姻登记信息", "居民户籍登记信息"]
    assert (await found(session, admin, "残疾人"))[0] == ["残疾人证信息"]
    # every bigram of the query must be there: 户籍信息 needs 籍信, which no entry has
    assert (await found(session, admin, "户籍信息"))[0] == []
    assert (await found(session, admin, "登记"))[0] != []


async def test_the_name_ranks_first_then_a_partial_name_then_the_rest(
    registry: Catalogue, admin: Principal, session: AsyncSession
) -> None:
    await registry.create(admin, entry("婚姻信息", summary="社会保险参保人的婚姻状况。"))  # only the summary
    await registry.create(admin, entry("参保记录", summary="社会保险参保记录。"))  # 参保 in the name
    await registry.create(admin, entry("社会保险参保信息"))  # all of it in the name
    names, _ = await found(session, admin, "社会保险参保")
    assert names == ["社会保险参保信息", "参保记录", "婚姻信息"]


async def test_one_character_letters_digits_and_full_width_forms(
    registry: Catalogue, admin: Principal, session: AsyncSession
) -> None:
    await registry.create(admin, entry("死亡登记信息"))
    await registry.create(admin, entry("GIS图层2024版", summary="ＧＩＳ 矢量数据。"))
    assert (await found(session, admin, "亡"))[0] == ["死亡登记信息"]
    assert (await found(session, admin, "gis"))[0] == ["GIS图层2024版"]
    assert (await found(session, admin, "２０２４"))[0] == ["GIS图层2024版"]
    assert (await found(session, admin, "「死亡」，登记！"))[0] == ["死亡登记信息"]
    assert await found(session, admin, "，。！？ ") == ([], None)  # nothing to search for


async def test_filters_narrow_the_matches(
    registry: Catalogue, admin: Principal, reviewer: Principal, session: AsyncSession
) -> None:
    await registry.create(admin, entry("户籍人口信息"))  # a draft, unconditional
    await registry.published(admin, reviewer, entry("户籍迁移信息", share=conditional_share()))
    await registry.create(admin, entry("户籍档案信息", category="301010", classification="department"))
    assert sorted((await found(session, admin, "户籍", share_type="conditional"))[0]) == ["户籍迁移信息"]
    assert (await found(session, admin, "户籍", status="published"))[0] == ["户籍迁移信息"]
    assert (await found(session, admin, "户籍", classification="department"))[0] == ["户籍档案信息"]
    assert (await found(session, admin, "户籍", category="3"))[0] == ["户籍档案信息"]
    assert len((await found(session, admin, "户籍", category=HOUSEHOLD))[0]) == 2
    other = person(credit_code(), Role.DATA_ADMIN)
    assert (await found(session, other, "户籍", provider=admin.dept))[0] == ["户籍迁移信息"]  # others see published


async def test_pages_follow_the_ranking_and_show_each_match_once(
    registry: Catalogue, admin: Principal, session: AsyncSession
) -> None:
    for name in ("户籍登记信息", "户口簿信息", "户籍迁入信息", "死亡户籍注销", "户籍变更信息"):
        await registry.create(admin, entry(name, summary="户籍相关。"))
    everything, last = await found(session, admin, "户籍")
    assert last is None and len(everything) == 5
    seen: list[str] = []
    cursor: str | None = None
    while True:
        names, cursor = await found(session, admin, "户籍", limit=2, cursor=cursor)
        seen.extend(names)
        if cursor is None:
            break
    assert seen == everything
    assert everything[-1] == "户口簿信息"  # 户籍 only in its summary: last


async def test_the_terms_follow_an_edit(registry: Catalogue, admin: Principal, session: AsyncSession) -> None:
    draft = await registry.create(admin, entry("居民户籍信息"))
    await registry.patch(admin, draft.code, name="出生医学证明信息")
    assert (await found(session, admin, "出生医学"))[0] == ["出生医学证明信息"]
    assert (await found(session, admin, "居民"))[0] == []


@pytest.mark.parametrize("cursor", ["x", "3:101010/000001", "2:101010/1", "2:101010/000001;drop", "2 101010/000001"])
async def test_a_tampered_search_cursor_is_refused(session: AsyncSession, admin: Principal, cursor: str) -> None:
    with pytest.raises(Problem) as refused:
        await search.search_resources(session, admin, "户籍", {}, 10, cursor)
    assert (refused.value.status, refused.value.code) == (422, "invalid-cursor")


@pytest.mark.parametrize("cursor", ["x", "101010/000001'--", "2:101010/000001", "../../etc"])
async def test_a_tampered_list_cursor_is_refused(session: AsyncSession, admin: Principal, cursor: str) -> None:
    with pytest.raises(Problem) as refused:
        await catalogue.list_resources(session, admin, {}, 10, cursor)
    assert (refused.value.status, refused.value.code) == (422, "invalid-cursor")


async def test_a_search_writes_nothing(registry: Catalogue, admin: Principal, session: AsyncSession) -> None:
    await registry.create(admin, entry("居民户籍信息"))
    before = await session.scalar(select(func.count()).select_from(Resource))
    with pytest.raises(Problem):
        await search.search_resources(session, admin, "户籍", {}, 10, "garbage")
    assert await session.scalar(select(func.count()).select_from(Resource)) == before


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=st.text(max_size=100), cursor=st.one_of(st.none(), st.text(max_size=64)))
async def test_any_query_and_cursor_give_a_page_or_a_422(session: AsyncSession, q: str, cursor: str | None) -> None:
    """Whatever a client sends as ``q`` (within the route's 100 characters) and ``cursor``: a page,
    or 422 ``invalid-cursor``, never a database error."""
    who = person(credit_code(), Role.DATA_ADMIN)
    if cursor and search.CURSOR.fullmatch(cursor) is None:
        with pytest.raises(Problem) as refused:
            await search.search_resources(session, who, q, {}, 5, cursor)
        assert (refused.value.status, refused.value.code) == (422, "invalid-cursor")
    else:
        rows, _ = await search.search_resources(session, who, q, {}, 5, cursor or None)
        assert len(rows) <= 5


def test_a_tier_is_no_more_common_than_its_rarest_term() -> None:
    stats = search.TermStats(
        entries=100_000, text={"户籍": 0.2, "籍信": 0.3}, text_floor=0.01, name={"户籍": 0.05}, name_floor=0.002
    )
    assert stats.most(2, ["户籍", "籍信"]) == pytest.approx(200)  # 籍信 in no name listed: the floor
    assert stats.most(1, ["户籍", "籍信"]) == pytest.approx(5200)  # some in the name: at most the sum
    assert stats.most(0, ["户籍", "籍信"]) == pytest.approx(20_000)
    assert stats.most(0, ["法定"]) == pytest.approx(1000)


async def test_the_statistics_are_read_for_the_query_terms_only(
    registry: Catalogue, admin: Principal, session: AsyncSession
) -> None:
    for name in ("户籍登记信息", "户籍迁移记录", "婚姻登记信息"):
        await registry.create(admin, entry(name))
    await session.execute(text("ANALYZE registry.resources"))  # rolled back with the test

    stats = await search.term_stats(session, ["户籍", "无此"])

    assert stats is not None and stats.entries >= 3
    assert stats.text.get("户籍", 0.0) > 0 and stats.name.get("户籍", 0.0) > 0
    assert "无此" not in stats.text and "婚姻" not in stats.text  # only the query's terms are read
    assert 0 < stats.text_floor <= stats.text["户籍"]


@pytest.mark.parametrize("window", [1, 2, 3, 1500])
@pytest.mark.parametrize("many", [1.0, 1e9], ids=["index-cheaper", "walk-cheaper"])
@pytest.mark.parametrize("rare", [False, True], ids=["no-statistics", "statistics-say-few"])
async def test_the_window_walk_and_the_index_give_the_same_pages(
    registry: Catalogue,
    admin: Principal,
    session: AsyncSession,
    monkeypatch: pytest.MonkeyPatch,
    window: int,
    many: float,
    rare: bool,
) -> None:
    """Without a department filter a page is sought by walking the codes in windows (of a category,
    and of a sharing class and status by their b-tree), then through the index — or through the
    index at once when the statistics say a tier's matches are few; with one, through the index
    only: the pages must be the same, with or without the other filters."""
    monkeypatch.setattr(search, "WINDOW", window)

    async def entries(_: AsyncSession) -> float:
        return many  # as if the catalogue were that large: the index, or walking on, is cheaper

    async def term_stats(_: AsyncSession, terms: list[str]) -> search.TermStats | None:
        return search.TermStats(1.0, {}, 0.0, {}, 0.0) if rare else None  # every term: in no entry

    monkeypatch.setattr(search, "entries", entries)
    monkeypatch.setattr(search, "term_stats", term_stats)
    category = HOUSEHOLD + f"{secrets.randbelow(10**6):06d}"  # this test's entries only, in code order
    names = ["户籍登记信息", "婚姻信息", "户口信息", "死亡登记", "户籍迁移", "出生证明", "户籍注销", "残疾人证", "户别"]
    conditional = {"户籍迁移", "户别", "婚姻信息"}
    for name in names:
        summary = "户籍相关。" if "户" in name else "其他。"
        share = {"share": conditional_share()} if name in conditional else {}
        await registry.create(admin, entry(name, summary=summary, category=category, **share))

    async def pages(filters: dict[str, str]) -> list[str]:
        seen: list[str] = []
        cursor: str | None = None
        while True:
            rows, cursor = await search.search_resources(session, admin, "户籍", filters, 2, cursor)
            seen.extend(r.name for r in rows)
            if cursor is None:
                return seen

    for mix, expected in (
        ({}, ["户籍登记信息", "户籍迁移", "户籍注销", "户口信息", "户别"]),
        ({"share_type": "unconditional"}, ["户籍登记信息", "户籍注销", "户口信息"]),
        ({"share_type": "conditional", "status": "draft"}, ["户籍迁移", "户别"]),
        ({"share_type": "conditional", "status": "published"}, []),  # all of them are drafts
    ):
        walked = await pages({"category": category, **mix})
        indexed = await pages({"category": category, "provider": admin.dept, **mix})
        assert walked == indexed == expected, mix


async def test_the_sharing_class_column_follows_the_share_of_every_write(
    registry: Catalogue, admin: Principal, session: AsyncSession
) -> None:
    """``share_type`` is computed by PostgreSQL from ``share``: an edit of the sharing class moves
    the entry from one filter to the other, and the two never disagree."""
    draft = await registry.create(admin, entry("户籍迁移信息", share=conditional_share()))
    assert (await found(session, admin, "户籍", share_type="conditional"))[0] == ["户籍迁移信息"]

    await registry.patch(admin, draft.code, share={"type": "unconditional"})

    assert (await found(session, admin, "户籍", share_type="conditional"))[0] == []
    assert (await found(session, admin, "户籍", share_type="unconditional"))[0] == ["户籍迁移信息"]
    stored = (
        await session.execute(select(Resource.share_type, Resource.share).where(Resource.code == draft.code))
    ).one()
    assert stored.share_type == stored.share["type"] == "unconditional"
