"""The columns of the import template (导入模板), one catalogue entry a row, and how a cell's text
maps to and from a field of :class:`ResourceCreate`. The template, the import and the CSV export all
use this one list, so a CSV export of one's own entries imports again as new drafts.

Enumerated fields take their values from the catalogue's schemas (``ResourceFormat``…), shown in
Chinese where the API uses English codes; a cell may hold either. 信息项 are one cell, one item a
line (or separated by ``;``): ``名称:数据类型:长度[:敏感][:脱敏规则]``, e.g. ``身份证号:C:18:敏感:id_card``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, get_args

from services.registry.catalogue.classification import TAXONOMY
from services.registry.catalogue.schemas import (
    LENGTH_LIMITS,
    MaskingRule,
    ResourceFormat,
    ShareMode,
    UpdateCycle,
)


def same(values: tuple[str, ...]) -> Mapping[str, Any]:
    return MappingProxyType({v: v for v in values})


CLASSIFICATIONS = MappingProxyType({"基础": "basic", "主题": "theme", "部门": "department"})
SHARE_TYPES = MappingProxyType({"无条件共享": "unconditional", "有条件共享": "conditional", "不予共享": "none"})
YES_NO = MappingProxyType({"是": True, "否": False})
SUBJECTS = MappingProxyType(
    {"自然人": ("id_card",), "法人": ("credit_code",), "自然人和法人": ("id_card", "credit_code")}
)
MASKING_RULES: tuple[str, ...] = get_args(MaskingRule)
SENSITIVE = "敏感"


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its header (``label``), the field it fills (dotted), whether a value is
    required, the values a dropdown offers (cell text → field value), and a line of help."""

    label: str
    field: str
    required: bool
    help: str
    choices: Mapping[str, Any] | None = None
    suggest_only: bool = False  # the dropdown suggests; other values are allowed (a 细目 under a 目)
    width: int = 16
    example: str = ""


COLUMNS: tuple[Column, ...] = (
    Column("信息资源名称", "name", True, "2–100 个字符", width=24, example="居民户籍信息"),
    Column("信息资源摘要", "summary", True, "1–2000 个字符", width=36, example="公安机关登记的常住人口户籍信息。"),
    Column(
        "分类码",
        "category",
        True,
        "信息资源分类的目（6 位），可加 1–6 位细目",
        MappingProxyType({code: code for code in sorted(TAXONOMY.targets)}),
        suggest_only=True,
        example="101010",
    ),
    Column(
        "资源分类",
        "classification",
        True,
        "须与分类码首位一致：1 基础、2 主题、3 部门",
        CLASSIFICATIONS,
        example="基础",
    ),
    Column("资源格式", "format", False, "默认 服务接口", same(get_args(ResourceFormat)), example="服务接口"),
    Column(
        "信息项",
        "items",
        True,
        "每行一项：名称:数据类型:长度[:敏感][:脱敏规则]",
        width=40,
        example="姓名:C:50:敏感:name\n公民身份号码:C:18:敏感:id_card\n出生日期:D:8",
    ),
    Column(
        "共享类型", "share.type", True, "有条件共享须填共享条件；不予共享须填依据", SHARE_TYPES, example="有条件共享"
    ),
    Column("共享条件", "share.condition", False, "有条件共享时必填", width=30, example="仅用于社会救助审核"),
    Column("不予共享依据", "share.basis", False, "不予共享时必填：法律、行政法规或党中央、国务院政策依据", width=30),
    Column("共享方式", "share.mode", False, "默认 接口", same(get_args(ShareMode)), example="接口"),
    Column("是否向社会开放", "open.public", False, "默认 否", YES_NO, example="否"),
    Column("开放条件", "open.condition", False, "", width=24),
    Column("更新周期", "update_cycle", True, "", same(get_args(UpdateCycle)), example="实时"),
    Column("关联资源代码", "related_codes", False, "已有信息资源的代码，多个用 ; 分隔", width=24),
    Column("信息主体类型", "subject_types", False, "默认 自然人", SUBJECTS, example="自然人"),
)
BY_LABEL = MappingProxyType({c.label: c for c in COLUMNS})
BY_FIELD = MappingProxyType({c.field: c for c in COLUMNS})
# Columns a CSV export adds; an import ignores them (the registry allocates codes and states).
EXPORT_ONLY = ("信息资源代码", "提供方", "状态", "版本", "发布日期")

LIST_SEPARATOR = re.compile(r"[;；\n]+")
ITEM_SEPARATOR = re.compile(r"[:：]")


class CellError(ValueError):
    """A cell's text that is not a value of its column (the reason in Chinese, then English)."""

    def __init__(self, reason: str, reason_en: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reason_en = reason_en


def parse_items(text: str) -> list[dict[str, Any]]:
    """``名称:类型:长度[:敏感][:脱敏规则]`` per line → 信息项 (their rules are ItemSpec's)."""
    items: list[dict[str, Any]] = []
    for line in (part.strip() for part in LIST_SEPARATOR.split(text)):
        if not line:
            continue
        parts = [p.strip() for p in ITEM_SEPARATOR.split(line)]
        if len(parts) < 3 or not parts[2].isdigit():
            raise CellError(
                f"信息项 “{line}” 应为 名称:数据类型:长度[:敏感][:脱敏规则]",
                f"item {line!r} must be name:data_type:length[:敏感][:masking]",
            )
        item: dict[str, Any] = {"name": parts[0], "data_type": parts[1].upper(), "length": int(parts[2])}
        for flag in parts[3:]:
            if flag in (SENSITIVE, "sensitive"):
                item["sensitive"] = True
            elif flag in MASKING_RULES:
                item["masking"] = flag
            elif flag:
                raise CellError(
                    f"信息项 “{parts[0]}” 的 “{flag}” 既不是“敏感”也不是脱敏规则（{'、'.join(MASKING_RULES)}）",
                    f"item {parts[0]!r}: {flag!r} is neither 敏感 nor a masking rule",
                )
        items.append(item)
    return items


def format_items(items: list[dict[str, Any]]) -> str:
    lines = []
    for item in items:
        parts = [item["name"], item["data_type"], str(item["length"])]
        if item.get("sensitive"):
            parts.append(SENSITIVE)
        if item.get("masking"):
            parts.append(item["masking"])
        lines.append(":".join(parts))
    return "\n".join(lines)


def parse_cell(column: Column, text: str) -> Any:
    """The field value of a non-empty cell."""
    if column.field == "items":
        return parse_items(text)
    if column.field == "related_codes":
        return [c.strip() for c in LIST_SEPARATOR.split(text) if c.strip()]
    if column.choices is not None and not column.suggest_only:
        if text in column.choices:
            value = column.choices[text]
        elif text in {str(v) for v in column.choices.values()}:
            value = text  # the API's own code (``basic``) instead of its label
        else:
            allowed = "、".join(column.choices)
            raise CellError(f"“{text}” 不是可选值：{allowed}", f"{text!r} is not one of: {', '.join(column.choices)}")
        return list(value) if isinstance(value, tuple) else value
    return text


def format_cell(column: Column, value: Any) -> str:
    """A field value as the template writes it (the inverse of :func:`parse_cell`)."""
    if value is None:
        return ""
    if column.field == "items":
        return format_items(value)
    if column.field == "related_codes":
        return ";".join(value)
    if column.choices is not None and not column.suggest_only:
        wanted = tuple(value) if isinstance(value, list) else value
        for label, choice in column.choices.items():
            if choice == wanted:
                return label
    return str(value)


def body_of(cells: Mapping[str, str]) -> tuple[dict[str, Any], list[tuple[Column, CellError]]]:
    """A row's cells (header → text) as a ``ResourceCreate`` body, and the cells that are not values.
    An empty optional cell is left out, so that the schema's default applies."""
    body: dict[str, Any] = {}
    errors: list[tuple[Column, CellError]] = []
    for column in COLUMNS:
        text = (cells.get(column.label) or "").strip()
        if not text:
            continue  # a missing required value is the schema's error, with the others
        try:
            value = parse_cell(column, text)
        except CellError as err:
            errors.append((column, err))
            continue
        head, _, tail = column.field.partition(".")
        if tail:
            body.setdefault(head, {})[tail] = value
        else:
            body[head] = value
    return body, errors


def data_types_help() -> list[tuple[str, str, str]]:
    """数据类型 code, meaning and allowed length, for the instructions sheet."""
    rows = []
    for code, (meaning, low, high) in LENGTH_LIMITS.items():
        rows.append((code, meaning, str(low) if low == high else f"{low}–{high}"))
    return rows
