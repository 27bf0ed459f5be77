"""The Grafana dashboard in deploy/grafana queries only metrics the code exports, and shows them all."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.metrics import exported_names, selected_metrics

DASHBOARDS = sorted((Path(__file__).resolve().parents[2] / "deploy" / "grafana").glob("*.json"))
# Grafana's variables, replaced by values of their kind before the query is parsed as PromQL.
INTERVAL_VARIABLE = re.compile(r"\$__(?:rate_interval|interval|range)\b")
VARIABLE = re.compile(r"\$\w+")
LABEL_VALUES = re.compile(r"label_values\((.+),\s*\w+\)")
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # Grafana's label_values(selector, label): the selector is the PromQL part.
            match = LABEL_VALUES.fullmatch(variable["definition"])
            assert match, f"variable {variable['name']}: only label_values(…) queries are expected"
            yield f"variable {variable['name']}", match[1]


def metrics_of(expr: str) -> set[str]:
    """The metrics a dashboard query selects; it must be valid PromQL once Grafana has put in its
    variables (an interval for ``$__rate_interval``, a regex for ``$service``)."""
    return selected_metrics(VARIABLE.sub(".*", INTERVAL_VARIABLE.sub("5m", expr)))


def family(sample: str) -> str:
    for suffix in SUFFIXES:
        if sample.endswith(suffix):
            return sample.removesuffix(suffix)
    return sample


@pytest.fixture(params=DASHBOARDS, ids=lambda path: path.name)
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(request.param.read_text(encoding="utf-8"))
    return document


def test_there_is_a_dashboard() -> None:
    assert DASHBOARDS, "deploy/grafana holds no dashboard"


def test_every_metric_a_query_names_is_exported(dashboard: dict[str, Any]) -> None:
    exported = exported_names()
    for where, expr in queries(dashboard):
        used = metrics_of(expr)
        assert used, f"{where}: {expr!r} selects no metric"
        assert used <= exported, f"{where}: not exported: {sorted(used - exported)}"


def test_every_exported_metric_is_on_the_dashboard() -> None:
    shown = {
        family(name)
        for path in DASHBOARDS
        for _, expr in queries(json.loads(path.read_text(encoding="utf-8")))
        for name in metrics_of(expr)
    }
    missing = {family(name) for name in exported_names()} - shown
    assert not missing, f"exported but on no dashboard: {sorted(missing)}"


def test_panels_are_distinct_and_use_the_chosen_data_source(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel.get("description"), f"{panel['title']}: say what it shows"
        # No data source uid of one Grafana: the dashboard imports into any.
        for source in (panel["datasource"], *(t["datasource"] for t in panel["targets"])):
            assert source == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]
