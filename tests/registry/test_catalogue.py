"""信息资源目录 — catalogue entries: the classification (信息资源分类) as data, and 信息资源代码
(分类码/顺序码) unique and dense under concurrent creation. Real PostgreSQL; each test is rolled
back, except the concurrency test, which commits and cleans up after itself."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.common.db import create_engine
from services.common.errors import Problem
from services.common.security import Principal, Role
from services.common.uow import UnitOfWork
from services.registry.catalogue import service as catalogue
from services.registry.catalogue.classification import TAXONOMY, check_category
from services.registry.catalogue.schemas import ItemSpec
from services.registry.models import CategorySequence, Resource
from tests.factories import ResourceCreateFactory, credit_code, person
from tests.registry.calls import TOPICS, Catalogue

POPULATION_HOUSEHOLD = "101010"  # 基础/人口/户籍登记: the demo's 居民户籍信息


@pytest.fixture
def registry(session: AsyncSession) -> Catalogue:
    return Catalogue(session)


@pytest.fixture
def admin() -> Principal:
    return person(credit_code(), Role.DATA_ADMIN)


# --------------------------------------------------------------------------- the taxonomy as data


def test_the_taxonomy_has_the_three_classes_and_the_five_basic_sub_classes() -> None:
    names = {c.code: (c.name, c.kind) for c in TAXONOMY.classes}
    assert names == {
        "1": ("基础信息资源", "basic"),
        "2": ("主题信息资源", "theme"),
        "3": ("部门信息资源", "department"),
    }
    basic = next(c for c in TAXONOMY.classes if c.code == "1")
    assert [i.name for i in basic.children] == ["人口", "法人单位", "自然资源和空间地理", "社会信用", "电子证照"]
    theme = next(c for c in TAXONOMY.classes if c.code == "2")
    assert {"公共服务", "健康保障", "社会保障"} <= {i.name for i in theme.children}
    assert "1272号" in TAXONOMY.source


def test_every_target_code_is_class_item_and_target_digits_under_its_parents() -> None:
    for c in TAXONOMY.classes:
        assert len(c.code) == 1 and c.level == "类"
        for item in c.children:
            assert item.code.startswith(c.code) and len(item.code) == 3 and item.level == "项"
            for target in item.children:
                assert target.code.startswith(item.code) and len(target.code) == 6 and target.level == "目"
                assert TAXONOMY.targets[target.code].endswith(target.name)
    assert TAXONOMY.targets[POPULATION_HOUSEHOLD] == "基础信息资源/人口/户籍登记"


@pytest.mark.parametrize("category", [POPULATION_HOUSEHOLD, "1010101", "101010123456", "301010"])
def test_a_known_target_or_a_detail_under_one_is_accepted(category: str) -> None:
    kind = TAXONOMY.kind_of(category)
    assert kind is not None
    check_category(category, kind)  # does not raise


# --------------------------------------------------------------------------- creation


async def test_a_resource_is_created_with_its_class_code_and_the_next_sequence_number(
    registry: Catalogue, admin: Principal
) -> None:
    category = POPULATION_HOUSEHOLD + "9"  # a 细目 of 户籍登记 that no other test uses
    first = await registry.create(admin, ResourceCreateFactory.build(category=category, classification="basic"))
    second = await registry.create(admin, ResourceCreateFactory.build(category=category, classification="basic"))
    assert (first.code, second.code) == (f"{category}/000001", f"{category}/000002")


@pytest.mark.parametrize("category", ["101999", "401010", "106010", "100010"])
async def test_an_unknown_class_is_refused_with_the_valid_ones_and_nothing_written(
    registry: Catalogue, admin: Principal, category: str
) -> None:
    with pytest.raises(Problem) as refused:
        await registry.create(admin, ResourceCreateFactory.build(category=category, classification="basic"))
    assert (refused.value.status, refused.value.code) == (422, "unknown-category")
    valid = refused.value.body()["valid_categories"]
    assert {"code": POPULATION_HOUSEHOLD, "name": "基础信息资源/人口/户籍登记"} in valid
    assert len(valid) == len(TAXONOMY.targets)
    assert POPULATION_HOUSEHOLD in refused.value.detail
    assert await registry.count(category) == (0, 0)


async def test_a_classification_that_contradicts_the_class_digit_is_refused(
    registry: Catalogue, admin: Principal
) -> None:
    with pytest.raises(Problem) as refused:
        await registry.create(admin, ResourceCreateFactory.build(category=POPULATION_HOUSEHOLD, classification="theme"))
    assert (refused.value.status, refused.value.code) == (422, "category-mismatch")
    assert await registry.count(POPULATION_HOUSEHOLD) == (0, 0)


# --------------------------------------------------------------------------- codes under concurrency

PARALLEL = 32


async def test_codes_are_unique_and_dense_under_concurrent_creation(tier_engine: AsyncEngine) -> None:
    """Many data administrators create entries of one 分类码 at the same moment, each in its own
    transaction on its own connection: every 顺序码 is used once, none is skipped."""
    category = POPULATION_HOUSEHOLD + f"{secrets.randbelow(10**6):06d}"  # a fresh 细目: no earlier codes
    engine = create_engine(tier_engine.url.render_as_string(hide_password=False), pool_size=16)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    admins = [person(credit_code(), Role.DATA_ADMIN) for _ in range(4)]
    start = asyncio.Event()

    async def create_one(n: int) -> str:
        await start.wait()
        async with sessions() as session, session.begin():
            resource = await catalogue.create_resource(
                UnitOfWork(session),
                admins[n % len(admins)],
                ResourceCreateFactory.build(category=category, classification="basic"),
                TOPICS,
            )
            await asyncio.sleep(0.005)  # hold the counter's row lock a moment: the others queue behind it
            return resource.code

    try:
        tasks = [asyncio.create_task(create_one(n)) for n in range(PARALLEL)]
        start.set()
        codes = await asyncio.gather(*tasks)
        assert len(set(codes)) == PARALLEL
        assert sorted(codes) == [f"{category}/{n:06d}" for n in range(1, PARALLEL + 1)]
        async with sessions() as session:
            stored = (await session.scalars(select(Resource.code).where(Resource.category == category))).all()
            assert sorted(stored) == sorted(codes)
    finally:
        async with sessions() as session, session.begin():
            await session.execute(delete(Resource).where(Resource.category == category))
            await session.execute(delete(CategorySequence).where(CategorySequence.category == category))
        await engine.dispose()


# --------------------------------------------------------------------------- information items (信息项)


@pytest.mark.parametrize(
    ("data_type", "length"),
    [("D", 8), ("T", 14), ("L", 1), ("C", 1), ("C", 4000), ("M", 65_535), ("N", 38), ("I", 19), ("B", 17), ("Y", 19)],
)
def test_a_length_valid_for_its_data_type_is_accepted(data_type: str, length: int) -> None:
    assert ItemSpec.model_validate({"name": "项", "data_type": data_type, "length": length}).length == length


@pytest.mark.parametrize(
    ("data_type", "length"),
    [("D", 10), ("T", 8), ("L", 2), ("C", 4001), ("M", 65_536), ("N", 39), ("I", 20), ("B", 18), ("F", 18), ("Y", 20)],
)
def test_a_length_out_of_range_for_its_data_type_is_refused(data_type: str, length: int) -> None:
    with pytest.raises(ValidationError) as refused:
        ItemSpec.model_validate({"name": "出生日期", "data_type": data_type, "length": length})
    assert f"数据类型 {data_type}" in str(refused.value) and "出生日期" in str(refused.value)


def test_an_unknown_data_type_is_refused() -> None:
    with pytest.raises(ValidationError):
        ItemSpec.model_validate({"name": "姓名", "data_type": "X", "length": 10})


async def test_related_codes_must_name_existing_entries(registry: Catalogue, admin: Principal) -> None:
    reviewer = person(credit_code(), Role.PLATFORM_ADMIN)
    other = await registry.published(person(credit_code(), Role.DATA_ADMIN), reviewer, ResourceCreateFactory.build())
    own_draft = await registry.create(admin, ResourceCreateFactory.build())
    related = await registry.create(admin, ResourceCreateFactory.build(related_codes=[other.code, own_draft.code]))
    assert related.related_codes == [other.code, own_draft.code]


async def test_a_missing_related_code_is_refused_naming_it_and_nothing_written(
    registry: Catalogue, admin: Principal
) -> None:
    existing = await registry.create(admin, ResourceCreateFactory.build())
    someone_elses_draft = await registry.create(person(credit_code(), Role.DATA_ADMIN), ResourceCreateFactory.build())
    category = POPULATION_HOUSEHOLD + "8"  # a 细目 no other test uses
    asked = [existing.code, "101010/999999", someone_elses_draft.code]
    with pytest.raises(Problem) as refused:
        await registry.create(
            admin, ResourceCreateFactory.build(category=category, classification="basic", related_codes=asked)
        )
    assert (refused.value.status, refused.value.code) == (422, "unknown-related")
    assert refused.value.body()["missing"] == ["101010/999999", someone_elses_draft.code]  # a draft not yours: absent
    assert "101010/999999" in refused.value.detail
    assert await registry.count(category) == (0, 0)


async def test_an_edit_with_a_missing_related_code_is_refused_and_writes_nothing(
    registry: Catalogue, admin: Principal
) -> None:
    draft = await registry.create(admin, ResourceCreateFactory.build())
    before = await registry.state(draft.code)
    with pytest.raises(Problem) as refused:
        await registry.patch(admin, draft.code, related_codes=["209010/000404"])
    assert refused.value.body()["missing"] == ["209010/000404"]
    assert await registry.state(draft.code) == before
