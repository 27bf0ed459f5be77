"""Provider backends (数据源): the HTTP backend against a real HTTP server started here, the SQL
backend against the real test PostgreSQL (a scratch schema, dropped after); replies signed and
deduplicated as with the demo data, only the items asked returned, failures coded."""

from __future__ import annotations

import asyncio
import base64
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import driver_connection
from services.common.pb import exchange_pb2
from services.connector.backend_config import BackendsConfig, parse_backends
from services.connector.backends import FAILING_AFTER, Ask, BackendError, BackendFailure, Backends, open_backends
from services.connector.service import LookupMetrics, Responder, signed_payload
from tests.connector.conftest import SUBJECT, Provider

DEPT = "111101000000198608"
SCHEMA = "backend_scratch"  # in this worker's own test database
Reply = exchange_pb2.ExchangeReply


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_backend(base: str, path: str = "residents", **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "resources": [f"R-{path}"],
        "url": f"{base}/{path}/{{subject}}?fields={{fields}}&items={{items}}",
        "auth_header": "Authorization",
        "auth_env": "HUKOU_TOKEN",
        "timeout_s": 0.3,
        "fields": {"xm": "姓名", "csrq": "出生日期", "dz": "户籍地址", "hyzk": "婚姻状况"},
        **extra,
    }


def config(**backends: dict[str, Any]) -> BackendsConfig:
    return parse_backends({"backends": backends}, "test.toml", {"HUKOU_TOKEN": "Bearer t0ken", "DB_PASSWORD": ""})


def ask(subject: str = SUBJECT, items: tuple[str, ...] = ("姓名", "户籍地址")) -> Ask:
    return Ask("id_card", subject, items)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


# --------------------------------------------------------------------------- HTTP backend


async def test_the_http_backend_returns_the_items_asked_and_signs_them(
    tier_engine: AsyncEngine, provider: tuple[Provider, str]
) -> None:
    seen, base = provider
    registry = CollectorRegistry()
    key = Ed25519PrivateKey.generate()
    async with open_backends(config(hukou=http_backend(base)), registry) as backends:
        who = Responder(DEPT, "k1", key, LookupMetrics(registry), backends=backends)
        request = exchange_pb2.ExchangeRequest(
            query_id=str(uuid.uuid4()),
            resource_code="R-residents",
            provider_dept=DEPT,
            subject_type="id_card",
            subject_value=SUBJECT,
            fields=["姓名", "户籍地址"],
        )
        raw = request.SerializeToString()
        async with driver_connection(tier_engine) as db:
            [first] = await who.answer_once(db, [(raw, request)])
            [again] = await who.answer_once(db, [(raw, request)])
    reply = Reply.FromString(first.value)
    assert reply.status == Reply.OK
    # Only the items asked: not 出生日期 nor 婚姻状况, which the backend also sent.
    assert dict(reply.data) == {"姓名": "王芳", "户籍地址": "北京市东城区建国路1号"}
    key.public_key().verify(base64.b64decode(reply.signature), signed_payload(reply.request_hash, dict(reply.data)))
    # Answered once: the redelivery got the stored reply, the backend was called once.
    assert again == first and len(seen.paths) == 1
    assert seen.auth == ["Bearer t0ken"]
    assert seen.paths[0] == (
        f"/residents/{SUBJECT}?fields=xm,dz&items=%E5%A7%93%E5%90%8D,%E6%88%B7%E7%B1%8D%E5%9C%B0%E5%9D%80"
    )
    assert sample(registry, "tongban_connector_backend_requests_total", backend="hukou") == 1
    assert sample(registry, "tongban_connector_backend_latency_seconds_count", backend="hukou") == 1
    assert sample(registry, "tongban_connector_backend_in_flight", backend="hukou") == 0


async def test_a_subject_cannot_change_the_url_beyond_its_own_segment(provider: tuple[Provider, str]) -> None:
    seen, base = provider
    async with open_backends(config(hukou=http_backend(base))) as backends:
        [outcome] = await backends.look_up(None, [("R-residents", ask("../admin?x=1#"))])
    assert outcome is None  # the server's 404: no such person
    assert seen.paths[0].startswith("/residents/..%2Fadmin%3Fx%3D1%23?fields=")


async def test_http_failures_are_provider_errors_with_a_code(provider: tuple[Provider, str]) -> None:
    _, base = provider
    registry = CollectorRegistry()
    backends_config = config(
        slow=http_backend(base, "slow"),
        error=http_backend(base, "error"),
        text=http_backend(base, "text"),
        partial=http_backend(base, "partial"),
        nested=http_backend(base, "nested"),
        down=http_backend(f"http://127.0.0.1:{closed_port()}", "down"),
    )
    async with open_backends(backends_config, registry) as backends:
        outcomes = await backends.look_up(
            None,
            [
                ("R-slow", ask()),
                ("R-error", ask()),
                ("R-text", ask()),
                ("R-partial", ask(items=("姓名", "出生日期"))),
                ("R-partial", ask(items=("姓名",))),  # the missing field is not one asked
                ("R-nested", ask()),
                ("R-down", ask()),
                ("R-unknown", ask()),
            ],
        )
    codes = [o.code if isinstance(o, BackendError) else o for o in outcomes]
    assert codes == [
        BackendFailure.TIMEOUT,
        BackendFailure.FAILED,
        BackendFailure.BAD_ANSWER,
        BackendFailure.FIELD_MISSING,
        {"姓名": "王芳"},
        BackendFailure.BAD_ANSWER,
        BackendFailure.UNAVAILABLE,
        BackendFailure.NOT_CONFIGURED,
    ]
    assert str(outcomes[3]) == "backend_field_missing: partial: no field 'csrq' for 出生日期"
    assert str(outcomes[1]) == "backend_error: error: HTTP 500"
    assert sample(registry, "tongban_connector_backend_errors_total", backend="slow", code="backend_timeout") == 1


async def test_an_error_reply_carries_the_code_to_the_exchange(provider: tuple[Provider, str]) -> None:
    _, base = provider
    async with open_backends(config(partial=http_backend(base, "partial"))) as backends:
        who = Responder(DEPT, "k1", Ed25519PrivateKey.generate(), backends=backends)
        request = exchange_pb2.ExchangeRequest(
            query_id="q1", resource_code="R-partial", provider_dept=DEPT, subject_type="id_card",
            subject_value=SUBJECT, fields=["出生日期"],
        )  # fmt: skip
        [reply] = await who.answer(None, [(request.SerializeToString(), request)])
    assert reply.status == Reply.ERROR and reply.error.startswith("backend_field_missing: ")
    assert not reply.data and not reply.signature


async def test_a_null_value_is_an_item_the_provider_does_not_hold(provider: tuple[Provider, str]) -> None:
    _, base = provider
    async with open_backends(config(null=http_backend(base, "null"))) as backends:
        [outcome] = await backends.look_up(None, [("R-null", ask(items=("姓名", "婚姻状况")))])
    assert outcome == {"姓名": "王芳"}


async def test_the_concurrency_limit_holds_and_health_turns_failing(provider: tuple[Provider, str]) -> None:
    seen, base = provider
    registry = CollectorRegistry()
    backends_config = config(
        slow=http_backend(base, "slow", concurrency=2, timeout_s=5.0),
        hanging=http_backend(base, "slow", resources=["R-hanging"], timeout_s=0.05),
    )
    async with open_backends(backends_config, registry) as backends:
        outcomes = await backends.look_up(None, [("R-slow", ask()) for _ in range(5)])
        assert all(o == {"姓名": "王芳", "户籍地址": "北京市东城区建国路1号"} for o in outcomes)
        assert seen.most_at_once == 2  # five asked at once, two at a time
        assert sample(registry, "tongban_connector_backend_requests_total", backend="slow") == 5

        await backends.check()  # healthy
        await backends.look_up(None, [("R-hanging", ask())] * (FAILING_AFTER - 1))
        await backends.check()  # not yet failing: fewer than FAILING_AFTER in a row
        await backends.look_up(None, [("R-hanging", ask())])
        with pytest.raises(RuntimeError, match="backend unreachable: hanging \\(backend_timeout: "):
            await backends.check()
    assert sample(registry, "tongban_connector_backend_errors_total", backend="hanging", code="backend_timeout") == (
        FAILING_AFTER
    )


# --------------------------------------------------------------------------- SQL backend


@pytest.fixture
async def scratch(tier_engine: AsyncEngine) -> AsyncIterator[str]:
    """A scratch schema with a marriage register (婚姻登记) table in the test database; the
    SQLAlchemy URL of that database. Dropped after the test."""
    async with driver_connection(tier_engine) as db:
        await db.execute(f"CREATE SCHEMA {SCHEMA}")
        await db.execute("CREATE TABLE backend_scratch.djb (sfzh text, xm text, djrq date, bz text)")
        await db.execute(
            "INSERT INTO backend_scratch.djb VALUES ($1, '王芳', '2015-05-20', NULL), ('twice', 'a', NULL, NULL), "
            "('twice', 'b', NULL, NULL)",
            SUBJECT,
        )
    try:
        yield tier_engine.url.render_as_string(hide_password=False)
    finally:
        async with driver_connection(tier_engine) as db:
            await db.execute(f"DROP SCHEMA {SCHEMA} CASCADE")


def sql_backend(url: str, query: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "sql",
        "resources": ["R-marriage"],
        "url": url,
        "query": query,
        "timeout_s": 2.0,
        "columns": {"xm": "姓名", "djrq": "登记日期", "bz": "备注"},
        **extra,
    }


async def test_the_sql_backend_binds_the_subject_and_maps_columns(scratch: str) -> None:
    url = scratch
    registry = CollectorRegistry()
    query = "SELECT xm, djrq, bz FROM backend_scratch.djb WHERE sfzh = :subject AND :subject_type = 'id_card'"
    async with open_backends(config(marriage=sql_backend(url, query)), registry) as backends:
        outcomes = await backends.look_up(
            None,
            [
                ("R-marriage", ask(items=("姓名", "登记日期", "备注"))),
                ("R-marriage", ask("110101199003070000")),
                ("R-marriage", ask("x' OR '1'='1")),  # bound, never formatted: nobody
                ("R-marriage", ask("twice")),
                ("R-marriage", Ask("passport", SUBJECT, ("姓名",))),
            ],
        )
    found, nobody, injected, twice, other_type = outcomes
    assert found == {"姓名": "王芳", "登记日期": "2015-05-20"}  # 备注 is NULL: held by nobody
    assert nobody is None and injected is None and other_type is None
    assert isinstance(twice, BackendError) and twice.code == BackendFailure.BAD_ANSWER
    assert sample(registry, "tongban_connector_backend_requests_total", backend="marriage") == 5


async def test_sql_failures_are_provider_errors_with_a_code(scratch: str, tier_engine: AsyncEngine) -> None:
    url = scratch
    down = tier_engine.url.set(host="127.0.0.1", port=closed_port(), query={}).render_as_string(hide_password=False)
    backends_config = config(
        missing=sql_backend(url, "SELECT xm FROM backend_scratch.djb WHERE sfzh = :subject", resources=["R-missing"]),
        slow=sql_backend(
            url,
            "SELECT xm, djrq, bz FROM backend_scratch.djb, pg_sleep(1) WHERE sfzh = :subject",
            resources=["R-slow"],
            timeout_s=0.2,
        ),
        broken=sql_backend(url, "SELECT xm FROM no_such_table WHERE sfzh = :subject", resources=["R-broken"]),
        down=sql_backend(down, "SELECT xm FROM t WHERE sfzh = :subject", resources=["R-down"]),
    )
    async with open_backends(backends_config) as backends:
        outcomes = await backends.look_up(
            None,
            [("R-missing", ask(items=("姓名", "登记日期"))), ("R-slow", ask()), ("R-broken", ask()), ("R-down", ask())],
        )
        # The pool recovers from the cancelled query: the next look-up works.
        [after] = await backends.look_up(None, [("R-missing", ask(items=("姓名",)))])
    codes = [o.code if isinstance(o, BackendError) else o for o in outcomes]
    assert codes == [
        BackendFailure.FIELD_MISSING,
        BackendFailure.TIMEOUT,
        BackendFailure.FAILED,
        BackendFailure.UNAVAILABLE,
    ]
    assert str(outcomes[0]) == "backend_field_missing: missing: no field 'djrq' for 登记日期"
    assert after == {"姓名": "王芳"}


async def test_demo_and_configured_backends_answer_side_by_side(
    tier_engine: AsyncEngine, provider: tuple[Provider, str]
) -> None:
    """The demo backend is one configured backend among others; each resource goes to its own."""
    _, base = provider
    demo = {"type": "demo", "resources": ["R-demo"]}
    backends = Backends(config(demo=demo, hukou=http_backend(base)))
    try:
        async with driver_connection(tier_engine) as db:
            outcomes = await backends.look_up(
                db, [("R-demo", ask("110101190001010000")), ("R-residents", ask()), ("R-other", ask())]
            )
    finally:
        await backends.aclose()
    assert outcomes[0] is None  # no such synthetic resident
    assert outcomes[1] == {"姓名": "王芳", "户籍地址": "北京市东城区建国路1号"}
    assert isinstance(outcomes[2], BackendError) and outcomes[2].code == BackendFailure.NOT_CONFIGURED


async def test_a_failure_of_the_connectors_own_database_is_raised_as_itself(
    tier_engine: AsyncEngine, provider: tuple[Provider, str]
) -> None:
    """The demo data's connection failing mid-batch fails the batch (the bus delivers it again),
    with the database's own error, not a group of them; the other look-ups are not left running."""
    _, base = provider
    lost = await asyncpg.connect(tier_engine.url.set(drivername="postgresql").render_as_string(hide_password=False))
    await lost.close()

    class LostMidBatch:
        """The connection fails once the HTTP look-up is under way."""

        async def fetch(self, *args: Any) -> Any:
            await asyncio.sleep(0.1)
            return await lost.fetch(*args)

    registry = CollectorRegistry()
    backends_config = config(
        demo={"type": "demo", "resources": ["R-demo"]}, slow=http_backend(base, "slow", timeout_s=5.0)
    )
    async with open_backends(backends_config, registry) as backends:
        with pytest.raises(asyncpg.InterfaceError, match="closed"):
            await backends.look_up(LostMidBatch(), [("R-demo", ask()), ("R-slow", ask())])
    assert sample(registry, "tongban_connector_backend_requests_total", backend="slow") == 1
    assert sample(registry, "tongban_connector_backend_in_flight", backend="slow") == 0  # cancelled, not left
