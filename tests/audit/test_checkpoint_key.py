"""The log's checkpoint key (签名密钥, Ed25519) is kept sealed under the key-encryption key, as the
gateway's and the connector's are: made sealed on a fresh database, a key an older version kept in
clear is sealed at start (its verifier key, and so every checkpoint it signed, unchanged), and a
start with another KEK, or none, stops clearly and changes nothing. Real PostgreSQL, a database
per test; the audit application in this process (its bus in memory: no message is involved)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from alembic import command
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from sqlalchemy import select, text

from services.audit import cli, notes, service
from services.audit.app import MIGRATIONS, create_app
from services.audit.config import AuditSettings
from services.audit.models import SigningKey
from services.common.db import alembic_config, create_engine, migrate, session_factory
from services.common.keywrap import KeyWrapError, new_kek
from services.common.pb import audit_pb2
from tests.audit.conftest import KEK, WRAP

ORIGIN = "seal.tongban.dev/audit"
BEFORE_SEALING = "5c2b1fe100e7"  # the audit revision before the sealed column


def settings_of(url: str, kek: str | None) -> AuditSettings:
    return AuditSettings(
        database_url=url,
        bus="memory",
        topic_prefix=f"tk{secrets.token_hex(3)}.",
        log_origin=ORIGIN,
        checkpoint_interval_s=3600,  # checkpoints are taken by the test
        key_encryption_key=kek,
    )


@asynccontextmanager
async def started(url: str, kek: str | None) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings_of(url, kek))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://audit") as client,
    ):
        yield app, client


async def table(url: str) -> tuple[bytes, list[SigningKey]]:
    """Every byte ``audit.signing_keys`` holds as PostgreSQL returns it (each column raw, and each
    row as text, where a bytea is written in hex), and its rows."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT * FROM audit.signing_keys ORDER BY id"))).all()
            as_text = await conn.scalar(text("SELECT coalesce(string_agg(t::text, ' '), '') FROM audit.signing_keys t"))
        async with session_factory(engine)() as session:
            keys = list((await session.scalars(select(SigningKey).order_by(SigningKey.id))).all())
    finally:
        await engine.dispose()
    raw = b"".join(v if isinstance(v, bytes) else str(v).encode() for row in rows for v in row)
    return raw + b" " + str(as_text).encode(), keys


def holds(stored: bytes, seed: bytes) -> bool:
    return seed in stored or seed.hex().encode() in stored


def events(prefix: str, n: int) -> list[audit_pb2.AuditEvent]:
    return [
        audit_pb2.AuditEvent(event_id=f"{prefix}-{i}", occurred_unix_ms=1_795_000_000_000 + i, action="exchange.query")
        for i in range(n)
    ]


async def test_a_fresh_log_makes_its_key_sealed_and_serves_the_same_verifier_key_after_a_restart(
    empty_database: str,
) -> None:
    async with started(empty_database, KEK) as (app, client):
        signer: service.CheckpointSigner = app.state.checkpoint_signer
        served = (await client.get("/v1/audit/checkpoint/key")).text.strip()
    seed = signer.private.private_bytes_raw()

    stored, [row] = await table(empty_database)
    assert not holds(stored, seed), "the private key is stored in clear"
    assert row.private_key is None and row.sealed_private_key is not None
    assert WRAP.open(row.sealed_private_key, service.sealing_context(row.id)) == seed  # sealed, not lost
    assert served == signer.verifier_key == notes.verifier_key(ORIGIN, row.public_key)

    async with started(empty_database, KEK) as (_, client):
        assert (await client.get("/v1/audit/checkpoint/key")).text.strip() == served  # the same key, unsealed again
    assert (await table(empty_database))[0] == stored


async def test_a_key_kept_in_clear_by_an_older_version_is_sealed_at_start_and_its_checkpoints_still_verify(
    empty_database: str,
) -> None:
    # What an older version left: its key in clear (the migration added the sealed column, empty)
    # and a checkpoint it signed, which auditors keep.
    engine = create_engine(empty_database, pool_size=2)
    legacy = Ed25519PrivateKey.generate()
    seed = legacy.private_bytes_raw()
    try:
        await migrate(engine, "audit", MIGRATIONS)
        async with session_factory(engine).begin() as session:
            session.add(SigningKey(id=1, name=ORIGIN, public_key=notes.public_bytes(legacy), private_key=seed))
            await session.flush()
            assert await service.append(session, events("old", 3)) == 3
            old = await service.take_checkpoint(session, ORIGIN, service.CheckpointSigner(ORIGIN, legacy))
            assert old is not None
    finally:
        await engine.dispose()
    kept_by_auditors = notes.verifier_key(ORIGIN, notes.public_bytes(legacy))
    before, _ = await table(empty_database)
    assert holds(before, seed)  # the premise: the older version's row, in clear

    # Without a KEK the service does not start, and the clear key is left as it was (not lost).
    with pytest.raises(RuntimeError, match="TONGBAN_KEY_ENCRYPTION_KEY is not set"):
        async with started(empty_database, None):
            pass
    assert (await table(empty_database))[0] == before

    async with started(empty_database, KEK) as (app, client):
        served = (await client.get("/v1/audit/checkpoint/key")).text.strip()
        async with app.state.runtime.sessions.begin() as session:
            assert await service.append(session, events("new", 2)) == 2
            new = await service.take_checkpoint(session, ORIGIN, app.state.checkpoint_signer)
            assert new is not None and new.tree_size == 5
        async with app.state.runtime.sessions() as session:
            report = await service.verify(session)

    stored, [row] = await table(empty_database)
    assert not holds(stored, seed), "the clear copy was not erased"
    assert row.private_key is None and row.sealed_private_key is not None
    assert WRAP.open(row.sealed_private_key, service.sealing_context(row.id)) == seed
    # The verifier key is the one auditors kept: the old checkpoint and the new one both open with it.
    assert served == kept_by_auditors
    key = notes.parse_verifier_key(served, notes.ED25519)
    assert notes.open_checkpoint(old.note, key.name, key.public).size == 3
    assert notes.open_checkpoint(new.note, key.name, key.public).size == 5
    assert report["ok"] is True and report["checkpoints"] == 2, report


async def test_another_kek_stops_the_start_clearly_and_changes_nothing(empty_database: str) -> None:
    async with started(empty_database, KEK):
        pass
    before, _ = await table(empty_database)

    with pytest.raises(KeyWrapError, match="does not open with TONGBAN_KEY_ENCRYPTION_KEY"):
        async with started(empty_database, new_kek()):
            pass
    with pytest.raises(KeyWrapError, match="key-encryption key"):
        async with started(empty_database, "not-a-key"):
            pass

    assert (await table(empty_database))[0] == before
    async with started(empty_database, KEK) as (app, _):  # the right KEK still opens it
        assert app.state.checkpoint_signer.public_key == (await table(empty_database))[1][0].public_key


async def test_the_migration_downgrades_with_the_kek_only_and_the_key_survives_the_round_trip(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with started(empty_database, KEK) as (app, _):
        verifier = app.state.checkpoint_signer.verifier_key
        seed = app.state.checkpoint_signer.private.private_bytes_raw()
    before, _ = await table(empty_database)
    engine = create_engine(empty_database, pool_size=1)

    def to(connection: object, revision: str, up: bool) -> None:
        (command.upgrade if up else command.downgrade)(alembic_config(connection, "audit", MIGRATIONS), revision)

    try:
        monkeypatch.delenv("TONGBAN_KEY_ENCRYPTION_KEY", raising=False)
        with pytest.raises(RuntimeError, match="TONGBAN_KEY_ENCRYPTION_KEY is not set"):
            async with engine.begin() as conn:
                await conn.run_sync(to, BEFORE_SEALING, False)
        assert (await table(empty_database))[0] == before  # refused: nothing changed
        monkeypatch.setenv("TONGBAN_KEY_ENCRYPTION_KEY", KEK)
        async with engine.begin() as conn:
            await conn.run_sync(to, BEFORE_SEALING, False)
            assert await conn.scalar(text("SELECT private_key FROM audit.signing_keys")) == seed
        async with engine.begin() as conn:
            await conn.run_sync(to, "head", True)
    finally:
        await engine.dispose()
    async with started(empty_database, KEK) as (app, _):  # sealed again at start: the same key
        assert app.state.checkpoint_signer.verifier_key == verifier
    stored, [row] = await table(empty_database)
    assert not holds(stored, seed) and row.private_key is None


async def test_the_retention_command_needs_the_kek_to_sign_but_not_to_list(
    empty_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_of(empty_database, None)
    assert await cli.retention_run(settings, dry_run=False) == 2
    assert "TONGBAN_KEY_ENCRYPTION_KEY is not set" in capsys.readouterr().err
    assert await cli.retention_run(settings, dry_run=True) == 0  # nothing signed, nothing unsealed
    assert "nothing due" in capsys.readouterr().out
    _, keys = await table(empty_database)
    assert keys == []  # a dry run makes no key either
