"""政务服务事项 and 申请材料 — service items and their materials, kept by the implementing department.

A government-issued material maps to a catalogue resource and the 信息项 of it that cover the
material. Only the implementing department's data administrator writes; for another department a
write is a 404. Real PostgreSQL; each test is rolled back.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.security import Role
from services.registry.models import Material
from services.registry.service_items import service
from services.registry.service_items.schemas import MaterialSpec, ServiceItemCreate
from tests.factories import ResourceCreateFactory, credit_code, person, system
from tests.registry.keeping import Keeper

CODE = "ZDSHBZ-SP"  # 最低生活保障审批


@pytest.fixture
def keeper(session: AsyncSession) -> Keeper:
    return Keeper(session)


def household_card(resource: str, items: list[str] | None = None) -> dict[str, Any]:
    """居民户口簿: issued by 公安, covered by these 信息项 of the 居民户籍信息 resource."""
    return {
        "name": "居民户口簿",
        "source": "government",
        "necessity": "required",
        "resource": resource,
        "items": items or ["姓名", "公民身份号码", "户籍地址"],
    }


APPLICATION_FORM = {"name": "最低生活保障申请书", "source": "applicant", "necessity": "required"}


async def test_a_service_item_is_kept_with_its_materials(keeper: Keeper) -> None:
    police, civil = credit_code("110101"), credit_code("110105")
    resource = await keeper.publish_resource(person(police, Role.DATA_ADMIN), name="居民户籍信息")
    admin = person(civil, Role.DATA_ADMIN)

    item, materials = await keeper.service_item(
        admin, code=CODE, name="最低生活保障审批", materials=[household_card(resource.code), APPLICATION_FORM]
    )
    assert (item.code, item.dept) == (CODE, civil)
    assert [(m.name, m.source, m.necessity, m.resource_code, m.items) for m in materials] == [
        ("居民户口簿", "government", "required", resource.code, ["姓名", "公民身份号码", "户籍地址"]),
        ("最低生活保障申请书", "applicant", "required", None, []),
    ]

    await keeper.rename_item(admin, CODE, "最低生活保障待遇审批")
    extra = await keeper.add_material(admin, CODE, name="收入证明", source="other", necessity="conditional")
    card = materials[0]
    await keeper.replace_material(admin, CODE, card.id, **household_card(resource.code, ["姓名"]))
    await keeper.drop_material(admin, CODE, materials[1].id)

    stored, kept = await service.get_service_item(keeper.session, CODE)
    assert stored.name == "最低生活保障待遇审批"
    assert {(m.id, m.name, tuple(m.items)) for m in kept} == {
        (card.id, "居民户口簿", ("姓名",)),
        (extra.id, "收入证明", ()),
    }
    listed, _ = await service.list_service_items(keeper.session, dept=civil, limit=10, cursor=None)
    assert [(i.code, len(m)) for i, m in listed] == [(CODE, 2)]

    await keeper.drop_item(admin, CODE)
    assert (await keeper.rows())["service_items"] == 0
    assert (await keeper.rows())["materials"] == 0  # its materials go with it


async def test_another_department_never_changes_a_service_item(keeper: Keeper) -> None:
    owner = person(credit_code("110105"), Role.DATA_ADMIN)
    _, [material] = await keeper.service_item(owner, code=CODE, name="最低生活保障审批", materials=[APPLICATION_FORM])
    intruder = person(credit_code("310104"), Role.DATA_ADMIN)

    for call in (
        keeper.rename_item(intruder, CODE, "改名"),
        keeper.drop_item(intruder, CODE),
        keeper.add_material(intruder, CODE, **APPLICATION_FORM),
        keeper.replace_material(intruder, CODE, material.id, **{**APPLICATION_FORM, "name": "改名"}),
        keeper.drop_material(intruder, CODE, material.id),
    ):
        await keeper.refused(404, "not-found", call)
    for not_admin in (person(owner.dept, Role.APPROVER), system(owner.dept)):
        await keeper.refused(403, "forbidden", keeper.rename_item(not_admin, CODE, "改名"))
    stored, [kept] = await service.get_service_item(keeper.session, CODE)
    assert (stored.name, kept.name) == ("最低生活保障审批", "最低生活保障申请书")


async def test_a_material_of_another_item_is_not_found_through_mine(keeper: Keeper) -> None:
    admin = person(credit_code("110105"), Role.DATA_ADMIN)
    _, [material] = await keeper.service_item(admin, code=CODE, name="最低生活保障审批", materials=[APPLICATION_FORM])
    await keeper.service_item(admin, code="TKRY-GYSH", name="特困人员供养审核")

    await keeper.refused(404, "not-found", keeper.drop_material(admin, "TKRY-GYSH", material.id))


async def test_a_material_maps_only_to_items_the_resource_has(keeper: Keeper) -> None:
    police = person(credit_code("110101"), Role.DATA_ADMIN)
    resource = await keeper.publish_resource(police, name="居民户籍信息")
    admin = person(credit_code("110105"), Role.DATA_ADMIN)
    wrong = household_card(resource.code, ["姓名", "婚姻状况"])

    problem = await keeper.refused(
        422, "unknown-items", keeper.service_item(admin, code=CODE, name="最低生活保障审批", materials=[wrong])
    )
    assert problem.extra["unknown"] == ["婚姻状况"]
    await keeper.service_item(admin, code=CODE, name="最低生活保障审批")
    await keeper.refused(422, "unknown-items", keeper.add_material(admin, CODE, **wrong))


async def test_a_material_maps_only_to_a_resource_the_department_can_see(keeper: Keeper) -> None:
    police = person(credit_code("110101"), Role.DATA_ADMIN)
    draft = await keeper.create(police, ResourceCreateFactory.build())
    admin = person(credit_code("110105"), Role.DATA_ADMIN)

    for missing in (draft.code, "101010/999999"):  # another department's draft, and no entry at all
        body = household_card(missing, ["姓名"])
        await keeper.refused(
            404, "not-found", keeper.service_item(admin, code=CODE, name="最低生活保障审批", materials=[body])
        )


async def test_a_code_is_registered_once(keeper: Keeper) -> None:
    admin = person(credit_code("110105"), Role.DATA_ADMIN)
    await keeper.service_item(admin, code=CODE, name="最低生活保障审批")
    other = person(credit_code("310104"), Role.DATA_ADMIN)

    await keeper.refused(409, "service-item-exists", keeper.service_item(other, code=CODE, name="另一个事项"))


@pytest.mark.parametrize(
    "bad",
    [
        {"source": "applicant", "resource": "101010/000001", "items": ["姓名"]},  # only 政府部门核发 maps
        {"source": "government", "resource": "101010/000001"},  # a mapping names its items
        {"source": "government", "items": ["姓名"]},
        {"source": "government", "resource": "101010/000001", "items": []},
        {"source": "government", "resource": "101010/000001", "items": ["姓名", "姓名"]},
        {"source": "mailed"},
        {"necessity": "maybe"},
        {"name": "材" * 201},
        {"name": ""},
    ],
)
async def test_a_bad_material_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MaterialSpec.model_validate({**APPLICATION_FORM, **bad})


@pytest.mark.parametrize(
    "bad", [{"code": "最低生活保障"}, {"code": "x" * 65}, {"name": "事" * 201}, {"materials": [{}]}]
)
async def test_a_bad_service_item_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ServiceItemCreate.model_validate({"code": CODE, "name": "最低生活保障审批", **bad})


async def test_the_database_keeps_a_mapping_to_government_issued_materials(keeper: Keeper) -> None:
    admin = person(credit_code("110105"), Role.DATA_ADMIN)
    _, [material] = await keeper.service_item(admin, code=CODE, name="最低生活保障审批", materials=[APPLICATION_FORM])
    stored = await keeper.session.get(Material, material.id)
    assert stored is not None
    async with keeper.session.begin_nested() as savepoint:
        stored.resource_code = "101010/000001"  # an applicant's own material cannot map to a resource
        with pytest.raises(IntegrityError, match="ck_materials_mapping"):
            await keeper.session.flush()
        await savepoint.rollback()


async def test_every_change_tells_the_exchange_the_whole_item_newest_last(keeper: Keeper) -> None:
    """Each write sends the item as it now stands (ServiceItemChanged) for the exchange's evidence
    bundles; versions rise in the order of the writes, and a withdrawal carries no materials."""
    police, civil = credit_code("110101"), credit_code("110105")
    resource = await keeper.publish_resource(person(police, Role.DATA_ADMIN), name="居民户籍信息")
    admin = person(civil, Role.DATA_ADMIN)
    keeper.changes()  # the resource's own events

    _, materials = await keeper.service_item(
        admin, code=CODE, name="最低生活保障审批", materials=[household_card(resource.code), APPLICATION_FORM]
    )
    await keeper.rename_item(admin, CODE, "最低生活保障待遇审批")
    await keeper.replace_material(admin, CODE, materials[0].id, **household_card(resource.code, ["姓名"]))
    await keeper.drop_material(admin, CODE, materials[1].id)
    await keeper.drop_item(admin, CODE)

    snapshots = [e.service_item_changed for e in keeper.events()]
    assert [(s.code, s.dept, s.withdrawn, len(s.materials)) for s in snapshots] == [
        (CODE, civil, False, 2),
        (CODE, civil, False, 2),
        (CODE, civil, False, 2),
        (CODE, civil, False, 1),
        (CODE, civil, True, 0),
    ]
    versions = [s.version for s in snapshots]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert snapshots[1].name == "最低生活保障待遇审批"
    sent = {m.name: m for m in snapshots[2].materials}
    card, form = sent["居民户口簿"], sent["最低生活保障申请书"]
    assert (card.id, card.source, card.resource_code, list(card.items)) == (
        str(materials[0].id),
        "government",
        resource.code,
        ["姓名"],
    )
    assert (form.source, form.resource_code, list(form.items)) == ("applicant", "", [])  # 申请人自备: not mapped
