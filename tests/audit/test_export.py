"""Exports (导出) verified offline: ``GET /v1/audit/export`` writes a range of records with the
signed checkpoint that covers it, and ``python -m services.audit verify`` (``export.verify_export``)
checks it with the log's key alone, no database — naming the first bad record when the file was
changed: a field modified, a record dropped, added or moved, the tail cut, the range rewritten
consistently, or a checkpoint of another tree or key put in."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit import chain, export, merkle, notes, service
from services.common.pb import audit_pb2
from tests.audit.conftest import Audit
from tests.stack import ROOT


async def grow(audit: Audit, prefix: str, n: int) -> int:
    """Append ``n`` records (``<prefix>-0``…) and sign a checkpoint; returns the leaf of the first."""
    events = [
        audit_pb2.AuditEvent(
            event_id=f"{prefix}-{i}", occurred_unix_ms=1_795_000_000_123 + i, action="exchange.query", purpose="P"
        )
        for i in range(n)
    ]
    async with audit.app.state.runtime.sessions.begin() as session:
        assert await service.append(session, events) == n
        # Read under the chain head's lock the append took: a look-up's record arriving from
        # audit.events meanwhile lands before or after these, never between.
        first = await service.tree_size(session) - n
        assert await service.take_checkpoint(session, audit.settings.log_origin, audit.app.state.checkpoint_signer)
    return int(first)


async def log_key(audit: Audit) -> notes.VerifierKey:
    text = (await audit.client.get("/v1/audit/checkpoint/key")).text
    return notes.parse_verifier_key(text, notes.ED25519)


async def exported(audit: Audit, **params: int) -> list[bytes]:
    """An export; returned once its own record (audit.records.exported) is in the trail, so that
    it does not land among the records the test appends next."""
    auditor = f"exporter-{secrets.token_hex(4)}"
    response = await audit.client.get("/v1/audit/export", params=params, headers=audit.token(["auditor"], sub=auditor))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    [record] = await audit.recorded(auditor)
    assert record.action == "audit.records.exported"
    return response.content.splitlines()


def rehash(lines: list[bytes], frm: int, edit: dict[str, Any]) -> list[bytes]:
    """Change record line ``frm`` (1 = the first record) and re-chain every record after it, as
    someone rewriting the range consistently would."""
    out = list(lines)
    prev = orjson.loads(out[frm])["prev_hash"]
    for k in range(frm, len(out)):
        record = orjson.loads(out[k]) | (edit if k == frm else {})
        values = {"canonical_version": record["canonical_version"]} | {
            f: record[f] for f in chain.CHAINED_FIELDS_BY_VERSION[record["canonical_version"]]
        }
        values["occurred_at"] = datetime.fromisoformat(values["occurred_at"])
        record["prev_hash"], record["hash"] = prev, chain.chain_hash(prev, values)
        prev = record["hash"]
        out[k] = orjson.dumps(record)
    return out


async def test_an_exported_range_verifies_offline(audit: Audit) -> None:
    first = await grow(audit, "exp-a", 13)
    key = await log_key(audit)
    everything = await exported(audit)
    report = export.verify_export(everything, key)
    assert report["ok"] is True and report["checked"] == first + 13, report
    head = orjson.loads(everything[0])
    assert head["start"] == 0 and head["end"] == head["tree_size"] == first + 13
    for start, end in [(first + 3, first + 9), (first, first + 1), (first + 12, first + 13), (1, first + 7)]:
        lines = await exported(audit, start=start, end=end)
        assert len(lines) == 1 + end - start
        report = export.verify_export(lines, key)
        assert report["ok"] is True and report["checked"] == end - start, (start, end, report)
    # An earlier checkpoint still covers its own ranges.
    await grow(audit, "exp-b", 3)
    lines = await exported(audit, start=first + 2, end=first + 5, tree_size=first + 13)
    assert export.verify_export(lines, key)["ok"] is True


async def test_a_changed_export_names_the_first_bad_record(audit: Audit) -> None:
    first = await grow(audit, "exp-t", 10)
    key = await log_key(audit)
    lines = await exported(audit, start=first + 2, end=first + 8)  # exp-t-2 … exp-t-7
    leaf = {f"exp-t-{i}": first + i for i in range(10)}

    def record(k: int) -> dict[str, Any]:
        return dict(orjson.loads(lines[k]))

    modified = list(lines)
    modified[3] = orjson.dumps(record(3) | {"purpose": "另一个目的"})  # exp-t-4
    dropped = lines[:3] + lines[4:]  # exp-t-4 gone: exp-t-5 no longer links
    added = [*lines[:3], orjson.dumps(record(2) | {"event_id": "forged"}), *lines[3:]]  # before exp-t-4
    moved = [*lines[:2], lines[3], lines[2], *lines[4:]]  # exp-t-3 and exp-t-4 swapped
    cut = lines[:-1]  # exp-t-7 gone
    rewritten = rehash(lines, 3, {"purpose": "另一个目的"})  # exp-t-4 changed, the chain after redone
    cases = [
        (modified, "exp-t-4", leaf["exp-t-4"], "content"),
        (dropped, "exp-t-5", leaf["exp-t-4"], "prev_hash"),
        (added, "forged", leaf["exp-t-4"], "prev_hash"),
        (moved, "exp-t-4", leaf["exp-t-3"], "prev_hash"),
        (cut, None, leaf["exp-t-7"], "tail"),
        (rewritten, None, leaf["exp-t-2"], "root"),
    ]
    for changed, event_id, bad_leaf, detail in cases:
        report = export.verify_export(changed, key)
        assert report["ok"] is False, (event_id, report)
        assert report["first_bad_event_id"] == event_id and report["first_bad_leaf"] == bad_leaf, report
        assert detail in report["detail"], report


async def test_a_wrong_checkpoint_does_not_verify(audit: Audit) -> None:
    first = await grow(audit, "exp-c", 6)
    await grow(audit, "exp-d", 2)
    key = await log_key(audit)
    lines = await exported(audit, start=first, end=first + 6, tree_size=first + 6)
    head = orjson.loads(lines[0])
    # The log's own, of another tree (named by size: look-ups' records keep growing the tree).
    later = (await audit.client.get("/v1/audit/checkpoint", params={"tree_size": first + 8})).text
    other_key = Ed25519PrivateKey.generate()
    body, _ = notes.split_note(head["checkpoint"])
    size, root = int(body.split("\n")[1]), notes.open_checkpoint(head["checkpoint"], key.name, key.public).root
    forged = notes.sign_checkpoint(other_key, key.name, key.name, size, root)  # same name, another key
    left = list(head["left"])
    left[0] = left[-1] if len(left) > 1 else "A" * 43 + "="
    cases: list[tuple[dict[str, Any], str]] = [
        ({"checkpoint": later}, "signs a tree of"),
        ({"checkpoint": later, "tree_size": first + 8}, "do not fit"),  # the right subtrees are of another tree
        ({"checkpoint": forged}, "not the log's"),
        ({"left": left}, "root"),
    ]
    for change, detail in cases:
        changed = [orjson.dumps(head | change), *lines[1:]]
        report = export.verify_export(changed, key)
        assert report["ok"] is False and detail in report["detail"], (change, report)
    # And the right export with the wrong key.
    wrong = notes.parse_verifier_key(notes.verifier_key(key.name, notes.public_bytes(other_key)), notes.ED25519)
    assert "not the log's" in export.verify_export(lines, wrong)["detail"]


async def test_bad_export_requests_are_refused(audit: Audit) -> None:
    first = await grow(audit, "exp-e", 3)
    size = first + 3
    # Far past any checkpoint: the periodic one (every 0.5 s here) may cover look-ups of earlier
    # tests that reached the tree meanwhile, so "size + 1" could be a valid end by then.
    beyond = 2**62
    cases = [
        ({"start": 2, "end": 2}, 422, "export-range-invalid"),
        ({"start": 3, "end": 1}, 422, "export-range-invalid"),
        ({"end": beyond}, 422, "export-range-invalid"),
        ({"tree_size": beyond}, 404, "no-checkpoint"),
        ({"start": -1}, 422, "validation"),
        ({"end": 0}, 422, "validation"),
    ]
    auditor = f"refused-{secrets.token_hex(4)}"
    for params, status, code in cases:
        response = await audit.client.get(
            "/v1/audit/export", params=params, headers=audit.token(["auditor"], sub=auditor)
        )
        assert response.status_code == status, (params, response.text)
        assert response.json()["type"].endswith("/" + code), response.json()
    response = await audit.client.get("/v1/audit/export", headers=audit.token(["data_admin"], sub=auditor))
    assert response.status_code == 403
    # Nothing written: a refused export leaves no look-up record. The same person's one good
    # export, made after them, is their only record once it is in the trail. (Not a count of
    # checkpoints: an export never signs one, and the periodic checkpoint signs whenever the
    # tree grows, which look-ups of earlier tests may make it do at any moment.)
    ok = await audit.client.get(
        "/v1/audit/export", params={"tree_size": size}, headers=audit.token(["auditor"], sub=auditor)
    )
    assert ok.status_code == 200, ok.text
    [record] = await audit.recorded(auditor)
    assert record.action == "audit.records.exported"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(service, "EXPORT_MAX", 2)
        response = await audit.client.get("/v1/audit/export", params={"start": first}, headers=audit.auditor)
        assert response.status_code == 422 and "at most 2" in response.json()["detail"]


async def test_the_verify_command(audit: Audit, tmp_path: Path) -> None:
    """``python -m services.audit verify``, as the README runs it, with no database settings."""
    first = await grow(audit, "exp-f", 4)
    key = str(await log_key(audit))
    good, bad = tmp_path / "export.ndjson", tmp_path / "changed.ndjson"
    lines = await exported(audit, start=first, end=first + 4)
    good.write_bytes(b"\n".join(lines) + b"\n")
    changed = dict(orjson.loads(lines[2])) | {"outcome": "denied"}
    bad.write_bytes(b"\n".join([*lines[:2], orjson.dumps(changed), *lines[3:]]) + b"\n")
    code, out = await run("verify", str(good), "--key", key)
    assert code == 0 and "ok: 4 record(s) verified" in out, out
    code, out = await run("verify", str(bad), "--key", key)
    assert code == 1, out
    assert f"BAD at leaf {first + 1} (seq {changed['seq']}, event exp-f-1): the record's content" in out, out
    assert (await run("verify", str(good), "--key", "not-a-key"))[0] == 2


async def run(*args: str) -> tuple[int, str]:
    # No TONGBAN_* at all: no database, no broker — the file and the key are enough.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.audit", *args,
        cwd=ROOT, env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, output.decode()


def test_aligned_blocks_are_what_a_frontier_holds() -> None:
    """The export's left subtrees are the frontier's: one decomposition, two uses."""
    for size in range(40):
        assert merkle.Frontier.indexes(size) == [
            merkle.stored_hash_index(lv, n) for lv, n in merkle.aligned_blocks(0, size)
        ]
