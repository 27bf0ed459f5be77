"""Checkpoints and proofs (检查点与证明) of the audit log, checked by an independent implementation:
Go's own transparency-log code (``golang.org/x/mod/sumdb/note`` and ``tlog``), built here from
``tests/audit/tlogverify`` with the Go toolchain, over proofs the audit service produced from a
real PostgreSQL. Bad requests for proofs are refused with a problem and write nothing."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.audit import merkle, notes, service
from services.audit.models import Checkpoint, TreeHash
from services.audit.problems import AuditProblem
from services.common.errors import Problem
from services.common.pb import audit_pb2
from tests.audit.conftest import run_go, signer

ORIGIN = "test.tongban.dev/audit"


def events(prefix: str, n: int) -> list[audit_pb2.AuditEvent]:
    return [
        audit_pb2.AuditEvent(event_id=f"{prefix}-{i}", occurred_unix_ms=1_795_000_000_000 + i, action="exchange.query")
        for i in range(n)
    ]


async def grow(session: AsyncSession, prefix: str, n: int) -> Checkpoint:
    assert await service.append(session, events(prefix, n)) == n
    checkpoint = await service.take_checkpoint(session, ORIGIN, await signer(session, ORIGIN))
    assert checkpoint is not None
    return checkpoint


async def go_document(session: AsyncSession, event_id: str, old: Checkpoint, new: Checkpoint) -> dict[str, Any]:
    key = (await signer(session, ORIGIN)).verifier_key
    inclusion = await service.inclusion(session, event_id, new.tree_size)
    consistency = await service.consistency(session, old.tree_size, new.tree_size)
    assert inclusion["checkpoint"] == new.note and consistency["from_checkpoint"] == old.note
    return {
        "verifier_key": key,
        "checkpoint": new.note,
        "old_checkpoint": old.note,
        "inclusion": {k: inclusion[k] for k in ("leaf_data", "leaf_index", "tree_size", "hashes")},
        "consistency": {"from": consistency["from"], "to": consistency["to"], "hashes": consistency["hashes"]},
    }


async def test_go_verifies_checkpoints_and_proofs_of_the_service(session: AsyncSession, tlogverify: Path) -> None:
    first = await grow(session, "go-a", 5)
    second = await grow(session, "go-b", 8)
    size = await service.tree_size(session)
    assert second.tree_size == size and first.tree_size == size - 8
    for event_id in ("go-a-0", "go-a-4", "go-b-3", "go-b-7"):  # first, edge, middle and last leaves
        document = await go_document(session, event_id, first, second)
        result = run_go(tlogverify, document)
        assert result.returncode == 0, result.stderr
        assert f"inclusion ok: leaf {document['inclusion']['leaf_index']} in tree {size}" in result.stdout
        assert f"consistency ok: {first.tree_size} → {size}" in result.stdout

    # The same checks fail when anything is changed: they are not a formality.
    document = await go_document(session, "go-b-3", first, second)
    wrong_hash = json.loads(json.dumps(document))
    proof = bytearray(base64.b64decode(wrong_hash["inclusion"]["hashes"][0]))
    proof[0] ^= 1
    wrong_hash["inclusion"]["hashes"][0] = base64.b64encode(bytes(proof)).decode()
    wrong_leaf = json.loads(json.dumps(document))
    wrong_leaf["inclusion"]["leaf_index"] += 1
    wrong_consistency = json.loads(json.dumps(document))
    wrong_consistency["consistency"]["hashes"] = wrong_consistency["consistency"]["hashes"][1:]
    forged = json.loads(json.dumps(document))
    forged["checkpoint"] = forged["checkpoint"].replace(f"\n{size}\n", f"\n{size + 1}\n", 1)
    for bad, failure in [
        (wrong_hash, "inclusion"),
        (wrong_leaf, "inclusion"),
        (wrong_consistency, "consistency"),
        (forged, "checkpoint"),
    ]:
        result = run_go(tlogverify, bad)
        assert result.returncode == 1 and f"tlogverify: {failure}" in result.stderr, (failure, result.stderr)


async def test_inclusion_proofs_lead_to_the_root_for_every_leaf_and_size(session: AsyncSession) -> None:
    """RFC 9162 §2.1.3.2 (Python) over every leaf of every tree size up to 17, each root
    recomputed from the leaves themselves, not from the stored hashes the proofs are made of."""
    before = await service.tree_size(session)
    assert await service.append(session, events("all", 17)) == 17
    leaves: list[bytes] = []
    frontier = merkle.Frontier()
    roots = {}
    async for record in await session.stream_scalars(select(service.AuditRecord).order_by(service.AuditRecord.seq)):
        leaves.append(bytes.fromhex(record.hash))
        frontier.append(leaves[-1])
        roots[frontier.size] = frontier.root()
    for size in range(before + 1, before + 18):
        for index in range(before, size):
            event_id = f"all-{index - before}"
            proof = await service.inclusion(session, event_id, size)
            hashes = [base64.b64decode(h) for h in proof["hashes"]]
            assert proof["leaf_index"] == index
            assert merkle.root_from_inclusion(index, size, leaves[index], hashes) == roots[size], (index, size)


async def test_a_checkpoint_is_a_signed_note_of_the_current_tree(session: AsyncSession) -> None:
    checkpoint = await grow(session, "cp", 3)
    key = await signer(session, ORIGIN)
    opened = notes.open_checkpoint(checkpoint.note, key.name, key.public_key)
    assert opened == notes.Checkpoint(ORIGIN, await service.tree_size(session), checkpoint.root_hash)
    assert key.verifier_key.startswith(f"{ORIGIN}+")
    # Nothing new: the same checkpoint, not another signature.
    assert await service.take_checkpoint(session, ORIGIN, key) is checkpoint
    # Another key does not verify it.
    other = notes.public_bytes(Ed25519PrivateKey.generate())
    with pytest.raises(notes.BadNote):
        notes.open_checkpoint(checkpoint.note, key.name, other)


async def written(session: AsyncSession) -> tuple[int, int]:
    checkpoints = await session.scalar(select(func.count()).select_from(Checkpoint))
    stored = await session.scalar(select(func.count()).select_from(TreeHash))
    return int(checkpoints or 0), int(stored or 0)


@pytest.mark.parametrize(
    ("ask", "code"),
    [
        ({"proof": ("no-such-event", None)}, AuditProblem.UNKNOWN_EVENT),
        ({"proof": ("a\x00b", None)}, AuditProblem.UNKNOWN_EVENT),  # storable by no record
        ({"proof": ("bad-0", 10**9)}, AuditProblem.TREE_SIZE),
        ({"proof": ("bad-3", "before it")}, AuditProblem.TREE_SIZE),
        ({"consistency": (5, 2)}, AuditProblem.CONSISTENCY_RANGE),
        ({"consistency": (1, 10**9)}, AuditProblem.TREE_SIZE),
    ],
)
async def test_bad_proof_requests_are_refused_and_write_nothing(
    session: AsyncSession, ask: dict[str, tuple[Any, Any]], code: AuditProblem
) -> None:
    await grow(session, "bad", 4)
    before = await written(session)
    if "proof" in ask:
        event_id, size = ask["proof"]
        if size == "before it":  # bad-3 is the last leaf: the tree one smaller lacks it
            size = await service.tree_size(session) - 1
        call = service.inclusion(session, event_id, size)
    else:
        call = service.consistency(session, *ask["consistency"])
    with pytest.raises(Problem) as refused:
        await call
    assert (refused.value.code, refused.value.status) == (code, code.status)
    assert await written(session) == before


async def test_no_proof_by_default_before_the_first_checkpoint(session: AsyncSession) -> None:
    if await service.latest_checkpoint(session) is None:
        assert await service.append(session, events("early", 2)) == 2
        with pytest.raises(Problem) as refused:
            await service.inclusion(session, "early-0", None)
        assert refused.value.code == AuditProblem.NO_CHECKPOINT
    checkpoint = await grow(session, "then", 1)
    proof = await service.inclusion(session, "then-0", None)
    assert proof["tree_size"] == checkpoint.tree_size and proof["checkpoint"] == checkpoint.note
