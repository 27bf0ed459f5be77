"""The audit service's own tier: its store and API against the real PostgreSQL (and Kafka where
messages travel), in a database of this module's own, migrated by Alembic and dropped at the end;
:func:`audit` runs the audit application in this process, over HTTP, with tokens signed here."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.audit import messaging, service
from services.audit.app import MIGRATIONS, create_app
from services.audit.config import AuditSettings
from services.audit.models import AuditRecord
from services.audit.service import CheckpointSigner
from services.common.bus import KafkaBus
from services.common.db import create_engine, migrate, session_factory
from services.common.keywrap import KeyWrap, new_kek
from tests.integration.helpers import eventually, started
from tests.stack import ROOT, create_database, drop_database, infra_env

# The tier's key-encryption key: the audit apps started here and the store tests' signer open the
# same sealed checkpoint key.
KEK = new_kek()
WRAP = KeyWrap(KEK)


async def signer(session: AsyncSession, origin: str) -> CheckpointSigner:
    """The log's checkpoint key, unsealed with the tier's KEK (made, sealed, the first time)."""
    return await service.signing_key(session, origin, WRAP)


@pytest.fixture(scope="module")
async def database_url() -> AsyncIterator[str]:
    """A fresh database for the module (the audit schema not yet created)."""
    url = await create_database(infra_env()["TONGBAN_DATABASE_URL"])
    try:
        yield url
    finally:
        await drop_database(url)


@pytest.fixture
async def empty_database() -> AsyncIterator[str]:
    """A database of the test's own, nothing created in it (for migration tests)."""
    url = await create_database(infra_env()["TONGBAN_DATABASE_URL"])
    try:
        yield url
    finally:
        await drop_database(url)


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=2)
    try:
        await migrate(engine, "audit", MIGRATIONS)
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@dataclass
class Audit:
    app: FastAPI
    settings: AuditSettings
    client: httpx.AsyncClient
    key: ECKey
    producer: KafkaBus

    def token(
        self, roles: Sequence[str], kind: str = "person", dept: str = "11110000000000001X", sub: str | None = None
    ) -> dict[str, str]:
        claims: dict[str, Any] = {
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "sub": sub or f"someone-{secrets.token_hex(3)}",
            "dept": dept,
            "exp": int(time.time()) + 600,
            "principal_type": kind,
            "roles": list(roles),
        }
        if kind == "system":
            claims["client_id"] = claims["sub"]
        return {"Authorization": "Bearer " + jwt.encode({"alg": "ES256", "kid": self.key.kid}, claims, self.key)}

    @property
    def auditor(self) -> dict[str, str]:
        return self.token(["auditor"])

    async def dead_letters(self, **params: str) -> list[dict[str, Any]]:
        response = await self.client.get("/v1/audit/dead-letters", params=params, headers=self.auditor)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    async def records(self, **params: str) -> list[dict[str, Any]]:
        response = await self.client.get("/v1/audit/events", params=params, headers=self.auditor)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    async def recorded(self, actor: str, n: int = 1) -> list[AuditRecord]:
        """The records of what ``actor`` did, once there are ``n``: the audit service's own events
        (a look-up of the trail, an alert acknowledged) reach the chain through its outbox and
        ``audit.events``, in a batch, a moment after the answer."""
        found: list[AuditRecord] = []

        async def arrived() -> bool:
            nonlocal found
            async with self.app.state.runtime.sessions() as session:
                query = select(AuditRecord).where(AuditRecord.actor == actor).order_by(AuditRecord.seq)
                found = list((await session.scalars(query)).all())
            return len(found) >= n

        await eventually(arrived, 30, f"{n} record(s) by {actor} in the trail")
        assert len(found) == n, [(r.action, r.event_id) for r in found]
        return found

    def unreplayed_gauge(self) -> float | None:
        value: float | None = self.app.state.metrics.get_sample_value("tongban_audit_dead_letters_unreplayed")
        return value

    async def replay(self, *args: str) -> tuple[int, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")}
        env |= {
            "TONGBAN_DATABASE_URL": self.settings.database_url,
            "TONGBAN_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,
            "TONGBAN_TOPIC_PREFIX": self.settings.topic_prefix,
            "TONGBAN_BUS": "kafka",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.audit", "dead-letters", "replay", *args,
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode is not None
        return process.returncode, output.decode()


@pytest.fixture(scope="module")
async def audit(database_url: str) -> AsyncIterator[Audit]:
    infra = infra_env()
    settings = AuditSettings(
        database_url=database_url,
        kafka_bootstrap=infra["TONGBAN_KAFKA_BOOTSTRAP"],
        topic_prefix=f"ta{secrets.token_hex(3)}.",
        bus="kafka",
        checkpoint_interval_s=0.5,  # the periodic checkpoint is seen within a test
        key_encryption_key=KEK,
    )
    key = ECKey.generate_key("P-256", parameters={"kid": "audit-test", "alg": "ES256"}, private=True)
    app = create_app(settings)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(messaging, "UNREPLAYED_EVERY_S", 0.3)  # the replay command runs in another process
        async with app.router.lifespan_context(app):
            app.state.runtime.verifier.use_keys(KeySet([key]))  # tokens signed here, not by a gateway
            producer = await started(settings.kafka_bootstrap)
            transport = httpx.ASGITransport(app=app)
            try:
                async with httpx.AsyncClient(transport=transport, base_url="http://audit") as client:
                    yield Audit(app, settings, client, key, producer)
            finally:
                await producer.stop()


SOURCE = Path(__file__).resolve().parent / "tlogverify"
BINARY = ROOT / "var" / "tlogverify" / "tlogverify"  # built, never committed


@pytest.fixture(scope="session")
def tlogverify() -> Path:
    """The Go verifier, built (Go's build cache makes a rebuild of unchanged sources instant)."""
    go = shutil.which("go")
    if go is None:
        pytest.fail(
            "the Go toolchain is needed to build tests/audit/tlogverify (the independent proof verifier): "
            "install Go 1.26 or later and put `go` on PATH"
        )
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    built = subprocess.run(
        [go, "build", "-o", str(BINARY), "."], cwd=SOURCE, env=env, capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, f"go build failed:\n{built.stderr}"
    return BINARY


def run_go(binary: Path, document: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary)], input=json.dumps(document), capture_output=True, text=True, timeout=30)
