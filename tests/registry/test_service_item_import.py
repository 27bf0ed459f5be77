"""事项导入 — service items and their materials from a sheet, one material a row, all or nothing,
with the service-items API's rules (codes taken, a mapping only for government-issued materials,
only 信息项 the mapped resource has) and a row-by-row report. Real PostgreSQL; each test is rolled
back."""

from __future__ import annotations

import io
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import Problem
from services.common.security import Principal, Role
from services.registry.models import Resource
from services.registry.service_items import service
from services.registry.transfer import files
from services.registry.transfer import service_items as sheet
from tests.factories import credit_code, person
from tests.registry.calls import TOPICS
from tests.registry.keeping import Keeper

LABELS = list(sheet.LABELS)
ITEMS = [
    {"name": "姓名", "data_type": "C", "length": 50},
    {"name": "公民身份号码", "data_type": "C", "length": 18},
    {"name": "户籍地址", "data_type": "C", "length": 200},
]


@pytest.fixture
def keeper(session: AsyncSession) -> Keeper:
    return Keeper(session)


@pytest.fixture
def admin() -> Principal:
    return person(credit_code(), Role.DATA_ADMIN)


@pytest.fixture
async def household(keeper: Keeper) -> Resource:
    """居民户籍信息, published by 公安."""
    return await keeper.publish_resource(person(credit_code(), Role.DATA_ADMIN), name="居民户籍信息", items=ITEMS)


def material(name: str, source: str = "申请人自备", **cells: str) -> dict[str, str]:
    return {"材料名称": name, "来源渠道": source, **cells}


async def run(keeper: Keeper, admin: Principal, items: list[tuple[str, str, list[dict[str, str]]]]) -> list[str]:
    header, rows = files.read_upload(files.write_xlsx(LABELS, sheet.rows_of(items)), files.XLSX_MEDIA_TYPE)
    async with keeper.unit() as uow:
        return await sheet.import_service_items(uow, admin, header, rows, TOPICS)


async def refused(keeper: Keeper, admin: Principal, items: list[tuple[str, str, list[dict[str, str]]]]) -> Problem:
    before = await keeper.rows()
    with pytest.raises(Problem) as caught:
        await run(keeper, admin, items)
    assert await keeper.rows() == before  # nothing written
    return caught.value


def test_the_template_has_dropdowns_for_source_and_necessity_and_instructions_in_chinese() -> None:
    workbook = load_workbook(io.BytesIO(sheet.template()))
    assert workbook.sheetnames == [sheet.SHEET, files.INSTRUCTIONS, files.LISTS]
    data = workbook[sheet.SHEET]
    assert [c.value for c in data[1]] == LABELS
    validations = {str(v.sqref).split(":")[0]: v for v in data.data_validations.dataValidation}
    assert set(validations) == {"D2", "E2"}  # 来源渠道, 必要性
    lists = workbook[files.LISTS]
    assert [lists.cell(row=n, column=4).value for n in range(2, 6)] == list(sheet.SOURCES)
    assert [lists.cell(row=n, column=5).value for n in range(2, 5)] == list(sheet.NECESSITIES)
    guide = "\n".join(str(c.value) for r in workbook[files.INSTRUCTIONS].iter_rows() for c in r if c.value)
    assert "填写说明" in guide and "全部或全不" in guide and "政府部门核发" in guide
    assert all(label in guide for label in LABELS)


async def test_service_items_import_with_their_materials_and_mappings(
    keeper: Keeper, admin: Principal, household: Resource
) -> None:
    codes = await run(
        keeper,
        admin,
        [
            (
                "ZDSHBZ-SP",
                "最低生活保障审批",
                [
                    material("居民户口簿", "政府部门核发", 关联资源代码=household.code, 信息项="姓名;公民身份号码"),
                    material("最低生活保障申请书", 必要性="必要"),
                    material("收入证明", "其他", 必要性="情形必要"),
                ],
            ),
            ("TKRYGY-SP", "特困人员供养审批", []),
        ],
    )
    assert codes == ["ZDSHBZ-SP", "TKRYGY-SP"]
    item, materials = await service.get_service_item(keeper.session, "ZDSHBZ-SP")
    assert (item.name, item.dept, item.author) == ("最低生活保障审批", admin.dept, admin.sub)
    assert sorted((m.name, m.source, m.necessity, m.resource_code, tuple(m.items)) for m in materials) == [
        ("居民户口簿", "government", "required", household.code, ("姓名", "公民身份号码")),
        ("收入证明", "other", "conditional", None, ()),
        ("最低生活保障申请书", "applicant", "required", None, ()),
    ]
    _, none = await service.get_service_item(keeper.session, "TKRYGY-SP")
    assert none == []


async def test_every_bad_row_is_reported_with_its_column_and_nothing_is_written(
    keeper: Keeper, admin: Principal, household: Resource
) -> None:
    await keeper.service_item(admin, code="TAKEN-001", name="已登记的事项", materials=[])
    problem = await refused(
        keeper,
        admin,
        [
            ("TAKEN-001", "已登记的事项", []),  # row 2
            ("NEW-0001", "新事项", [material("户口簿", "街道发放")]),  # row 3: not a 来源渠道
            ("NEW-0002", "新事项二", [material("申请书", 关联资源代码=household.code, 信息项="姓名")]),  # row 4
            ("NEW-0003", "新事项三", [material("户口簿", "政府部门核发", 关联资源代码=household.code, 信息项="血型")]),
            ("NEW-0004", "新事项四", [material("户口簿", "政府部门核发", 关联资源代码="999999/000001", 信息项="姓名")]),
            ("NEW-0005", "新事项五", [material("户口簿", "政府部门核发", 关联资源代码=household.code)]),  # row 7
            ("x", "编码太短", []),  # row 8
        ],
    )
    assert (problem.status, problem.code) == (422, "import-invalid")
    found = [(e["row"], e["column"], e["reason"]) for e in problem.extra["errors"]]
    assert found == [
        (2, "事项编码", "事项编码 TAKEN-001 已登记"),
        (3, "来源渠道", "“街道发放” 不是可选值：政府部门核发、申请人自备、中介服务机构出具、其他"),
        (4, "关联资源代码", "只有政府部门核发的材料可以关联信息资源"),
        (5, "信息项", f"信息资源 {household.code} 没有信息项：血型"),
        (6, "关联资源代码", "信息资源 999999/000001 不存在或不可见"),
        (7, "关联资源代码", "关联资源代码与信息项须同时填写"),
        (8, "事项编码", "格式不正确"),
    ]
    assert problem.extra["error_count"] == 7
    assert all(e["reason_en"] for e in problem.extra["errors"])


async def test_rows_of_one_service_item_must_agree_on_its_name(keeper: Keeper, admin: Principal) -> None:
    rows: list[Any] = [
        ["SAME-0001", "婚姻登记", "户口簿", "申请人自备", "", "", ""],
        ["SAME-0001", "结婚登记", "身份证", "申请人自备", "", "", ""],
        ["", "没有编码", "", "", "", "", ""],
    ]
    header, read = files.read_upload(files.write_xlsx(LABELS, rows), files.XLSX_MEDIA_TYPE)
    with pytest.raises(Problem) as caught:
        async with keeper.unit() as uow:
            await sheet.import_service_items(uow, admin, header, read, TOPICS)
    assert [(e["row"], e["column"]) for e in caught.value.extra["errors"]] == [(3, "事项名称"), (4, "事项编码")]


async def test_a_wrong_header_or_an_empty_file_is_reported(keeper: Keeper, admin: Principal) -> None:
    header, rows = files.read_upload(files.write_xlsx(["事项编码", "名称"], [["A-0001", "x"]]), files.XLSX_MEDIA_TYPE)
    with pytest.raises(Problem) as wrong:
        async with keeper.unit() as uow:
            await sheet.import_service_items(uow, admin, header, rows, TOPICS)
    assert {(e["row"], e["column"]) for e in wrong.value.extra["errors"]} == {(1, "名称"), (1, "事项名称")}
    empty = await refused(keeper, admin, [])
    assert empty.extra["errors"][0]["reason"] == "文件中没有数据行"


async def test_only_a_data_administrator_imports_service_items(keeper: Keeper) -> None:
    problem = await refused(keeper, person(credit_code(), Role.APPROVER), [("ABCD-0001", "事项", [])])
    assert (problem.status, problem.code) == (403, "forbidden")
