"""The alerting rules in deploy/monitoring name only metrics the code really exports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.metrics import exported_names, selected_metrics

RULES = Path(__file__).resolve().parents[2] / "deploy" / "monitoring" / "tongban-alerts.yml"


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_metric_an_alert_uses_is_exported() -> None:
    exported = exported_names()
    used = {name for rule in rules() for name in selected_metrics(rule["expr"])}
    assert used, "the rules name no tongban metric"
    assert used <= exported, f"not exported: {sorted(used - exported)}; exported: {sorted(exported)}"


def test_dead_letters_are_alerted_on_both_ways() -> None:
    by_metric = {name: rule for rule in rules() for name in selected_metrics(rule["expr"])}
    assert "tongban_bus_dead_letters_total" in by_metric
    assert "tongban_audit_dead_letters_unreplayed" in by_metric
    for rule in rules():
        assert rule["alert"].startswith("Tongban") and rule["annotations"]["summary"]


def test_anomaly_alerts_are_alerted_on() -> None:
    used = {name for rule in rules() for name in selected_metrics(rule["expr"])}
    assert {"tongban_audit_alerts_raised_total", "tongban_audit_alerts_open"} <= used
