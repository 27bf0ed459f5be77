"""Witnesses (见证方): another platform cosigns the audit log's checkpoints (C2SP tlog-cosignature),
so that a log which shows one history to some and another to others, or rewrites its history, is
caught. Two audit instances, each with its own PostgreSQL database, play a log and its split
view; the witness is ``services.audit.witness`` over HTTP (and, once, the command itself)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit import notes, service, witness
from services.audit.app import create_app
from services.audit.config import AuditSettings
from services.audit.models import Cosignature, SigningKey
from services.common.pb import audit_pb2
from tests.audit.conftest import KEK, WRAP, run_go
from tests.stack import ROOT, create_database, drop_database, infra_env

ORIGIN = "city.tongban.dev/audit"
WITNESS = "province.tongban.dev/witness"
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)  # cosignatures are never dated ahead


@dataclass
class Log:
    """One audit instance: its app (in this process, over HTTP) and its database."""

    app: FastAPI
    client: httpx.AsyncClient
    key: ECKey

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        sessions: async_sessionmaker[AsyncSession] = self.app.state.runtime.sessions
        return sessions

    def auditor(self) -> dict[str, str]:
        claims: dict[str, Any] = {
            "iss": "tongban",
            "aud": "tongban",
            "sub": "province-witness",
            "dept": "11110000000000001X",
            "exp": int(time.time()) + 600,
            "principal_type": "person",
            "roles": ["auditor"],
        }
        return {"Authorization": "Bearer " + jwt.encode({"alg": "ES256", "kid": self.key.kid}, claims, self.key)}

    async def grow(self, prefix: str, n: int) -> int:
        """Append ``n`` records and sign a checkpoint; returns the tree size."""
        events = [
            audit_pb2.AuditEvent(
                event_id=f"{prefix}-{i}", occurred_unix_ms=1_795_000_000_000 + i, action="exchange.query"
            )
            for i in range(n)
        ]
        async with self.sessions.begin() as session:
            await service.append(session, events)
            checkpoint = await service.take_checkpoint(session, ORIGIN, self.app.state.checkpoint_signer)
        assert checkpoint is not None
        return checkpoint.tree_size

    async def cosignatures(self) -> int:
        async with self.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(Cosignature)) or 0)

    async def rewrite(self) -> None:
        """Forget every record and checkpoint (the log's operator rewriting history)."""
        async with self.sessions.begin() as session:
            await session.execute(
                text(
                    "TRUNCATE audit.cosignatures, audit.checkpoints, audit.records, audit.tree_hashes, audit.chain_head"
                )
            )


@dataclass
class WitnessKeys:
    private: str
    verifier: str


@pytest.fixture(scope="module")
def witness_keys() -> WitnessKeys:
    private, verifier = witness.keygen(WITNESS)
    return WitnessKeys(private, verifier)


@pytest.fixture
async def logs(witness_keys: WitnessKeys) -> AsyncIterator[tuple[Log, Log]]:
    """Two audit instances of one origin with one signing key: a log and its split view."""
    urls = [await create_database(infra_env()["TONGBAN_DATABASE_URL"]) for _ in range(2)]
    key = ECKey.generate_key("P-256", parameters={"kid": "witness-test", "alg": "ES256"}, private=True)
    try:
        async with contextlib.AsyncExitStack() as stack:
            built = []
            for url in urls:
                settings = AuditSettings(
                    database_url=url,
                    bus="memory",
                    topic_prefix=f"tw{secrets.token_hex(3)}.",
                    log_origin=ORIGIN,
                    checkpoint_interval_s=3600,  # checkpoints are taken by the test
                    witness_keys=[witness_keys.verifier],
                    key_encryption_key=KEK,
                )
                app = create_app(settings)
                await stack.enter_async_context(app.router.lifespan_context(app))
                app.state.runtime.verifier.use_keys(KeySet([key]))
                client = await stack.enter_async_context(
                    httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://audit")
                )
                built.append(Log(app, client, key))
            first, second = built
            # The split view signs with the real log's key: every checkpoint it shows verifies.
            # (Its operator holds the database and the KEK: the row, sealed, opens in both.)
            async with first.sessions() as session:
                real = await session.get(SigningKey, 1)
                assert real is not None
                values = {
                    "name": real.name,
                    "public_key": real.public_key,
                    "sealed_private_key": real.sealed_private_key,
                }
            async with second.sessions.begin() as session:
                await session.execute(text("DELETE FROM audit.signing_keys"))
                session.add(SigningKey(id=1, **values))
                await session.flush()
                second.app.state.checkpoint_signer = await service.signing_key(session, ORIGIN, WRAP)
            assert second.app.state.checkpoint_signer.verifier_key == first.app.state.checkpoint_signer.verifier_key
            yield first, second
    finally:
        for url in urls:
            await drop_database(url)


async def log_key(log: Log) -> str:
    response = await log.client.get("/v1/audit/checkpoint/key")
    assert response.status_code == 200
    return response.text.strip()


async def cosign(log: Log, keys: WitnessKeys, state: Path, now: datetime = NOW) -> witness.Cosigned:
    log.client.headers.update(log.auditor())  # consistency proofs are an auditor's
    return await witness.cosign_latest(log.client, await log_key(log), keys.private, state, now)


async def test_witness_cosigns_each_consistent_checkpoint_and_the_log_serves_it(
    logs: tuple[Log, Log], witness_keys: WitnessKeys, tmp_path: Path
) -> None:
    log, _ = logs
    state = tmp_path / "state.json"
    assert await log.grow("w-a", 5) == 5
    first = await cosign(log, witness_keys, state)
    assert (first.size, first.previous) == (5, 0)

    served = (await log.client.get("/v1/audit/checkpoint")).text
    body, lines = notes.split_note(served)
    assert lines[1] == first.cosignature  # after the log's own signature, as in C2SP
    verifier = notes.parse_verifier_key(witness_keys.verifier, notes.COSIGNATURE_V1)
    assert notes.open_cosignature(lines[1], body, verifier) == int(NOW.timestamp())
    log_verifier = notes.parse_verifier_key(await log_key(log), notes.ED25519)
    assert notes.open_checkpoint(served, log_verifier.name, log_verifier.public).size == 5  # still a valid note

    assert await log.grow("w-b", 3) == 8
    second = await cosign(log, witness_keys, state, NOW + timedelta(minutes=1))
    assert (second.size, second.previous) == (8, 5)
    saved = witness.WitnessState.load(state)
    latest = (await log.client.get("/v1/audit/checkpoint")).text
    root = notes.open_checkpoint(latest, log_verifier.name, log_verifier.public).root
    assert saved is not None and (saved.size, saved.log_key) == (8, str(log_verifier))
    assert saved.root == base64.b64encode(root).decode()
    # Both cosignatures are kept; each checkpoint is served with its own.
    assert await log.cosignatures() == 2
    earlier = (await log.client.get("/v1/audit/checkpoint", params={"tree_size": 5})).text
    assert first.cosignature in earlier and second.cosignature not in earlier
    # The same checkpoint cosigned again changes nothing.
    again = await cosign(log, witness_keys, state, NOW + timedelta(minutes=2))
    assert (again.size, again.previous) == (8, 8)
    assert await log.cosignatures() == 2


async def test_verify_checks_the_cosignatures_kept(
    logs: tuple[Log, Log], witness_keys: WitnessKeys, tmp_path: Path
) -> None:
    """GET /v1/audit/verify checks each kept cosignature by a configured witness over its checkpoint:
    a cosignature line or time changed in the database is reported."""
    log, _ = logs
    await log.grow("v-a", 3)
    done = await cosign(log, witness_keys, tmp_path / "state.json")
    report = (await log.client.get("/v1/audit/verify")).json()
    assert report["ok"] is True, report
    other_body = "another.origin/audit\n3\n" + base64.b64encode(bytes(32)).decode() + "\n"
    forged = signed_line(witness_keys, other_body, NOW)  # a valid signature, over another checkpoint
    for change, value in (("line", forged), ("signed_at", NOW + timedelta(seconds=1))):
        async with log.sessions.begin() as session:
            await session.execute(text(f"UPDATE audit.cosignatures SET {change} = :v"), {"v": value})  # noqa: S608
        report = (await log.client.get("/v1/audit/verify")).json()
        assert report["ok"] is False and f"by {WITNESS}" in report["detail"], (change, report)
        async with log.sessions.begin() as session:  # put it back
            await session.execute(
                text("UPDATE audit.cosignatures SET line = :l, signed_at = :t"), {"l": done.cosignature, "t": NOW}
            )
    assert (await log.client.get("/v1/audit/verify")).json()["ok"] is True


async def test_go_verifies_the_cosignatures(
    logs: tuple[Log, Log], witness_keys: WitnessKeys, tmp_path: Path, tlogverify: Path
) -> None:
    """An independent implementation (transparency-dev/formats/note, in tests/audit/tlogverify)
    checks the witness's cosignature in the checkpoint the log serves."""
    log, _ = logs
    state = tmp_path / "state.json"
    await log.grow("go-w-a", 5)
    await cosign(log, witness_keys, state)
    await log.grow("go-w-b", 4)
    await cosign(log, witness_keys, state)
    new = (await log.client.get("/v1/audit/checkpoint")).text
    old = (await log.client.get("/v1/audit/checkpoint", params={"tree_size": 5})).text
    proof = (await log.client.get("/v1/audit/events/go-w-a-1/proof")).json()
    consistency = (await log.client.get("/v1/audit/consistency", params={"from": 5, "to": 9})).json()
    document = {
        "verifier_key": await log_key(log),
        "checkpoint": new,
        "old_checkpoint": old,
        "inclusion": {k: proof[k] for k in ("leaf_data", "leaf_index", "tree_size", "hashes")},
        "consistency": {k: consistency[k] for k in ("from", "to", "hashes")},
        "witness_keys": [witness_keys.verifier],
    }
    result = run_go(tlogverify, document)
    assert result.returncode == 0, result.stderr
    assert f"cosignature ok: {WITNESS} at {NOW.strftime('%Y-%m-%dT%H:%M:%SZ')}" in result.stdout

    # Another witness's key finds no cosignature; a changed cosignature does not verify.
    stranger = witness.keygen("other.tongban.dev/witness")[1]
    body, lines = notes.split_note(new)
    raw = bytearray(base64.b64decode(lines[1].split(" ")[2]))
    raw[-1] ^= 1
    tampered = f"{body}\n{lines[0]}\n— {WITNESS} {base64.b64encode(bytes(raw)).decode()}\n"
    for changes in ({"witness_keys": [stranger]}, {"checkpoint": tampered}):
        result = run_go(tlogverify, document | changes)
        assert result.returncode == 1 and "cosignature" in result.stderr, (changes, result.stdout, result.stderr)


@pytest.mark.parametrize("shown", ["split view, longer", "split view, same size", "rewritten", "rewritten, shorter"])
async def test_witness_refuses_a_history_that_does_not_extend_what_it_cosigned(
    logs: tuple[Log, Log], witness_keys: WitnessKeys, tmp_path: Path, shown: str
) -> None:
    log, split = logs
    state = tmp_path / "state.json"
    await log.grow("real", 5)
    await cosign(log, witness_keys, state)
    before = state.read_bytes()

    if shown.startswith("split view"):
        # Another auditor is shown another history under the same origin and key.
        await split.grow("other", 8 if shown.endswith("longer") else 5)
        target = split
    else:
        await log.rewrite()
        await log.grow("rewritten", 3 if shown.endswith("shorter") else 9)
        target = log
    with pytest.raises(witness.SplitView):
        await cosign(target, witness_keys, state, NOW + timedelta(minutes=1))
    assert state.read_bytes() == before  # the witness still remembers the real history
    assert await target.cosignatures() == 0  # and cosigned nothing of the other


def signed_line(keys: WitnessKeys, body: str, when: datetime) -> str:
    name, key = notes.parse_private_key(keys.private, notes.COSIGNATURE_V1)
    return notes.cosign(key, name, body, int(when.timestamp()))


async def test_bad_cosignatures_are_refused_and_change_nothing(
    logs: tuple[Log, Log], witness_keys: WitnessKeys
) -> None:
    log, _ = logs
    await log.grow("bad-a", 4)
    await log.grow("bad-b", 2)
    at_4 = (await log.client.get("/v1/audit/checkpoint", params={"tree_size": 4})).text
    at_6 = (await log.client.get("/v1/audit/checkpoint", params={"tree_size": 6})).text
    body_4, _ = notes.split_note(at_4)
    body_6, _ = notes.split_note(at_6)
    now = datetime.now(UTC)
    ok = await log.client.post(
        "/v1/audit/checkpoint/cosignatures",
        json={"tree_size": 6, "cosignature": signed_line(witness_keys, body_6, now)},
    )
    assert ok.status_code == 200, ok.text
    stranger = WitnessKeys(*witness.keygen(WITNESS))  # the witness's name, another key
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"tree_size": 6, "cosignature": signed_line(stranger, body_6, now)}, 422, "unknown-witness"),
        ({"tree_size": 6, "cosignature": signed_line(witness_keys, body_4, now)}, 422, "bad-cosignature"),
        ({"tree_size": 6, "cosignature": "— " + WITNESS + " not base64!"}, 422, "bad-cosignature"),
        ({"tree_size": 6, "cosignature": "a line that is no signature"}, 422, "bad-cosignature"),
        (
            {"tree_size": 6, "cosignature": signed_line(witness_keys, body_6, now + timedelta(hours=1))},
            422,
            "bad-cosignature",
        ),
        ({"tree_size": 4, "cosignature": signed_line(witness_keys, body_4, now)}, 409, "stale-cosignature"),
        ({"tree_size": 5, "cosignature": signed_line(witness_keys, body_6, now)}, 404, "no-checkpoint"),
        ({"tree_size": 0, "cosignature": signed_line(witness_keys, body_6, now)}, 422, "/validation"),
        ({"tree_size": 6, "cosignature": signed_line(witness_keys, body_6, now), "extra": 1}, 422, "/validation"),
    ]
    for payload, status, code in cases:
        response = await log.client.post("/v1/audit/checkpoint/cosignatures", json=payload)
        assert response.status_code == status, (payload, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["type"].endswith(code), response.json()
        assert await log.cosignatures() == 1, payload
    assert (await log.client.get("/v1/audit/checkpoint")).text == at_6 + ok.json()["cosignature"] + "\n"


async def test_the_witness_command(logs: tuple[Log, Log], tmp_path: Path) -> None:
    """``python -m services.audit witness keygen`` then ``cosign`` against a log served over TCP:
    the README's commands, with a split view refused (exit 1) and the state kept."""
    log, split = logs
    key_file, state = tmp_path / "witness.key", tmp_path / "state.json"
    code, out = await run("witness", "keygen", "--name", WITNESS, "--key", str(key_file))
    assert code == 0, out
    verifier = out.strip()
    assert notes.parse_verifier_key(verifier, notes.COSIGNATURE_V1).name == WITNESS
    assert (await run("witness", "keygen", "--name", WITNESS, "--key", str(key_file)))[0] == 2  # never overwritten
    for instance in logs:  # the logs must know the new key
        instance.app.state.runtime.settings.witness_keys = [verifier]
    await log.grow("cmd-a", 3)
    async with served(log.app) as url_log, served(split.app) as url_split:
        env = {"TONGBAN_WITNESS_TOKEN": log.auditor()["Authorization"].removeprefix("Bearer ")}
        key = await log_key(log)
        cosign_args = ("witness", "cosign", "--log-key", key, "--key", str(key_file), "--state", str(state))
        code, out = await run(*cosign_args, "--log", url_log, env=env)
        assert code == 0, out
        assert "cosigned tree size 3 (previously 0)" in out
        await split.grow("cmd-other", 7)
        before = state.read_bytes()
        code, out = await run(*cosign_args, "--log", url_split, env=env)
        assert code == 1 and "REFUSED" in out, out
        assert state.read_bytes() == before
    assert (await log.cosignatures(), await split.cosignatures()) == (1, 0)


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` (its lifespan already running) on a free local port for the test's length."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections wait in the backlog until the server accepts them
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")} | (env or {})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.audit", *args,
        cwd=ROOT, env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, output.decode()
