"""What the running audit service publishes for outsiders — its checkpoint and verifier key, as
plain text — and serves auditors — proofs — over HTTP, events arriving through Kafka, checked by
the independent Go verifier. Bad requests get problem+json and write nothing."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from services.audit import service
from services.audit.models import AuditRecord, Checkpoint
from services.common.bus import Message
from services.common.pb import audit_pb2
from tests.audit.conftest import Audit, run_go
from tests.integration.helpers import eventually


async def publish(audit: Audit, n: int) -> list[str]:
    topic = audit.settings.topic("audit.events")
    ids = [uuid.uuid4().hex for _ in range(n)]
    await audit.producer.publish_many(
        [
            Message(
                topic, audit_pb2.AuditEvent(event_id=i, occurred_unix_ms=int(time.time() * 1000)).SerializeToString()
            )
            for i in ids
        ]
    )

    async def stored() -> bool:
        # Every one of them: events without a key spread over partitions, consumed in any order.
        # Read from the database: an auditor's search would add its own record to the tree.
        async with audit.app.state.runtime.sessions() as session:
            found = await session.scalars(select(AuditRecord.event_id).where(AuditRecord.event_id.in_(ids)))
            return set(ids) <= set(found.all())

    await eventually(stored, 60, "the events to be stored")
    return ids


async def checkpoint_now(audit: Audit) -> str:
    response = await audit.client.post("/v1/audit/checkpoints", headers=audit.auditor)
    assert response.status_code == 200, response.text
    return response.text


def size_of(note: str) -> int:
    return int(note.split("\n")[1])


async def get_json(audit: Audit, path: str, **params: Any) -> dict[str, Any]:
    response = await audit.client.get(path, params=params, headers=audit.auditor)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_published_checkpoints_and_proofs_verify_with_go(audit: Audit, tlogverify: Path) -> None:
    first_ids = await publish(audit, 3)
    old = await checkpoint_now(audit)
    await publish(audit, 4)
    new = await checkpoint_now(audit)
    assert size_of(new) == size_of(old) + 4

    # Public: no token needed, plain text, the note as signed.
    published = await audit.client.get("/v1/audit/checkpoint")
    assert published.status_code == 200 and published.headers["content-type"].startswith("text/plain")
    assert size_of(published.text) >= size_of(new)  # the periodic task may have signed meanwhile
    key = await audit.client.get("/v1/audit/checkpoint/key")
    assert key.status_code == 200 and key.text.startswith(f"{audit.settings.log_origin}+")

    proof = await get_json(audit, f"/v1/audit/events/{first_ids[1]}/proof", tree_size=size_of(new))
    consistency = await get_json(audit, "/v1/audit/consistency", **{"from": size_of(old), "to": size_of(new)})
    assert proof["checkpoint"] == new and consistency["from_checkpoint"] == old
    result = run_go(
        tlogverify,
        {
            "verifier_key": key.text.strip(),
            "checkpoint": new,
            "old_checkpoint": old,
            "inclusion": {k: proof[k] for k in ("leaf_data", "leaf_index", "tree_size", "hashes")},
            "consistency": {"from": consistency["from"], "to": consistency["to"], "hashes": consistency["hashes"]},
        },
    )
    assert result.returncode == 0, result.stderr
    assert f"consistency ok: {size_of(old)} → {size_of(new)}" in result.stdout

    report = await get_json(audit, "/v1/audit/verify")
    assert report["ok"] is True and report["checkpoints"] >= 2, report


async def test_a_checkpoint_is_signed_periodically(audit: Audit) -> None:
    ids = await publish(audit, 2)

    async def covered() -> bool:
        response = await audit.client.get("/v1/audit/checkpoint")
        if response.status_code != 200:
            return False
        proof = await audit.client.get(f"/v1/audit/events/{ids[-1]}/proof", headers=audit.auditor)
        return proof.status_code == 200 and proof.json()["tree_size"] == size_of(response.text)

    await eventually(covered, 30, "a checkpoint covering the new events, signed without being asked")


async def count_checkpoints(audit: Audit) -> int:
    async with audit.app.state.runtime.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Checkpoint)) or 0)


async def settled_checkpoints(audit: Audit, quiet_s: float = 2.0) -> int:
    """The number of checkpoints once the tree has stopped growing for ``quiet_s`` and the latest
    checkpoint covers it: look-ups of earlier tests reach the tree through the outbox a moment
    after their answer, and the periodic checkpoint (every 0.5 s here) signs each growth."""
    seen: tuple[int, int, int] | None = None
    since = time.monotonic()

    async def count(session: Any) -> int:
        return int(await session.scalar(select(func.count()).select_from(Checkpoint)) or 0)

    async def settled() -> bool:
        nonlocal seen, since
        async with audit.app.state.runtime.sessions() as session:
            latest = await service.latest_checkpoint(session)
            now = (await service.tree_size(session), latest.tree_size if latest else -1, await count(session))
        if now != seen:
            seen, since = now, time.monotonic()
        return now[0] == now[1] and time.monotonic() - since >= quiet_s

    await eventually(settled, 60, "the tree quiet and covered by the latest checkpoint")
    assert seen is not None
    return seen[2]


async def test_bad_proof_requests_get_problems_and_write_nothing(audit: Audit) -> None:
    await publish(audit, 1)
    await checkpoint_now(audit)
    before = await settled_checkpoints(audit)
    huge = str(2**62)
    for path, params, status, code in [
        ("/v1/audit/events/no-such-event/proof", {}, 404, "unknown-event"),
        ("/v1/audit/events/a%00b/proof", {}, 422, "validation"),  # refused before any route
        ("/v1/audit/events/" + "x" * 65 + "/proof", {}, 422, "validation"),
        ("/v1/audit/events/x/proof", {"tree_size": "0"}, 422, "validation"),
        ("/v1/audit/consistency", {"from": "3", "to": "2"}, 422, "consistency-range-invalid"),
        ("/v1/audit/consistency", {"from": "1", "to": huge}, 422, "tree-size-out-of-range"),
        ("/v1/audit/consistency", {"from": "0", "to": "1"}, 422, "validation"),
        ("/v1/audit/consistency", {"from": "1", "to": str(2**63)}, 422, "validation"),
        ("/v1/audit/consistency", {"from": "x", "to": "1"}, 422, "validation"),
    ]:
        response = await audit.client.get(path, params=params, headers=audit.auditor)
        assert response.status_code == status, (path, params, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith("/" + code)
    for headers, status in [(audit.token(["data_admin", "consumer"]), 403), ({}, 401)]:
        for path in ("/v1/audit/consistency?from=1&to=1", "/v1/audit/events/x/proof"):
            response = await audit.client.get(path, headers=headers)
            assert response.status_code == status, response.text
        response = await audit.client.post("/v1/audit/checkpoints", headers=headers)
        assert response.status_code == status, response.text
    assert await count_checkpoints(audit) == before
