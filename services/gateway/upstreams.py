"""Upstreams (上游服务) of the gateway: the replicas of each service behind it, which one to ask,
and the forwarding of one request with failover.

Routing is fixed: a route names its service, the settings name the service's replicas, and nothing
a client sends can choose another address. Health is checked passively: a replica that cannot be
reached is set aside for ``cooloff_s`` and the others get its traffic; after the cool-off it gets
one request again, so a dead replica costs at most one failed attempt per cool-off, and that
attempt is retried on another replica when it is safe to (:func:`retryable`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
import yarl
from prometheus_client import CollectorRegistry, Counter, Gauge

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded (also the ones a
# Connection header names, see :func:`response_headers`). Content-Length is set again by the
# answer we build; Server and Date are the gateway's own.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
        "content-length",
        "server",
        "date",
    }
)
# Safe to send twice (RFC 9110 §9.2.2), and a POST that carries an Idempotency-Key (the services
# answer a repeat from what they stored).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def retryable(method: str, headers: Mapping[str, str]) -> bool:
    """Whether a request may be sent again after its connection broke mid-way (it may have been
    processed). A request that never reached a replica (connect failed) is always sent again."""
    return method in IDEMPOTENT_METHODS or (method == "POST" and bool(headers.get("idempotency-key")))


def response_headers(headers: Mapping[str, str], connection: str | None) -> dict[str, str]:
    """The upstream answer's end-to-end headers: hop-by-hop ones dropped, and those its
    ``Connection`` header names (RFC 9110 §7.6.1)."""
    named = {n.strip().lower() for n in (connection or "").split(",") if n.strip()}
    return {k.lower(): v for k, v in headers.items() if k.lower() not in HOP_BY_HOP and k.lower() not in named}


def replica_urls(setting: str) -> list[str]:
    """The replicas of one service from its setting: one base URL, or several separated by commas
    (``http://a:8002,http://b:8002``). Each is an absolute http(s) URL without query or fragment."""
    urls = [u.strip().rstrip("/") for u in setting.split(",") if u.strip()]
    if not urls:
        raise ValueError("no upstream URL")
    for url in urls:
        parsed = yarl.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host or parsed.query_string or parsed.fragment:
            raise ValueError(f"not an http(s) base URL: {url!r}")
    if len(set(urls)) != len(urls):
        raise ValueError(f"a replica is named twice: {setting!r}")
    return urls


@dataclass
class Replica:
    url: str
    down_until: float = 0.0  # monotonic time; 0: healthy


@dataclass
class Upstream:
    """One service's replicas, asked in turn (round-robin) among the healthy ones."""

    service: str
    replicas: list[Replica]
    cooloff_s: float
    clock: Callable[[], float] = time.monotonic
    turn: itertools.count[int] = field(default_factory=itertools.count)

    def order(self) -> list[Replica]:
        """The replicas to try, in order: the healthy ones starting from the next in turn, then those
        cooling off (soonest back first), so that a request is never refused while one may answer."""
        now = self.clock()
        healthy = [r for r in self.replicas if r.down_until <= now]
        resting = sorted((r for r in self.replicas if r.down_until > now), key=lambda r: r.down_until)
        if healthy:  # turns among the healthy only: a dead replica's share is spread evenly
            start = next(self.turn) % len(healthy)
            healthy = healthy[start:] + healthy[:start]
        return healthy + resting

    def mark_down(self, replica: Replica) -> None:
        replica.down_until = self.clock() + self.cooloff_s

    def mark_up(self, replica: Replica) -> None:
        replica.down_until = 0.0


class UpstreamFailed(Exception):
    """No replica answered: ``timeout`` says whether the last one timed out (504) rather than
    could not be reached (502)."""

    def __init__(self, service: str, detail: str, *, timeout: bool) -> None:
        super().__init__(detail)
        self.service = service
        self.timeout = timeout


class UpstreamMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "tongban_gateway_upstream_attempts",
            "Requests sent to an upstream replica, by outcome (ok, connect_error, broken, timeout)",
            ["service", "replica", "outcome"],
            registry=registry,
        )
        self.failovers = Counter(
            "tongban_gateway_upstream_failovers",
            "Requests sent again to another replica after a connection error",
            ["service"],
            registry=registry,
        )
        self.healthy = Gauge(
            "tongban_gateway_upstream_healthy_replicas",
            "Replicas of a service not set aside after a connection error (as seen when last asked)",
            ["service"],
            registry=registry,
        )


class Upstreams:
    """Every service's replicas, the keep-alive pool shared by them, and the forwarding of requests.
    Owned by the gateway's lifespan (``app.state.upstreams``)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        services: Mapping[str, str],
        *,
        cooloff_s: float,
        registry: CollectorRegistry,
    ) -> None:
        self.session = session
        self.by_service = {
            name: Upstream(name, [Replica(u) for u in replica_urls(setting)], cooloff_s)
            for name, setting in services.items()
        }
        self.metrics = UpstreamMetrics(registry)
        for name, upstream in self.by_service.items():
            self.metrics.healthy.labels(name).set(len(upstream.replicas))

    async def send(
        self,
        service: str,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        follow_redirects: bool = True,
    ) -> aiohttp.ClientResponse:
        """Send the request to a replica of ``service`` and return its response, whose body is still
        to be read (the caller releases it). A replica that cannot be reached is set aside and the
        next one tried; a connection that broke after the request was sent is retried only for a
        :func:`retryable` request. Raises :class:`UpstreamFailed` when no replica answered.

        A redirect of an API service (Starlette's trailing-slash one names the replica's own
        address) is followed here; the console's (``follow_redirects=False``) are the browser's to
        follow: they name pages by path, and the browser must see the new address."""
        upstream = self.by_service[service]
        may_repeat = retryable(method, headers)
        last = ""
        for attempt, replica in enumerate(upstream.order()):
            if attempt:
                self.metrics.failovers.labels(service).inc()
            # encoded=True: yarl must not re-quote or normalise the target the gateway checked.
            url = yarl.URL(replica.url + target, encoded=True)
            try:
                response = await self.session.request(
                    method, url, data=body, headers=headers, allow_redirects=follow_redirects
                )
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as err:
                # Never connected: nothing was sent, so any method may go elsewhere.
                self.failed(upstream, replica, "connect_error")
                last = f"{replica.url}: {err}"
                continue
            except TimeoutError as err:
                # It took the request and did not answer in time: it may be working on it.
                self.metrics.attempts.labels(service, replica.url, "timeout").inc()
                raise UpstreamFailed(service, f"{replica.url}: timeout", timeout=True) from err
            except aiohttp.ClientError as err:
                # Connection reset or closed mid-way (a killed replica, a stale keep-alive socket).
                self.failed(upstream, replica, "broken")
                last = f"{replica.url}: {err}"
                if may_repeat:
                    continue
                raise UpstreamFailed(service, last, timeout=False) from err
            upstream.mark_up(replica)
            self.metrics.attempts.labels(service, replica.url, "ok").inc()
            self.report_health(upstream)
            return response
        raise UpstreamFailed(service, last or "no replica", timeout=False)

    def failed(self, upstream: Upstream, replica: Replica, outcome: str) -> None:
        upstream.mark_down(replica)
        self.metrics.attempts.labels(upstream.service, replica.url, outcome).inc()
        self.report_health(upstream)

    def report_health(self, upstream: Upstream) -> None:
        now = upstream.clock()
        healthy = sum(1 for r in upstream.replicas if r.down_until <= now)
        self.metrics.healthy.labels(upstream.service).set(healthy)


async def body_of(response: aiohttp.ClientResponse, chunk_bytes: int = 64 * 1024) -> AsyncIterator[bytes]:
    """The upstream body as it arrives; the connection goes back to the pool at the end."""
    try:
        async for chunk in response.content.iter_chunked(chunk_bytes):
            yield chunk
    finally:
        response.release()
