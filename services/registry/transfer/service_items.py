"""事项导入 — service items (政务服务事项) and their materials (申请材料) from an uploaded sheet, all or
nothing, with the rules of the service-items API (``service_items/service.py``).

One row a material: a service item with three materials is three rows repeating its 事项编码 and
事项名称; a service item without materials is one row with the material columns left empty. A
government-issued material (政府部门核发) may name the 信息资源代码 that covers it and the 信息项 of
that resource (names separated by ``;``). Each service item is validated by ``ServiceItemCreate``
(the create endpoint's schema), then every item of the file is checked against the database at
once (codes taken, resources and items mapped) and, only if nothing is wrong, written in one batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from services.common.errors import Problem
from services.common.security import Principal
from services.common.uow import UnitOfWork
from services.registry.catalogue.service import visible_resources
from services.registry.events import Topics
from services.registry.lists.service import require_data_admin
from services.registry.models import MaterialNecessity, MaterialSource
from services.registry.service_items.schemas import ServiceItemCreate
from services.registry.service_items.service import (
    check_covering,
    code_taken,
    insert_service_items,
    taken_codes,
)
from services.registry.transfer import files
from services.registry.transfer.columns import LIST_SEPARATOR, CellError, Column
from services.registry.transfer.files import Row
from services.registry.transfer.imports import (
    PROGRESS_EVERY,
    REASONS,
    Progress,
    error,
    invalid,
    no_progress,
)

SHEET = "事项清单"
SOURCES = MappingProxyType(
    {
        "政府部门核发": MaterialSource.GOVERNMENT,
        "申请人自备": MaterialSource.APPLICANT,
        "中介服务机构出具": MaterialSource.INTERMEDIARY,
        "其他": MaterialSource.OTHER,
    }
)
NECESSITIES = MappingProxyType(
    {
        "必要": MaterialNecessity.REQUIRED,
        "非必要": MaterialNecessity.OPTIONAL,
        "情形必要": MaterialNecessity.CONDITIONAL,
    }
)
CODE, NAME, MATERIAL, SOURCE, NECESSITY, RESOURCE, ITEMS = (
    "事项编码",
    "事项名称",
    "材料名称",
    "来源渠道",
    "必要性",
    "关联资源代码",
    "信息项",
)
COLUMNS: tuple[Column, ...] = (
    Column(CODE, "code", True, "4–64 位字母、数字或 -；同一事项的各行相同", width=24, example="330100-000-XK-001"),
    Column(NAME, "name", True, "2–200 个字符；同一事项的各行相同", width=30, example="最低生活保障申请"),
    Column(
        MATERIAL,
        "materials.name",
        False,
        "2–200 个字符；每行一项材料，事项无材料时留空",
        width=30,
        example="居民户口簿",
    ),
    Column(SOURCE, "materials.source", False, "填写材料时必填", SOURCES, example="政府部门核发"),
    Column(NECESSITY, "materials.necessity", False, "默认 必要", NECESSITIES, example="必要"),
    Column(
        RESOURCE,
        "materials.resource",
        False,
        "仅政府部门核发的材料可填：覆盖该材料的信息资源代码",
        width=24,
        example="101010/000001",
    ),
    Column(
        ITEMS,
        "materials.items",
        False,
        "与关联资源代码一起填写：覆盖该材料的信息项名称，多个用 ; 分隔",
        width=30,
        example="姓名;公民身份号码",
    ),
)
LABELS = tuple(c.label for c in COLUMNS)
MATERIAL_COLUMNS = (MATERIAL, SOURCE, NECESSITY, RESOURCE, ITEMS)
FIELD_COLUMNS = MappingProxyType(
    {"name": MATERIAL, "source": SOURCE, "necessity": NECESSITY, "resource": RESOURCE, "items": ITEMS}
)
# Chinese for MaterialSpec's own rules, whose messages are English.
MAPPING_RULES = MappingProxyType(
    {
        "resource and items": "关联资源代码与信息项须同时填写",
        "only a government": "只有政府部门核发的材料可以关联信息资源",
    }
)
GUIDE = (
    "《政务服务事项》批量导入模板 — 填写说明",
    "",
    f"1. 在“{SHEET}”工作表中每行填写一项申请材料，第 1 行为列名，请勿修改或删除。",
    "2. 一个事项有多项材料时写多行，各行的事项编码和事项名称相同；事项无材料时写一行，材料各列留空。",
    "3. 导入为“全部或全不”：任何一行有错误，整个文件都不会导入，并返回逐行错误（行号、列名、原因）。",
    "   上传后系统返回导入任务，在后台导入；可随时查询任务的状态、进度和错误报告。",
    "4. 导入的事项属于本部门（实施部门）；事项编码不能与已登记的事项重复。",
    "5. 只有政府部门核发的材料可以关联信息资源：填写信息资源代码和覆盖该材料的信息项（名称用 ; 分隔），",
    "   两者须同时填写；关联后，本部门有有效授权时该材料计为免提交。",
    f"6. 每个文件最多 {files.MAX_ROWS} 行，文件不超过 {files.MAX_FILE_BYTES // (1024 * 1024)} MiB；也可另存为 UTF-8 编码的 CSV 导入。",
)


def template() -> bytes:
    """The service-items template: one material a row, dropdowns for 来源渠道 and 必要性."""
    return files.workbook_template(SHEET, COLUMNS, GUIDE, [])


@dataclass
class Draft:
    """A service item as its rows give it: the first row's number, each material's row."""

    first_row: int
    body: dict[str, Any]
    material_rows: list[int] = field(default_factory=list)


def choice(column: Column, text: str) -> str:
    assert column.choices is not None
    if text in column.choices:
        return str(column.choices[text])
    if text in {str(v) for v in column.choices.values()}:
        return text  # the API's own code (``government``) instead of its label
    raise CellError(
        f"“{text}” 不是可选值：{'、'.join(column.choices)}", f"{text!r} is not one of: {', '.join(column.choices)}"
    )


def material_of(cells: dict[str, str]) -> tuple[dict[str, Any], list[tuple[str, CellError]]]:
    """A row's material as a ``MaterialSpec`` body (empty cells left out: the schema's defaults),
    and the cells that are not values of their column."""
    material: dict[str, Any] = {}
    wrong: list[tuple[str, CellError]] = []
    if text := cells.get(MATERIAL, ""):
        material["name"] = text
    for column in COLUMNS:
        if column.choices is not None and (text := cells.get(column.label, "")):
            try:
                material[column.field.removeprefix("materials.")] = choice(column, text)
            except CellError as err:
                wrong.append((column.label, err))
    if text := cells.get(RESOURCE, ""):
        material["resource"] = text
    if text := cells.get(ITEMS, ""):
        material["items"] = [name.strip() for name in LIST_SEPARATOR.split(text) if name.strip()]
    return material, wrong


def header_errors(header: list[str]) -> list[dict[str, Any]]:
    found = []
    for label in header:
        if label and label not in LABELS:
            found.append(
                error(1, label, "未知的列，请使用导入模板的列名", "unknown column: use the template's headers")
            )
        if label and header.count(label) > 1:
            found.append(error(1, label, "列名重复", "column appears more than once"))
    for column in COLUMNS:
        if column.required and column.label not in header:
            found.append(error(1, column.label, "缺少必填列", "required column missing"))
    return list({(e["column"], e["reason"]): e for e in found}.values())


def schema_errors(draft: Draft, err: ValidationError) -> list[dict[str, Any]]:
    """The schema's errors of a service item, each on the row and in the column it is about."""
    found = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        message = str(e["msg"]).removeprefix("Value error, ")
        reason = REASONS.get(e["type"], message)
        row, column = draft.first_row, ""
        if loc[:1] == ("code",):
            column = CODE
        elif loc[:1] == ("name",):
            column = NAME
        elif loc[:1] == ("materials",) and len(loc) > 1 and isinstance(loc[1], int):
            row = draft.material_rows[loc[1]]
            column = FIELD_COLUMNS.get(str(loc[2]), RESOURCE) if len(loc) > 2 else RESOURCE
            if e["type"] == "value_error":
                reason = next((zh for en, zh in MAPPING_RULES.items() if message.startswith(en)), message)
        elif loc[:1] == ("materials",):
            column = MATERIAL
        found.append(error(row, column, reason, message))
    return found


def check_rows(
    header: list[str], rows: list[Row], progress: Progress
) -> tuple[list[tuple[Draft, ServiceItemCreate]], list[dict[str, Any]]]:
    """Every row checked without the database: the service items of the file, and the errors."""
    errors = header_errors(header)
    if not errors and not rows:
        errors.append(error(2, "", "文件中没有数据行", "the file has no rows"))
    if errors:
        return [], errors
    drafts: dict[str, Draft] = {}
    for checked, (number, cells) in enumerate(rows, start=1):
        if checked % PROGRESS_EVERY == 0:
            progress(checked)
        cells = {k: v.strip() for k, v in cells.items()}
        code, name = cells.get(CODE, ""), cells.get(NAME, "")
        draft = drafts.get(code)
        if draft is None:
            draft = drafts[code] = Draft(number, {"code": code, "name": name, "materials": []})
            if not code:  # one draft for all rows without a code: each is reported below
                draft.body.pop("code")
        elif name and name != draft.body["name"]:
            errors.append(
                error(
                    number,
                    NAME,
                    f"与第 {draft.first_row} 行同一事项编码的事项名称不一致",
                    f"differs from the name of the same code in row {draft.first_row}",
                )
            )
        if not code:
            errors.append(error(number, CODE, REASONS["missing"], "Field required"))
            continue
        if not any(cells.get(label) for label in MATERIAL_COLUMNS):
            continue
        material, wrong = material_of(cells)
        if wrong:
            errors.extend(error(number, label, err.reason, err.reason_en) for label, err in wrong)
            continue
        draft.body["materials"].append(material)
        draft.material_rows.append(number)
    checked_items: list[tuple[Draft, ServiceItemCreate]] = []
    for code, draft in drafts.items():
        if not code:
            continue
        try:
            checked_items.append((draft, ServiceItemCreate.model_validate(draft.body)))
        except ValidationError as err:
            errors.extend(schema_errors(draft, err))
    return checked_items, errors


async def import_service_items(
    uow: UnitOfWork,
    principal: Principal,
    header: list[str],
    rows: list[Row],
    topics: Topics,
    progress: Progress = no_progress,
) -> list[str]:
    """The service items of ``rows``, registered for the caller's department in ``uow`` (their codes,
    in the order of the file); or ``import-invalid`` listing every error, and nothing written."""
    require_data_admin(principal)
    checked, errors = await asyncio.to_thread(check_rows, header, rows, progress)
    session = uow.session
    taken = await taken_codes(session, [body.code for _, body in checked])
    wanted = {spec.resource for _, body in checked for spec in body.materials if spec.resource is not None}
    resources = await visible_resources(session, principal, wanted)
    for draft, body in checked:
        if body.code in taken:
            problem = code_taken(body.code)
            errors.append(error(draft.first_row, CODE, f"事项编码 {body.code} 已登记", problem.detail or problem.title))
        for row, spec in zip(draft.material_rows, body.materials, strict=True):
            if spec.resource is None:
                continue
            if (resource := resources.get(spec.resource)) is None:
                errors.append(
                    error(row, RESOURCE, f"信息资源 {spec.resource} 不存在或不可见", f"no resource {spec.resource!r}")
                )
                continue
            try:
                check_covering(spec, resource)
            except Problem as problem:
                unknown = "、".join(problem.extra.get("unknown", []))
                errors.append(
                    error(row, ITEMS, f"信息资源 {resource.code} 没有信息项：{unknown}", problem.detail or "")
                )
    progress(len(rows))
    if errors:
        order = {label: n for n, label in enumerate(LABELS)}
        errors.sort(key=lambda e: (e["row"], order.get(e["column"], len(order))))
        raise invalid(errors, "事项", " (service items)")
    created = await insert_service_items(uow, principal, [body for _, body in checked], topics)
    return [item.code for item, _ in created]


def rows_of(items: Sequence[tuple[str, str, list[dict[str, str]]]]) -> list[list[str]]:
    """Template rows for service items given as (code, name, materials as header → text): for tests
    and the benchmark, which write files as a data administrator would."""
    out = []
    for code, name, materials in items:
        for material in materials or [{}]:
            cells = {CODE: code, NAME: name, **material}
            out.append([cells.get(label, "") for label in LABELS])
    return out
