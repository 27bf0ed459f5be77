"""Provider backends (数据源): where the connector looks a subject up — the demo data in its own
schema, an HTTP service of the department, or any SQL database. Each backend has a concurrency
limit, metrics (``tongban_connector_backend_*``) and a health state for ``/readyz``.

A backend's failure is a :class:`BackendError`; the reply carries it as ``ExchangeReply.ERROR``
with ``error = "<code>: <detail>"``, the code one of :class:`BackendFailure` (the exchange answers
the consumer 502 ``provider-error``). A detail never holds a subject or a value.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.connector.backend_config import BackendsConfig, BackendSpec, BackendType

log = logging.getLogger("tongban.connector.backends")
T = TypeVar("T")


class BackendFailure(StrEnum):
    """Codes of a provider error (the part of ``ExchangeReply.error`` before the colon)."""

    TIMEOUT = "backend_timeout"  # no answer within the backend's timeout_s
    UNAVAILABLE = "backend_unavailable"  # no connection to the backend
    FAILED = "backend_error"  # the backend answered with an error (HTTP status, SQL error)
    FIELD_MISSING = "backend_field_missing"  # the answer lacks a mapped field of an item asked
    BAD_ANSWER = "backend_bad_answer"  # not a JSON object, several rows, a nested value…
    NOT_CONFIGURED = "resource_not_configured"  # no backend for the resource asked


# Failures that say the backend cannot be reached, as opposed to one bad record.
UNREACHABLE = frozenset({BackendFailure.TIMEOUT, BackendFailure.UNAVAILABLE})
FAILING_AFTER = 3  # consecutive unreachable look-ups before /readyz reports the backend failing


class BackendError(Exception):
    def __init__(self, code: BackendFailure, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


@dataclass(frozen=True, slots=True)
class Ask:
    """One subject to look up, and the catalogue items asked (all granted)."""

    subject_type: str
    subject: str
    items: tuple[str, ...]


# A look-up's outcome: the subject's items (catalogue item → value), None (no record), or the error.
Outcome = dict[str, str] | None | BackendError


class BackendMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requests = Counter(
            "tongban_connector_backend_requests", "Look-ups sent to a backend", ["backend"], registry=registry
        )
        self.errors = Counter(
            "tongban_connector_backend_errors", "Look-ups that failed, by code", ["backend", "code"], registry=registry
        )
        self.latency = Histogram(
            "tongban_connector_backend_latency_seconds",
            "Time of one call to a backend",
            ["backend"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.in_flight = Gauge(
            "tongban_connector_backend_in_flight", "Calls to a backend under way", ["backend"], registry=registry
        )


@dataclass
class Health:
    """A backend's recent record, for ``/readyz`` (健康状态)."""

    consecutive_unreachable: int = 0
    last_error: str = ""

    @property
    def failing(self) -> bool:
        return self.consecutive_unreachable >= FAILING_AFTER


class Backend:
    """A configured backend: subclasses look one subject up (:meth:`fetch_one`), or override
    :meth:`look_up` for a whole batch (demo)."""

    uses_connection = False  # the demo looks up over the connector's own database connection

    def __init__(self, spec: BackendSpec, metrics: BackendMetrics) -> None:
        self.spec = spec
        self.metrics = metrics
        self.health = Health()
        self.limit = asyncio.Semaphore(spec.concurrency)
        # Label children looked up once: every batch passes here.
        self.requests = metrics.requests.labels(spec.name)
        self.in_flight = metrics.in_flight.labels(spec.name)
        self.latency = metrics.latency.labels(spec.name)

    async def look_up(self, db: Any, asks: Sequence[Ask]) -> list[Outcome]:
        """One outcome per ask, in order; never raises a :class:`BackendError`."""
        return list(await asyncio.gather(*(self.call(functools.partial(self.fetch_one, ask)) for ask in asks)))

    async def call(self, fetch: Callable[[], Awaitable[T]], *, subjects: int = 1) -> T | BackendError:
        """``fetch()`` within the concurrency limit, measured; a :class:`BackendError` is returned."""
        outcome: T | BackendError
        async with self.limit:
            self.requests.inc(subjects)
            self.in_flight.inc()
            started = time.perf_counter()
            try:
                outcome = await fetch()
            except BackendError as err:
                outcome = err
            finally:
                self.latency.observe(time.perf_counter() - started)
                self.in_flight.dec()
        self.record(outcome)
        return outcome

    def record(self, outcome: object) -> None:
        if isinstance(outcome, BackendError):
            self.metrics.errors.labels(self.spec.name, outcome.code).inc()
            self.health.last_error = str(outcome)
            log.warning("backend look-up failed", extra={"ctx_backend": self.spec.name, "ctx_error": str(outcome)})
            if outcome.code in UNREACHABLE:
                self.health.consecutive_unreachable += 1
                return
        self.health.consecutive_unreachable = 0

    async def fetch_one(self, ask: Ask) -> Outcome:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None

    def items(self, fields: Mapping[str, Any], ask: Ask) -> dict[str, str]:
        """The asked items of a backend record by the configured mapping; a mapped field the
        record lacks is a provider error (the backend changed), an item not mapped is left out."""
        wanted = set(ask.items)
        found: dict[str, str] = {}
        for source, item in self.spec.mapping.items():
            if item not in wanted:
                continue
            if source not in fields:
                raise BackendError(BackendFailure.FIELD_MISSING, f"{self.spec.name}: no field {source!r} for {item}")
            value = fields[source]
            if value is None:  # the provider holds no value for this item
                continue
            found[item] = as_text(value, source, self.spec.name)
        return found


def as_text(value: Any, source: str, backend: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise BackendError(BackendFailure.BAD_ANSWER, f"{backend}: field {source!r} is not a single value")


# --------------------------------------------------------------------------- demo

FIND_RESIDENTS = (
    "SELECT id_number, name, gender, birth_date, address FROM connector.residents WHERE id_number = ANY($1::text[])"
)


def record_items(resident: Mapping[str, Any]) -> dict[str, str]:
    return {
        "姓名": resident["name"],
        "性别": resident["gender"],
        "出生日期": resident["birth_date"].isoformat(),
        "户籍地址": resident["address"],
        "公民身份号码": resident["id_number"],
    }


class DemoBackend(Backend):
    """The synthetic 户籍 records in ``connector.residents``: one query for a whole batch."""

    uses_connection = True

    async def look_up(self, db: Any, asks: Sequence[Ask]) -> list[Outcome]:
        ids = [a.subject for a in asks if a.subject_type == "id_card"]

        async def batch() -> dict[str, Any]:
            return {r["id_number"]: r for r in await db.fetch(FIND_RESIDENTS, ids)} if ids else {}

        found = await self.call(batch, subjects=len(asks))
        if isinstance(found, BackendError):
            return [found] * len(asks)
        outcomes: list[Outcome] = []
        for ask in asks:
            resident = found.get(ask.subject) if ask.subject_type == "id_card" else None
            outcomes.append(record_items(resident) if resident is not None else None)
        return outcomes


# --------------------------------------------------------------------------- http


class HttpBackend(Backend):
    """``GET`` the URL template with the subject (and items) percent-encoded into path or query;
    200 with a JSON object is the record, 404 is "no record", anything else an error. Redirects
    are not followed: the host stays the configured one."""

    def __init__(self, spec: BackendSpec, metrics: BackendMetrics) -> None:
        super().__init__(spec, metrics)
        headers = {spec.auth_header: spec.auth_value} if spec.auth_header else {}
        self.client = httpx.AsyncClient(
            headers=headers,
            timeout=spec.timeout_s,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=spec.concurrency),
        )
        self.source_of = {item: source for source, item in spec.mapping.items()}

    def url(self, ask: Ask) -> str:
        fields = [self.source_of[i] for i in ask.items if i in self.source_of]
        return self.spec.url.format(
            subject=quote(ask.subject, safe=""),
            subject_type=quote(ask.subject_type, safe=""),
            items=",".join(quote(i, safe="") for i in ask.items),
            fields=",".join(quote(f, safe="") for f in fields),
        )

    async def fetch_one(self, ask: Ask) -> Outcome:
        name = self.spec.name
        try:
            # httpx's timeout bounds each phase; this bounds the whole call (a server dripping bytes).
            async with asyncio.timeout(self.spec.timeout_s):
                response = await self.client.get(self.url(ask))
        except (httpx.TimeoutException, TimeoutError):
            raise BackendError(BackendFailure.TIMEOUT, f"{name}: no answer within {self.spec.timeout_s:g} s") from None
        except httpx.TransportError as err:
            raise BackendError(BackendFailure.UNAVAILABLE, f"{name}: {type(err).__name__}") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise BackendError(BackendFailure.FAILED, f"{name}: HTTP {response.status_code}")
        try:
            record = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise BackendError(BackendFailure.BAD_ANSWER, f"{name}: the answer is not JSON") from None
        if not isinstance(record, dict):
            raise BackendError(BackendFailure.BAD_ANSWER, f"{name}: the answer is not a JSON object")
        return self.items(record, ask)

    async def aclose(self) -> None:
        await self.client.aclose()


# --------------------------------------------------------------------------- sql


class SqlBackend(Backend):
    """The configured query with ``:subject`` (and ``:subject_type``) bound; one row is the
    record, none is "no record", several are an error (the query does not identify one person)."""

    def __init__(self, spec: BackendSpec, metrics: BackendMetrics) -> None:
        super().__init__(spec, metrics)
        self.engine: AsyncEngine = create_async_engine(
            spec.url, pool_size=spec.concurrency, max_overflow=0, pool_pre_ping=True
        )
        self.statement = text(spec.query)
        self.parameters = set(self.statement.compile().params)

    async def fetch_one(self, ask: Ask) -> Outcome:
        name = self.spec.name
        values = {"subject": ask.subject, "subject_type": ask.subject_type}
        try:
            async with asyncio.timeout(self.spec.timeout_s):
                async with self.engine.connect() as connection:
                    result = await connection.execute(
                        self.statement, {k: v for k, v in values.items() if k in self.parameters}
                    )
                    rows = result.mappings().fetchmany(2)
        except TimeoutError:
            raise BackendError(BackendFailure.TIMEOUT, f"{name}: no answer within {self.spec.timeout_s:g} s") from None
        except (OSError, DBAPIError) as err:
            if isinstance(err, OSError) or err.connection_invalidated or is_connection_error(err):
                raise BackendError(BackendFailure.UNAVAILABLE, f"{name}: {type(err).__name__}") from None
            raise BackendError(BackendFailure.FAILED, f"{name}: {type(err.orig).__name__}") from None
        except SQLAlchemyError as err:
            raise BackendError(BackendFailure.FAILED, f"{name}: {type(err).__name__}") from None
        if not rows:
            return None
        if len(rows) > 1:
            raise BackendError(BackendFailure.BAD_ANSWER, f"{name}: the query found several rows for one subject")
        return self.items(dict(rows[0]), ask)

    async def aclose(self) -> None:
        await self.engine.dispose()


def is_connection_error(err: DBAPIError) -> bool:
    """asyncpg's connection failures arrive as ``OSError`` or its own ``ConnectionError`` kinds."""
    orig = err.orig
    return isinstance(orig, OSError | ConnectionError) or "Connection" in type(orig).__name__


KINDS: dict[BackendType, type[Backend]] = {
    BackendType.DEMO: DemoBackend,
    BackendType.HTTP: HttpBackend,
    BackendType.SQL: SqlBackend,
}


class Backends:
    """The configured backends by resource (lifespan-owned: :func:`open_backends`)."""

    def __init__(self, config: BackendsConfig, registry: CollectorRegistry | None = None) -> None:
        metrics = BackendMetrics(registry)
        self.by_name = {spec.name: KINDS[spec.type](spec, metrics) for spec in config.backends}
        self.routes = config.routes
        self.default = self.by_name[config.default] if config.default else None

    def for_resource(self, resource_code: str) -> Backend | None:
        name = self.routes.get(resource_code)
        return self.by_name[name] if name is not None else self.default

    async def look_up(self, db: Any, asks: Sequence[tuple[str, Ask]]) -> list[Outcome]:
        """The outcome of each ``(resource_code, ask)``, in order. Backends are asked at the same
        time, except those sharing the connector's connection ``db``, which take turns."""
        outcomes: list[Outcome] = [None] * len(asks)
        groups: dict[str, list[int]] = {}
        for index, (resource, _) in enumerate(asks):
            backend = self.for_resource(resource)
            if backend is None:
                outcomes[index] = BackendError(BackendFailure.NOT_CONFIGURED, f"no backend for resource {resource}")
            else:
                groups.setdefault(backend.spec.name, []).append(index)

        async def ask(backend: Backend, indexes: list[int]) -> None:
            for index, outcome in zip(indexes, await backend.look_up(db, [asks[i][1] for i in indexes]), strict=True):
                outcomes[index] = outcome

        async def on_connection() -> None:
            for name, indexes in groups.items():
                if self.by_name[name].uses_connection:
                    await ask(self.by_name[name], indexes)

        others = [(self.by_name[n], i) for n, i in groups.items() if not self.by_name[n].uses_connection]
        if not others:  # the demo data alone (make run, the benchmark): no tasks to make
            await on_connection()
            return outcomes
        # A task group: if the connector's own database fails, the other look-ups are cancelled too.
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(on_connection())
                for backend, indexes in others:
                    tasks.create_task(ask(backend, indexes))
        except ExceptionGroup as group:
            raise group.exceptions[0] from None  # the handler retries on the error itself, as before
        return outcomes

    async def check(self) -> None:
        """Readiness: raises naming each backend that failed its last look-ups for lack of an answer."""
        failing = [f"{name} ({b.health.last_error})" for name, b in self.by_name.items() if b.health.failing]
        if failing:
            raise RuntimeError("backend unreachable: " + "; ".join(failing))

    async def aclose(self) -> None:
        for backend in self.by_name.values():
            await backend.aclose()


@contextlib.asynccontextmanager
async def open_backends(config: BackendsConfig, registry: CollectorRegistry | None = None) -> AsyncIterator[Backends]:
    """The backends of ``config`` with their clients (HTTP clients, engines), closed on exit."""
    backends = Backends(config, registry)
    try:
        yield backends
    finally:
        await backends.aclose()
