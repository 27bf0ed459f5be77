"""Masking policy (脱敏), all of it: the rules, the defaults a grant takes from the catalogue,
and what happens to a sensitive item nobody gave a rule. The registry uses it when it issues a
grant, the exchange when it answers.

``id_card``: keep the first 6 and last 4 (``110101********1234``); ``mobile``: keep 3 + 4
(``138****5678``); ``name``: keep the surname (``张*``, ``欧阳**``); ``full``: hide everything.
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Any

# Two-character surnames (复姓) that must stay whole when a name is masked.
COMPOUND_SURNAMES = frozenset(
    [
        "欧阳",
        "司马",
        "上官",
        "诸葛",
        "东方",
        "皇甫",
        "尉迟",
        "公孙",
        "慕容",
        "长孙",
        "宇文",
        "司徒",
        "夏侯",
        "轩辕",
        "令狐",
        "端木",
        "西门",
        "南宫",
        "独孤",
        "呼延",
        "申屠",
        "太史",
        "万俟",
        "闻人",
    ]
)


def _keep(value: str, head: int, tail: int) -> str:
    if len(value) <= head + tail:
        return "*" * len(value)
    return value[:head] + "*" * (len(value) - head - tail) + (value[-tail:] if tail else "")


def mask_id_card(value: str) -> str:
    return _keep(value, 6, 4)


def mask_mobile(value: str) -> str:
    return _keep(value, 3, 4)


def mask_name(value: str) -> str:
    surname = 2 if value[:2] in COMPOUND_SURNAMES and len(value) > 2 else 1
    return value[:surname] + "*" * (len(value) - surname)


def mask_full(value: str) -> str:
    return "*" * len(value)


MASKING_RULES: dict[str, Callable[[str], str]] = {
    "id_card": mask_id_card,
    "mobile": mask_mobile,
    "name": mask_name,
    "full": mask_full,
}


def apply_masking(data: dict[str, str], rules: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Mask ``data`` by ``rules`` (item name → rule name). Returns the masked data and the items masked."""
    masked_items = [name for name in data if rules.get(name) in MASKING_RULES]
    masked = {
        name: MASKING_RULES[rules[name]](value) if name in masked_items else value for name, value in data.items()
    }
    return masked, masked_items


def grant_masking(items: Iterable[Mapping[str, Any]], chosen: Mapping[str, str]) -> dict[str, str]:
    """The rules a grant is issued with: each catalogue item's default rule, overridden by what the
    provider's approver ``chosen`` for this grant."""
    return {**{i["name"]: i["masking"] for i in items if i.get("masking")}, **chosen}


def effective_masking(granted: Mapping[str, str], items: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The rules an answer is masked by: the grant's, and ``full`` for every sensitive item the
    grant leaves without a rule — a sensitive item is never shown in clear by omission."""
    rules = dict(granted)
    for item in items:
        if item.get("sensitive") and item["name"] not in rules:
            rules[item["name"]] = "full"
    return rules
