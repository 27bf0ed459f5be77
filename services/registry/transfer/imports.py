"""批量导入 — catalogue entries from the rows of an uploaded sheet, all or nothing.

Each row becomes a ``ResourceCreate`` (the create endpoint's schema) and goes through
``catalogue.create_resource`` (its domain rules: the classification, related codes, 顺序码), so an
imported entry is exactly one a data administrator could have created by hand: a draft of the
caller's department. Every row is checked, and every error reported with its row, column and
reason in Chinese and English; if there is any, the import raises ``import-invalid`` and the unit of
work rolls back every entry (and 顺序码) the file had created.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from services.common.errors import Problem
from services.common.security import Principal
from services.common.uow import UnitOfWork
from services.registry.catalogue.schemas import ResourceCreate
from services.registry.catalogue.service import create_resource, require_data_admin
from services.registry.events import Topics
from services.registry.models import Resource
from services.registry.problems import RegistryProblem
from services.registry.transfer.columns import BY_FIELD, BY_LABEL, COLUMNS, EXPORT_ONLY, body_of
from services.registry.transfer.files import Row

MAX_REPORTED = 500  # errors listed in the problem; the count says how many there were

# Chinese for the schema's error types; the English is pydantic's own message.
REASONS = {
    "missing": "必填",
    "string_too_short": "过短",
    "string_too_long": "过长",
    "string_pattern_mismatch": "格式不正确",
    "literal_error": "不是可选值",
    "too_short": "项数过少",
    "too_long": "项数过多",
    "int_parsing": "应为整数",
    "greater_than_equal": "过小",
    "less_than_equal": "过大",
    "extra_forbidden": "不允许的字段",
}
# Chinese for the schema's own rules, whose messages are English first.
RULES = {
    "share.condition is required": "有条件共享须填写共享条件",
    "share.basis (legal basis) is required": "不予共享须填写法律、行政法规或国家有关规定作为依据",
    "items: names must be unique": "信息项名称不能重复",
    "related_codes: each": "关联资源代码不能重复",
}
# The column a domain rule's problem is about.
PROBLEM_COLUMNS = {
    RegistryProblem.UNKNOWN_CATEGORY.value: "分类码",
    RegistryProblem.CATEGORY_FULL.value: "分类码",
    RegistryProblem.CATEGORY_MISMATCH.value: "资源分类",
    RegistryProblem.UNKNOWN_RELATED.value: "关联资源代码",
}


def error(row: int, column: str, reason: str, reason_en: str) -> dict[str, Any]:
    return {"row": row, "column": column, "reason": reason, "reason_en": reason_en}


def column_of(loc: tuple[int | str, ...], message: str) -> str:
    """The column a schema error falls in: by its location (``share.condition`` → 共享条件); an
    error of a whole object (``share``) in the column its message names, else the object's first."""
    dotted = ".".join(str(part) for part in loc[:2])
    if (column := BY_FIELD.get(dotted) or BY_FIELD.get(str(loc[0]) if loc else "")) is not None:
        return column.label
    inside = [c for c in COLUMNS if loc and c.field.startswith(f"{loc[0]}.")]
    named = [c for c in inside if c.field in message]
    return (named or inside)[0].label if inside else ""


def schema_errors(row: int, err: ValidationError) -> list[dict[str, Any]]:
    found = []
    for e in err.errors(include_url=False):
        message = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "value_error":
            reason = next((zh for en, zh in RULES.items() if message.startswith(en)), message)
        else:
            reason = REASONS.get(e["type"], message)
        found.append(error(row, column_of(tuple(e["loc"]), message), reason, message))
    return found


def header_errors(header: list[str]) -> list[dict[str, Any]]:
    """Row 1 must name the template's columns: none unknown, none repeated, every required one."""
    found = []
    for label in header:
        if label and label not in BY_LABEL and label not in EXPORT_ONLY:
            found.append(
                error(1, label, "未知的列，请使用导入模板的列名", "unknown column: use the template's headers")
            )
        if label and header.count(label) > 1:
            found.append(error(1, label, "列名重复", "column appears more than once"))
    for column in COLUMNS:
        if column.required and column.label not in header:
            found.append(error(1, column.label, "缺少必填列", "required column missing"))
    return list({(e["column"], e["reason"]): e for e in found}.values())


async def import_resources(
    uow: UnitOfWork, principal: Principal, header: list[str], rows: list[Row], topics: Topics
) -> list[Resource]:
    """The draft entries of ``rows``, created as ``principal`` in ``uow``; or ``import-invalid``
    listing every error, and nothing created."""
    require_data_admin(principal)
    errors = header_errors(header)
    if not errors and not rows:
        errors.append(error(2, "", "文件中没有数据行", "the file has no rows"))
    bodies: list[tuple[int, ResourceCreate]] = []
    for number, cells in rows if not errors else []:
        body, cell_errors = body_of(cells)
        errors.extend(error(number, column.label, e.reason, e.reason_en) for column, e in cell_errors)
        try:
            created = ResourceCreate.model_validate(body)
        except ValidationError as err:
            errors.extend(e for e in schema_errors(number, err) if e["column"] not in {c.label for c, _ in cell_errors})
            continue
        if not cell_errors:
            bodies.append((number, created))
    resources: list[Resource] = []
    for number, spec in bodies:
        # The rows already found wrong are not created; the others still are, for the rules only
        # the database can check (related codes) — all of it is rolled back if anything is wrong.
        try:
            resources.append(await create_resource(uow, principal, spec, topics))
        except Problem as problem:
            errors.append(error(number, PROBLEM_COLUMNS.get(problem.code, ""), problem.detail, problem.title))
    if errors:
        order = {c.label: n for n, c in enumerate(COLUMNS)}
        errors.sort(key=lambda e: (e["row"], order.get(e["column"], len(order))))
        raise RegistryProblem.IMPORT_INVALID.problem(
            f"{len(errors)} 处错误，未导入任何信息资源 ({len(errors)} errors; nothing was imported).",
            extra={"error_count": len(errors), "errors": errors[:MAX_REPORTED]},
        )
    return resources
