"""批量导入 — catalogue entries from the rows of an uploaded sheet, all or nothing.

Each row becomes a ``ResourceCreate`` (the create endpoint's schema) and goes through the rules of
``catalogue.create_resource`` (the classification, related codes, 顺序码), so an imported entry is
exactly one a data administrator could have created by hand: a draft of the caller's department.
Every row is checked before anything is written, and every error reported with its row, column and
reason in Chinese and English; if there is any, the import raises ``import-invalid`` and writes
nothing. The rows are written in one batch in the caller's unit of work (all or nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from services.common.errors import Problem
from services.common.security import Principal
from services.common.uow import UnitOfWork
from services.registry.catalogue.classification import check_category
from services.registry.catalogue.schemas import ResourceCreate
from services.registry.catalogue.service import insert_entries, missing_related, require_data_admin, unknown_related
from services.registry.events import Topics
from services.registry.models import Resource
from services.registry.problems import RegistryProblem
from services.registry.transfer.columns import BY_FIELD, BY_LABEL, COLUMNS, EXPORT_ONLY, body_of
from services.registry.transfer.files import Row

MAX_REPORTED = 500  # errors listed in the problem; the count says how many there were
PROGRESS_EVERY = 500  # rows between two reports of progress

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


Progress = Callable[[int], None]  # told the number of rows checked so far


def no_progress(_: int) -> None:
    return None


def sorted_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {c.label: n for n, c in enumerate(COLUMNS)}
    return sorted(errors, key=lambda e: (e["row"], order.get(e["column"], len(order))))


def invalid(errors: list[dict[str, Any]], what: str = "信息资源", what_en: str = "") -> Problem:
    """``import-invalid`` with the first :data:`MAX_REPORTED` errors, in row and column order."""
    return RegistryProblem.IMPORT_INVALID.problem(
        f"{len(errors)} 处错误，未导入任何{what} ({len(errors)} errors; nothing was imported{what_en}).",
        extra={"error_count": len(errors), "errors": errors[:MAX_REPORTED]},
    )


def check_rows(
    header: list[str], rows: list[Row], progress: Progress
) -> tuple[list[tuple[int, ResourceCreate]], list[dict[str, Any]]]:
    """Every row checked without the database (cells, schema, classification): the entries with
    their row numbers, and the errors."""
    errors = header_errors(header)
    if not errors and not rows:
        errors.append(error(2, "", "文件中没有数据行", "the file has no rows"))
    bodies: list[tuple[int, ResourceCreate]] = []
    for checked, (number, cells) in enumerate(rows if not errors else [], start=1):
        if checked % PROGRESS_EVERY == 0:
            progress(checked)
        fields, cell_errors = body_of(cells)
        errors.extend(error(number, column.label, e.reason, e.reason_en) for column, e in cell_errors)
        try:
            created = ResourceCreate.model_validate(fields)
        except ValidationError as err:
            errors.extend(e for e in schema_errors(number, err) if e["column"] not in {c.label for c, _ in cell_errors})
            continue
        try:
            check_category(created.category, created.classification)
        except Problem as problem:
            errors.append(error(number, PROBLEM_COLUMNS.get(problem.code, ""), problem.detail, problem.title))
            continue
        if not cell_errors:
            bodies.append((number, created))
    return bodies, errors


async def import_resources(
    uow: UnitOfWork,
    principal: Principal,
    header: list[str],
    rows: list[Row],
    topics: Topics,
    progress: Progress = no_progress,
) -> list[Resource]:
    """The draft entries of ``rows``, created as ``principal`` in ``uow``; or ``import-invalid``
    listing every error, and nothing created.

    Every row is checked first — its cells, the schema, the classification (no database), then the
    related codes of all rows in one query — and only a file without errors is written, in one
    batch (``catalogue.insert_entries``). ``progress`` is told the rows checked as it goes."""
    require_data_admin(principal)
    # CPU work (10,000 rows take seconds): off the event loop, so the registry keeps answering
    bodies, errors = await asyncio.to_thread(check_rows, header, rows, progress)
    absent = await missing_related(uow.session, principal, {c for _, spec in bodies for c in spec.related_codes})
    for number, spec in bodies:
        if missing := [c for c in spec.related_codes if c in absent]:
            unknown = unknown_related(missing)
            errors.append(error(number, "关联资源代码", unknown.detail, unknown.title))
    progress(len(rows))
    if errors:
        raise invalid(sorted_errors(errors))
    try:
        return await insert_entries(uow, principal, [body for _, body in bodies], topics)
    except Problem as problem:
        if problem.code != RegistryProblem.CATEGORY_FULL.value:
            raise
        # 顺序码 run out: reported on the first row of that 分类码
        number = next(n for n, spec in bodies if spec.category == problem.extra.get("category"))
        raise invalid([error(number, "分类码", problem.detail, problem.title)]) from problem


async def resource_codes(
    uow: UnitOfWork,
    principal: Principal,
    header: list[str],
    rows: list[Row],
    topics: Topics,
    progress: Progress = no_progress,
) -> list[str]:
    """:func:`import_resources` for an import job: the 信息资源代码 created, in row order."""
    return [r.code for r in await import_resources(uow, principal, header, rows, topics, progress)]
