"""docs/operations.md tells an operator what every alert means and what to do about it."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "operations.md"
RULES = ROOT / "deploy" / "monitoring" / "tongban-alerts.yml"


def alert_sections() -> dict[str, str]:
    """Section heading (### Name) → its text, in the guide's "Alerts" chapter."""
    chapter = GUIDE.read_text(encoding="utf-8").split("\n## Alerts", 1)[1].split("\n## ", 1)[0]
    parts = re.split(r"^### (\S+)\s*$", chapter, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_alert_has_a_section_saying_what_it_means_and_what_to_do() -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
    }
    sections = alert_sections()
    assert alerts, "no alerting rules found"
    assert alerts <= set(sections), f"alerts without a section: {sorted(alerts - set(sections))}"
    for name, text in sections.items():
        # A section may describe a rule of a branch merged at the same time; it is still an alert.
        assert name.startswith("Tongban"), name
        assert "**Means:**" in text and "**Do:**" in text, name


def test_the_readme_links_the_guide() -> None:
    assert "(docs/operations.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
