"""信息资源分类 — the classification of the catalogue, kept as data (``data/classification.json``).

Source: 政务信息资源目录编制指南（试行）(发改高技〔2017〕1272号) and GB/T 21063.4. Three 类 — 1 基础
(人口, 法人单位, 自然资源和空间地理, 社会信用, 电子证照), 2 主题 (公共服务, 健康保障, 社会保障…),
3 部门 — each divided into 项 (2 digits) and 目 (3 digits). A 分类码 is 类 + 项 + 目 (6 digits),
optionally followed by a 细目 of 1–6 digits, which the cataloguing department defines itself: any
细目 under a known 目 is accepted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from services.registry.problems import RegistryProblem

DATA = Path(__file__).parent / "data" / "classification.json"
LEVELS = ("类", "项", "目")
TARGET_DIGITS = 6  # 类 1 + 项 2 + 目 3


@dataclass(frozen=True, slots=True)
class ClassNode:
    """One node of the taxonomy: ``code`` is its full 分类码 prefix (``1``, ``101``, ``101010``)."""

    code: str
    name: str
    level: str  # 类 / 项 / 目
    kind: str  # basic / theme / department, the 类 it falls under
    children: tuple[ClassNode, ...] = ()


@dataclass(frozen=True, slots=True)
class Taxonomy:
    source: str
    classes: tuple[ClassNode, ...]
    targets: Mapping[str, str]  # 目 code → "基础信息资源/人口/户籍登记" (read-only)

    def kind_of(self, category: str) -> str | None:
        """``basic`` / ``theme`` / ``department`` for a 分类码 of a known 目 (with or without 细目)."""
        if category[:TARGET_DIGITS] not in self.targets:
            return None
        return next(c.kind for c in self.classes if c.code == category[0])


def load(path: Path = DATA) -> Taxonomy:
    raw = json.loads(path.read_text(encoding="utf-8"))
    targets: dict[str, str] = {}
    classes = []
    for c in raw["classes"]:
        items = []
        for i in c["items"]:
            item_code = c["code"] + i["code"]
            leaves = []
            for t in i["targets"]:
                code = item_code + t["code"]
                if len(code) != TARGET_DIGITS or not code.isdigit() or code in targets:
                    raise ValueError(f"{path.name}: 目 {code!r} is not a new 6-digit code")
                targets[code] = f"{c['name']}/{i['name']}/{t['name']}"
                leaves.append(ClassNode(code, t["name"], "目", c["kind"]))
            items.append(ClassNode(item_code, i["name"], "项", c["kind"], tuple(leaves)))
        classes.append(ClassNode(c["code"], c["name"], "类", c["kind"], tuple(items)))
    return Taxonomy(raw["source"], tuple(classes), MappingProxyType(targets))


TAXONOMY = load()


def check_category(category: str, classification: str, taxonomy: Taxonomy = TAXONOMY) -> None:
    """A resource's 分类码 must be a known 目 (or a 细目 under one), of the 类 its
    ``classification`` names; otherwise 422 with the valid 目 in the problem (``valid_categories``)."""
    kind = taxonomy.kind_of(category)
    if kind is None:
        valid = [{"code": code, "name": name} for code, name in sorted(taxonomy.targets.items())]
        raise RegistryProblem.UNKNOWN_CATEGORY.problem(
            f"分类码 {category} 不在信息资源分类中 (unknown class); a 分类码 is a known 目 "
            f"({', '.join(taxonomy.targets)}) optionally followed by a 细目 of 1–6 digits.",
            extra={"valid_categories": valid},
        )
    if kind != classification:
        raise RegistryProblem.CATEGORY_MISMATCH.problem(
            f"分类码 {category} 属于 {kind} 类, not {classification}: classification must match its first digit."
        )
