"""The connector as it runs: pointed at a backend file (``TONGBAN_CONNECTOR_BACKENDS``), it answers
requests off the bus from the configured backend and the demo data side by side, and reports its
backends in ``/readyz`` and ``/metrics``; a request it cannot decode is dead-lettered over real
Kafka without the subject's identifier, and the requests after it are answered."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.bus import MemoryBus, Message, Subscription
from services.common.keywrap import new_kek
from services.common.pb import exchange_pb2
from services.connector.app import create_app
from services.connector.config import ConnectorSettings
from services.connector.models import Resident
from tests.connector.conftest import SUBJECT, Provider
from tests.integration.helpers import eventually, reread, started, unique
from tests.stack import infra_env

DEPT = "111101000000198608"
# One key-encryption key for the module: the connector's signing key, made at its first start,
# is committed to the tier's database and opens only with the KEK it was sealed under.
KEK = new_kek()
Reply = exchange_pb2.ExchangeReply


async def test_the_connector_answers_from_its_configured_backends(
    tier_engine: AsyncEngine, provider: tuple[Provider, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen, base = provider
    backends = tmp_path / "backends.toml"
    backends.write_text(
        f"""
default = "demo"
[backends.hukou]
type = "http"
resources = ["101010/000009"]
url = "{base}/residents/{{subject}}"
auth_header = "Authorization"
auth_env = "TEST_HUKOU_KEY"
[backends.hukou.fields]
xm = "姓名"
dz = "户籍地址"
[backends.demo]
type = "demo"
resources = []
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("TONGBAN_DATABASE_URL", tier_engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("TONGBAN_CONNECTOR_BACKENDS", str(backends))
    monkeypatch.setenv("TONGBAN_CONNECTOR_DEMO_POPULATION", "3")
    monkeypatch.setenv("TEST_HUKOU_KEY", "k-123")
    monkeypatch.setenv("TONGBAN_KEY_ENCRYPTION_KEY", KEK)
    settings = ConnectorSettings()
    bus = MemoryBus(settings.topic("dlq"))
    replies: asyncio.Queue[Reply] = asyncio.Queue()

    async def collect(batch: Sequence[Message]) -> None:
        for message in batch:
            replies.put_nowait(Reply.FromString(message.value))

    bus.subscribe(Subscription([settings.topic("exchange.replies")], collect, group="test-replies"))
    app = create_app(settings, bus)
    source_of: dict[str, str] = {}
    async with app.router.lifespan_context(app):
        # One of the demo population (seeded at start, or already there from an earlier start).
        async with app.state.runtime.sessions() as session:
            resident = (await session.scalars(select(Resident).limit(1))).one()
        asks = {
            "from-http": ("101010/000009", SUBJECT),
            "from-demo": ("101010/000001", resident.id_number),  # no backend listed: the default
        }
        for source, (resource, subject) in asks.items():
            query_id = str(uuid.uuid4())
            source_of[query_id] = source
            request = exchange_pb2.ExchangeRequest(
                query_id=query_id, resource_code=resource, provider_dept=DEPT,
                subject_type="id_card", subject_value=subject, fields=["姓名", "户籍地址"],
            )  # fmt: skip
            await bus.publish(Message(settings.topic(f"exchange.requests.{DEPT}"), request.SerializeToString(), b"k"))
        got = [await asyncio.wait_for(replies.get(), 10) for _ in asks]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://connector") as client:
            ready = await client.get("/readyz")
            metrics = (await client.get("/metrics")).text
    by_source = {source_of[reply.query_id]: reply for reply in got}
    assert dict(by_source["from-http"].data) == {"姓名": "王芳", "户籍地址": "北京市东城区建国路1号"}
    assert dict(by_source["from-demo"].data) == {"姓名": resident.name, "户籍地址": resident.address}
    assert all(reply.status == Reply.OK and reply.signature for reply in got)
    assert seen.auth == ["k-123"] and len(seen.paths) == 1
    assert ready.status_code == 200 and ready.json()["checks"]["backends"] == "ok"
    assert 'tongban_connector_backend_requests_total{backend="hukou"} 1.0' in metrics
    assert 'tongban_connector_backend_requests_total{backend="demo"} 1.0' in metrics
    assert 'tongban_connector_backend_in_flight{backend="hukou"} 0.0' in metrics


async def test_a_request_it_cannot_decode_is_dead_lettered_without_the_subject(
    tier_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never dropped, never copied: the dead letter on ``exchange.dlq`` says where the request is
    (its topic, partition and offset, where an operator re-reads it) and why, and holds no byte of
    the identifier; the next request on the same partition is answered."""
    bootstrap = infra_env()["TONGBAN_KAFKA_BOOTSTRAP"]
    monkeypatch.setenv("TONGBAN_DATABASE_URL", tier_engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("TONGBAN_KAFKA_BOOTSTRAP", bootstrap)
    monkeypatch.setenv("TONGBAN_TOPIC_PREFIX", f"t{uuid.uuid4().hex[:10]}.")
    monkeypatch.setenv("TONGBAN_CONNECTOR_DEMO_POPULATION", "3")
    monkeypatch.setenv("TONGBAN_KEY_ENCRYPTION_KEY", KEK)
    monkeypatch.delenv("TONGBAN_CONNECTOR_BACKENDS", raising=False)
    settings = ConnectorSettings()
    requests, dlq = settings.topic(f"exchange.requests.{DEPT}"), settings.topic("exchange.dlq")
    seen: list[Message] = []

    async def collect(batch: Sequence[Message]) -> None:
        seen.extend(batch)

    app = create_app(settings)  # its own KafkaBus, as deployed
    async with app.router.lifespan_context(app):
        reader = await started(
            bootstrap, Subscription([dlq, settings.topic("exchange.replies")], collect, group=unique("g"))
        )
        try:
            async with app.state.runtime.sessions() as session:
                resident = (await session.scalars(select(Resident).limit(1))).one()
            clear = resident.id_number.encode()

            def request(query_id: str) -> bytes:
                return exchange_pb2.ExchangeRequest(
                    query_id=query_id, resource_code="101010/000001", provider_dept=DEPT,
                    subject_type="id_card", subject_value=resident.id_number, fields=["姓名"],
                ).SerializeToString()  # fmt: skip

            bad, good = b"\xff" + request("q-bad"), request(str(uuid.uuid4()))
            producer = app.state.runtime.bus
            await producer.publish(Message(requests, bad, b"q-bad", {"request-id": "r-bad"}))
            await producer.publish(Message(requests, good, b"q-bad"))  # same key: same partition, after it

            def arrived(topic: str) -> list[Message]:
                return [m for m in seen if m.topic == topic]

            await eventually(lambda: bool(arrived(dlq)) and bool(arrived(settings.topic("exchange.replies"))), 60,
                             "the dead letter and the next request's reply")  # fmt: skip
        finally:
            await reader.stop()
    [letter] = arrived(dlq)
    assert letter.value == b"" and letter.key == b"q-bad"
    assert letter.headers["dlq-withheld"].startswith("personal data in clear")
    assert letter.headers["dlq-source"] == requests
    assert letter.headers["dlq-group"] == f"{settings.topic_prefix}connector.{DEPT}"
    assert letter.headers["dlq-reason"].startswith("undecodable request:")
    assert letter.headers["request-id"] == "r-bad"
    for part in (letter.value, letter.key or b"", *(f"{k}={v}".encode() for k, v in letter.headers.items())):
        assert clear not in part and clear[:-1] not in part, part
    again = await reread(bootstrap, requests, int(letter.headers["dlq-partition"]), int(letter.headers["dlq-offset"]))
    assert again.value == bad
    [reply] = [Reply.FromString(m.value) for m in arrived(settings.topic("exchange.replies"))]
    assert reply.status == Reply.OK and dict(reply.data) == {"姓名": resident.name}
