"""The alerting rules in deploy/monitoring name only metrics the code really exports."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from services.audit.anomalies import AlertMetrics
from services.audit.completeness import CompletenessMetrics
from services.audit.messaging import UnreplayedDeadLetters
from services.common.bus import BusMetrics
from services.common.outbox import Outbox
from services.registry.applications.calendar import WorkingCalendar

RULES = Path(__file__).resolve().parents[2] / "deploy" / "monitoring" / "tongban-alerts.yml"
METRIC = re.compile(r"\btongban_[a-z0-9_]+\b")


def exported_names() -> set[str]:
    """The sample names the platform's own metrics expose, as Prometheus scrapes them."""
    registry = CollectorRegistry()
    bus = BusMetrics(registry)
    bus.dead_letters.labels("t", "g").inc()  # labelled metrics show samples once a child exists
    bus.consumer_lag.labels("g", "t", "0").set(1)
    Outbox(object, None, None, registry=registry)  # type: ignore[arg-type]
    UnreplayedDeadLetters(None, registry)  # type: ignore[arg-type]
    WorkingCalendar({}, registry).fallbacks.labels(year="2099").inc()
    AlertMetrics(registry)
    CompletenessMetrics(registry)
    exposition = generate_latest(registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and not line.startswith("#")}


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_metric_an_alert_uses_is_exported() -> None:
    exported = exported_names()
    used = {name for rule in rules() for name in METRIC.findall(rule["expr"])}
    assert used, "the rules name no tongban metric"
    assert used <= exported, f"not exported: {sorted(used - exported)}; exported: {sorted(exported)}"


def test_dead_letters_are_alerted_on_both_ways() -> None:
    by_metric = {name: rule for rule in rules() for name in METRIC.findall(rule["expr"])}
    assert "tongban_bus_dead_letters_total" in by_metric
    assert "tongban_audit_dead_letters_unreplayed" in by_metric
    for rule in rules():
        assert rule["alert"].startswith("Tongban") and rule["annotations"]["summary"]


def test_anomaly_alerts_are_alerted_on() -> None:
    used = {name for rule in rules() for name in METRIC.findall(rule["expr"])}
    assert {"tongban_audit_alerts_raised_total", "tongban_audit_alerts_open"} <= used
