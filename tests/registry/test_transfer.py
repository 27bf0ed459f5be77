"""批量导入导出 — the .xlsx template, importing .xlsx and .csv all or nothing with a row-by-row
report, refusing malformed, oversized and zip-bomb files, and exporting CSV and DCAT-AP JSON-LD.
Real PostgreSQL; each test is rolled back. Each test's rows use a 细目 of its own, so counting the
entries and 顺序码 of that 分类码 shows whether anything was written."""

from __future__ import annotations

import csv
import io
import secrets
import zipfile
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import Problem
from services.common.security import Principal, Role
from services.registry.catalogue import service as catalogue
from services.registry.models import Resource, ResourceStatus
from services.registry.transfer import exports, files, imports
from services.registry.transfer.columns import COLUMNS
from tests.factories import ResourceCreateFactory, credit_code, person
from tests.registry.calls import TOPICS, Catalogue

LABELS = [c.label for c in COLUMNS]
XLSX = files.XLSX_MEDIA_TYPE


@pytest.fixture
def registry(session: AsyncSession) -> Catalogue:
    return Catalogue(session)


@pytest.fixture
def admin() -> Principal:
    return person(credit_code(), Role.DATA_ADMIN)


@pytest.fixture
def category() -> str:
    """A 细目 of 户籍登记 no other test uses."""
    return "101010" + f"{secrets.randbelow(10**6):06d}"


def row(category: str, **cells: str) -> list[str]:
    """A valid row of the template (Chinese labels as a data administrator picks them)."""
    values = {
        "信息资源名称": "居民户籍信息",
        "信息资源摘要": "公安机关登记的常住人口户籍信息。",
        "分类码": category,
        "资源分类": "基础",
        "资源格式": "数据库",
        "信息项": "姓名:C:50:敏感:name\n公民身份号码:C:18:敏感:id_card\n出生日期:D:8",
        "共享类型": "有条件共享",
        "共享条件": "仅用于社会救助审核",
        "共享方式": "接口",
        "是否向社会开放": "否",
        "更新周期": "每日",
        "信息主体类型": "自然人",
        **cells,
    }
    return [values.get(label, "") for label in LABELS]


async def run_import(registry: Catalogue, admin: Principal, content: bytes, media_type: str = XLSX) -> list[Resource]:
    """What the route does: read the file, then import in one unit of work (rolled back on error)."""
    header, rows = files.read_upload(content, media_type)
    async with registry.unit() as uow:
        return await imports.import_resources(uow, admin, header, rows, TOPICS)


async def refused(registry: Catalogue, admin: Principal, content: bytes, media_type: str = XLSX) -> Problem:
    with pytest.raises(Problem) as caught:
        await run_import(registry, admin, content, media_type)
    return caught.value


async def nothing_written(registry: Catalogue, admin: Principal, category: str) -> None:
    assert await registry.count(category) == (0, 0)
    mine = await registry.session.scalars(select(Resource.code).where(Resource.provider_dept == admin.dept))
    assert mine.all() == []


# --------------------------------------------------------------------------- the template


def test_the_template_has_a_dropdown_for_every_enumerated_column_and_instructions_in_chinese() -> None:
    workbook = load_workbook(io.BytesIO(files.template()))
    assert workbook.sheetnames == [files.SHEET, files.INSTRUCTIONS, files.LISTS]
    sheet = workbook[files.SHEET]
    assert [c.value for c in sheet[1]] == LABELS
    validations = {str(v.sqref).split(":")[0]: v for v in sheet.data_validations.dataValidation}
    enumerated = [(i, c) for i, c in enumerate(COLUMNS, start=1) if c.choices is not None]
    assert {c.label for _, c in enumerated} >= {"分类码", "资源分类", "资源格式", "共享类型", "共享方式", "更新周期"}
    assert len(validations) == len(enumerated)
    lists = workbook[files.LISTS]
    assert lists.sheet_state == "hidden"
    for index, column in enumerated:
        letter = sheet.cell(row=1, column=index).column_letter
        validation = validations[f"{letter}2"]
        assert validation.type == "list"
        assert validation.formula1 == f"={files.LISTS}!${letter}$2:${letter}${len(column.choices or {}) + 1}"
        offered = [lists.cell(row=n, column=index).value for n in range(2, len(column.choices or {}) + 2)]
        assert offered == list(column.choices or {})
    assert validations["G2"].errorStyle == "stop"  # 共享类型: only the list
    assert validations["C2"].errorStyle == "warning"  # 分类码: a 细目 under a listed 目 is allowed
    guide = "\n".join(str(c.value) for r in workbook[files.INSTRUCTIONS].iter_rows() for c in r if c.value)
    assert "填写说明" in guide and "全部或全不" in guide and "不予共享" in guide
    assert all(label in guide for label in LABELS)


async def test_the_template_filled_in_imports_as_drafts_of_the_callers_department(
    registry: Catalogue, admin: Principal, category: str
) -> None:
    workbook = load_workbook(io.BytesIO(files.template()))
    sheet = workbook[files.SHEET]
    sheet.append(row(category))
    sheet.append(row(category, 信息资源名称="户籍迁移信息", 共享类型="无条件共享", 共享条件="", 分类码=int(category)))  # type: ignore[arg-type]
    out = io.BytesIO()
    workbook.save(out)
    created = await run_import(registry, admin, out.getvalue())
    assert [r.code for r in created] == [f"{category}/000001", f"{category}/000002"]
    first = await catalogue.get_resource(registry.session, admin, created[0].code)
    assert (first.status, first.provider_dept, first.name) == (ResourceStatus.DRAFT, admin.dept, "居民户籍信息")
    assert first.classification == "basic" and first.format == "数据库" and first.update_cycle == "每日"
    assert first.share == {"type": "conditional", "condition": "仅用于社会救助审核", "basis": None, "mode": "接口"}
    assert first.items[1] == {
        "name": "公民身份号码",
        "data_type": "C",
        "length": 18,
        "sensitive": True,
        "masking": "id_card",
    }
    assert first.subject_types == ["id_card"]
    assert created[1].share["type"] == "unconditional"  # the 分类码 typed as a number still reads


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8", "gb18030"])
async def test_a_csv_imports_in_utf8_or_gb18030(
    registry: Catalogue, admin: Principal, category: str, encoding: str
) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(LABELS)
    writer.writerow(row(category, 资源分类="basic", 共享类型="unconditional", 共享条件=""))
    created = await run_import(registry, admin, out.getvalue().encode(encoding), "text/csv")
    assert [(r.name, r.classification, r.share["type"]) for r in created] == [
        ("居民户籍信息", "basic", "unconditional")
    ]


# --------------------------------------------------------------------------- bad rows: all or nothing


async def test_bad_rows_are_all_reported_with_row_column_and_reason_and_nothing_is_imported(
    registry: Catalogue, admin: Principal, category: str
) -> None:
    content = files.write_xlsx(
        LABELS,
        [
            row(category),  # row 2: valid, and not imported either
            row(category, 信息资源名称="", 共享类型="有条件共享", 共享条件=""),  # row 3: two errors
            [""] * len(LABELS),  # row 4: blank, skipped
            row(category, 信息项="出生日期:D:9\n姓名"),  # row 5: a bad item
            row(category, 共享类型="偶尔共享", 更新周期="每小时"),  # row 6: not in the lists
            row(category, 信息项="姓名:C:50:机密"),  # row 7: an unknown flag
            row(category, 共享类型="不予共享", 共享条件=""),  # row 8: no legal basis
        ],
    )
    problem = await refused(registry, admin, content)
    assert (problem.status, problem.code) == (422, "import-invalid")
    found = {(e["row"], e["column"]) for e in problem.extra["errors"]}
    assert found == {
        (3, "信息资源名称"),
        (3, "共享条件"),
        (5, "信息项"),
        (6, "共享类型"),
        (6, "更新周期"),
        (7, "信息项"),
        (8, "不予共享依据"),
    }
    assert problem.extra["error_count"] == len(problem.extra["errors"])
    for e in problem.extra["errors"]:
        assert e["reason"] and e["reason_en"], e
        assert any("\u4e00" <= ch <= "\u9fff" for ch in e["reason"]), e  # Chinese first
    by_place = {(e["row"], e["column"]): e for e in problem.extra["errors"]}
    assert by_place[(3, "信息资源名称")]["reason"] == "必填"
    assert "有条件共享" in by_place[(3, "共享条件")]["reason"]
    assert "每小时" in by_place[(6, "更新周期")]["reason"]
    await nothing_written(registry, admin, category)


async def test_a_domain_rule_broken_in_a_later_row_undoes_the_rows_before(
    registry: Catalogue, admin: Principal, category: str
) -> None:
    content = files.write_xlsx(
        LABELS,
        [
            row(category),
            row(category),
            row(category, 关联资源代码="101010/999999"),  # no such entry
            row("101999", 资源分类="基础"),  # no such 目
            row(category, 资源分类="主题"),  # the class digit says 基础
        ],
    )
    problem = await refused(registry, admin, content)
    assert [(e["row"], e["column"]) for e in problem.extra["errors"]] == [
        (4, "关联资源代码"),
        (5, "分类码"),
        (6, "资源分类"),
    ]
    assert "101010/999999" in problem.extra["errors"][0]["reason"]
    assert problem.extra["errors"][0]["reason_en"] == "Unknown related resources"
    await nothing_written(registry, admin, category)
    assert await registry.count("101999") == (0, 0)


async def test_the_header_must_be_the_templates(registry: Catalogue, admin: Principal, category: str) -> None:
    header = [label for label in LABELS if label != "更新周期"] + ["备注", "信息资源名称"]
    content = files.write_xlsx(header, [row(category)[: len(header)]])
    problem = await refused(registry, admin, content)
    assert {(e["row"], e["column"], e["reason_en"]) for e in problem.extra["errors"]} == {
        (1, "更新周期", "required column missing"),
        (1, "备注", "unknown column: use the template's headers"),
        (1, "信息资源名称", "column appears more than once"),
    }
    await nothing_written(registry, admin, category)


async def test_a_file_without_rows_is_refused(registry: Catalogue, admin: Principal) -> None:
    problem = await refused(registry, admin, files.write_xlsx(LABELS, []))
    assert (problem.code, problem.extra["errors"][0]["reason"]) == ("import-invalid", "文件中没有数据行")


async def test_only_a_data_administrator_imports(registry: Catalogue, category: str) -> None:
    approver = person(credit_code(), Role.APPROVER)
    problem = await refused(registry, approver, files.write_xlsx(LABELS, [row(category)]))
    assert (problem.status, problem.code) == (403, "forbidden")
    await nothing_written(registry, approver, category)


# --------------------------------------------------------------------------- hostile files


def zipped(members: dict[str, bytes], level: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=level) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def valid_xlsx(category: str) -> bytes:
    return files.write_xlsx(LABELS, [row(category)])


def truncated(category: str) -> bytes:
    content = valid_xlsx(category)
    return content[: len(content) // 2]


def corrupted_sheet(category: str) -> bytes:
    """A real workbook whose sheet XML is not XML."""
    source = zipfile.ZipFile(io.BytesIO(valid_xlsx(category)))
    members = {n: source.read(n) for n in source.namelist()}
    sheet = next(n for n in members if n.startswith("xl/worksheets/"))
    members[sheet] = b"<worksheet><sheetData><row><c t='s'><v>0</v></c>"
    return zipped(members)


def entity_bomb(category: str) -> bytes:
    """Billion laughs in the shared strings: the XML parser must refuse it, not expand it."""
    source = zipfile.ZipFile(io.BytesIO(valid_xlsx(category)))
    members = {n: source.read(n) for n in source.namelist()}
    entities = '<!ENTITY l0 "ha">' + "".join(f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
    sheet = next(n for n in members if n.startswith("xl/worksheets/"))
    members[sheet] = (
        f'<?xml version="1.0"?><!DOCTYPE worksheet [{entities}]>'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        '<sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>&l9;</t></is></c></row></sheetData></worksheet>'
    ).encode()
    return zipped(members)


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (lambda c: b"", 400, "malformed-file"),
        (lambda c: b"PK\x03\x04 not really a zip", 400, "malformed-file"),
        (lambda c: "名称,摘要".encode("utf-16"), 400, "malformed-file"),
        (truncated, 400, "malformed-file"),
        (lambda c: zipped({"hello.txt": b"hello"}), 400, "malformed-file"),
        (lambda c: zipped({"[Content_Types].xml": b"<x/>", "xl/workbook.xml": b"not xml"}), 400, "malformed-file"),
        (corrupted_sheet, 400, "malformed-file"),
        (entity_bomb, 400, "malformed-file"),
        (lambda c: b"\0" * (files.MAX_FILE_BYTES + 1), 413, "file-too-large"),
        # a zip bomb: 200 MiB of zeros deflate to a few hundred KiB
        (
            lambda c: zipped({"[Content_Types].xml": b"<x/>", "xl/workbook.xml": bytes(200 << 20)}),
            413,
            "file-too-large",
        ),
        (lambda c: zipped({f"f{i}": b"" for i in range(files.MAX_MEMBERS + 1)}), 413, "file-too-large"),
        (lambda c: zipped({"a": bytes(2 << 20)}, zipfile.ZIP_DEFLATED), 413, "file-too-large"),
    ],
    ids=[
        "empty",
        "not-a-zip",
        "utf16-as-xlsx",
        "truncated",
        "zip-not-xlsx",
        "broken-workbook",
        "broken-sheet",
        "entity-bomb",
        "too-big",
        "zip-bomb",
        "too-many-members",
        "compression-ratio",
    ],
)
async def test_a_malformed_oversized_or_bomb_xlsx_is_refused_and_nothing_written(
    registry: Catalogue, admin: Principal, category: str, make: Any, status: int, code: str
) -> None:
    problem = await refused(registry, admin, make(category))
    assert (problem.status, problem.code) == (status, code), problem.detail
    assert problem.detail
    await nothing_written(registry, admin, category)


async def test_more_rows_than_allowed_are_refused(registry: Catalogue, admin: Principal, category: str) -> None:
    lines = [",".join(LABELS)] + [",".join(f'"{v}"' for v in row(category))] * (files.MAX_ROWS + 1)
    problem = await refused(registry, admin, "\n".join(lines).encode(), "text/csv")
    assert (problem.status, problem.code) == (413, "file-too-large")
    await nothing_written(registry, admin, category)


@pytest.mark.parametrize("media_type", ["", "application/json", "application/vnd.ms-excel", "text/plain"])
async def test_another_kind_of_file_is_refused(
    registry: Catalogue, admin: Principal, category: str, media_type: str
) -> None:
    problem = await refused(registry, admin, valid_xlsx(category), media_type)
    assert (problem.status, problem.code) == (415, "unsupported-file")
    await nothing_written(registry, admin, category)


# --------------------------------------------------------------------------- export


async def test_a_csv_export_imports_again(registry: Catalogue, admin: Principal, category: str) -> None:
    originals = [
        ResourceCreateFactory.build(category=category, classification="basic"),
        ResourceCreateFactory.build(category=category, classification="basic", related_codes=[]),
    ]
    for body in originals:
        await registry.create(admin, body)
    shown, _ = await catalogue.list_resources(registry.session, admin, {"category": category}, 100, None)
    exported = exports.csv_export(shown)
    assert exported.startswith("\ufeff信息资源代码,提供方,状态,版本,发布日期,信息资源名称")
    again = await run_import(registry, admin, exported.encode(), "text/csv")
    fields = catalogue.CONTENT_FIELDS
    assert [{f: getattr(r, f) for f in fields} for r in again] == [{f: getattr(r, f) for f in fields} for r in shown]
    assert [r.code for r in again] == [f"{category}/000003", f"{category}/000004"]


async def test_the_dcat_export_describes_published_entries_in_dcat_ap(
    registry: Catalogue, admin: Principal, category: str
) -> None:
    reviewer = person(credit_code(), Role.PLATFORM_ADMIN)
    published = await registry.published(
        admin, reviewer, ResourceCreateFactory.build(category=category, classification="basic")
    )
    await registry.create(admin, ResourceCreateFactory.build(category=category, classification="basic"))  # a draft
    filters = {"category": category, "status": ResourceStatus.PUBLISHED}
    shown, next_cursor = await catalogue.list_resources(registry.session, admin, filters, 1000, None)
    document = exports.dcat_catalog(
        shown, "https://tongban.example", "https://tongban.example/v1/registry/exports/dcat", {}, next_cursor
    )
    assert document["@context"]["dcat"] == "http://www.w3.org/ns/dcat#"
    assert document["@context"]["dct"] == "http://purl.org/dc/terms/"
    catalog, paging = document["@graph"]
    assert catalog["@type"] == "dcat:Catalog"
    assert {"dct:title", "dct:description", "dct:publisher", "dcat:dataset"} <= set(catalog)
    (dataset,) = catalog["dcat:dataset"]
    assert dataset["@type"] == "dcat:Dataset"
    assert dataset["dct:identifier"] == published.code
    assert dataset["dct:title"] == {"@value": published.name, "@language": "zh"}
    assert dataset["dct:description"]["@value"] == published.summary
    assert dataset["dct:publisher"]["dct:identifier"] == admin.dept
    assert dataset["dcat:theme"]["skos:notation"] == "101010"
    assert dataset["dcat:theme"]["skos:prefLabel"]["@value"] == "基础信息资源/人口/户籍登记"
    assert dataset["dct:accrualPeriodicity"]["@id"].endswith("/frequency/CONT")  # 实时
    assert dataset["dct:accessRights"]["@id"].endswith("/access-right/RESTRICTED")
    (distribution,) = dataset["dcat:distribution"]
    assert distribution["@type"] == "dcat:Distribution" and distribution["dcat:accessURL"]["@id"]
    assert distribution["dcat:accessService"]["@type"] == "dcat:DataService"
    assert dataset["dct:issued"] == {"@value": published.published_on.isoformat(), "@type": "xsd:date"}  # type: ignore[union-attr]
    assert paging["@type"] == "hydra:PagedCollection" and "hydra:nextPage" not in paging


def test_the_next_dcat_page_keeps_the_query_and_adds_the_cursor() -> None:
    document = exports.dcat_catalog(
        [], "http://h", "http://h/v1/registry/exports/dcat", {"limit": "2"}, "101010/000002"
    )
    assert document["@graph"][1]["hydra:nextPage"] == "http://h/v1/registry/exports/dcat?limit=2&cursor=101010%2F000002"
