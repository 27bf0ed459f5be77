"""The metric names the platform exports, as Prometheus scrapes them, and the names a PromQL
expression selects: what the alerting rules (``deploy/monitoring``) and the dashboard
(``deploy/grafana``) may name."""

from __future__ import annotations

import promql_parser
from prometheus_client import CollectorRegistry, generate_latest

from services.audit.anomalies import AlertMetrics
from services.audit.completeness import CompletenessMetrics
from services.audit.messaging import UnreplayedDeadLetters
from services.audit.retention import RetentionMetrics
from services.common.bus import BusMetrics
from services.common.calendar import WorkingCalendar
from services.common.http import ServiceMiddleware
from services.common.outbox import Outbox
from services.connector.backends import BackendMetrics
from services.connector.feeds import FeedMetrics as ConnectorFeedMetrics
from services.connector.service import LookupMetrics
from services.exchange.callbacks import CallbackMetrics
from services.exchange.evidence import EvidenceMetrics
from services.exchange.feeds import FeedMetrics as ExchangeFeedMetrics
from services.exchange.service import ExchangeMetrics
from services.gateway.ratelimit import RateLimiter
from services.gateway.upstreams import UpstreamMetrics


def exported_names() -> set[str]:
    """Sample names (``_total``, ``_bucket``… included) of every metric the services export."""
    registry = CollectorRegistry()
    bus = BusMetrics(registry)
    bus.dead_letters.labels("t", "g").inc()  # labelled metrics show samples once a child exists
    bus.consumer_lag.labels("g", "t", "0").set(1)
    bus.consumer_restarts.labels("g", "no-coordinator").inc()
    Outbox(object, None, None, registry=registry)  # type: ignore[arg-type]
    UnreplayedDeadLetters(None, registry)  # type: ignore[arg-type]
    LookupMetrics(registry)
    WorkingCalendar({}, registry, "registry").fallbacks.labels(year="2099").inc()
    WorkingCalendar({}, registry, "audit").fallbacks.labels(year="2099").inc()
    AlertMetrics(registry)
    CompletenessMetrics(registry)
    RetentionMetrics(registry, 60)
    upstream = UpstreamMetrics(registry)
    upstream.failovers.labels("exchange").inc()
    upstream.healthy.labels("exchange").set(1)
    limiter = RateLimiter(None, None, registry)  # type: ignore[arg-type]
    limiter.unavailable.inc()
    limiter.limited.labels("api").inc()
    backend = BackendMetrics(registry)
    backend.requests.labels("b").inc()
    backend.errors.labels("b", "backend_timeout").inc()
    backend.latency.labels("b").observe(0.01)
    backend.in_flight.labels("b").set(0)
    evidence = EvidenceMetrics(registry)
    evidence.bundles.labels("completed").inc()
    evidence.materials.labels("fetched").inc()
    evidence.latency.observe(0.1)
    exchange = ExchangeMetrics(registry)
    exchange.extra_items.labels("p").inc()
    CallbackMetrics(registry).attempts.labels("failed").inc()
    feeds = ExchangeFeedMetrics(registry)
    feeds.pages.labels("changes").inc()
    feeds.changes.labels("r").inc()
    feeds.undecodable.labels("r").inc()
    connector_feeds = ConnectorFeedMetrics(registry)
    connector_feeds.changes.labels("r", "published").inc()
    connector_feeds.poll_errors.labels("r").inc()
    http = ServiceMiddleware(None, max_body_bytes=1024, registry=registry, service="s")  # type: ignore[arg-type]
    http.requests.labels("s", "GET", "/r", "200").inc()
    http.latency.labels("s", "GET", "/r").observe(0.01)
    exposition = generate_latest(registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and not line.startswith("#")}


def selected_metrics(expr: str) -> set[str]:
    """The metric names ``expr`` selects, parsed as PromQL (by promql-parser, the Rust parser of
    GreptimeDB): a syntax error raises ``ValueError``, so an expression that Prometheus would
    refuse fails the test that asks."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr!r}"
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names
