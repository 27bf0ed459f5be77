"""Exports (导出) of a range of audit records with the signed checkpoint that covers them, and
their offline check (``python -m services.audit verify <export>``): no database, only the file
and the log's verifier key, which the auditor keeps.

An export is NDJSON. The first line is its header::

    {"format": "tongban-audit-export/1", "start": 100, "end": 200, "tree_size": 1234,
     "checkpoint": "<signed note, with its cosignatures>",
     "left": ["<base64>", …], "right": ["<base64>", …]}

then one line per record, leaves ``start`` … ``end - 1`` in order, each with every field the
canonical form hashes, its version, ``prev_hash``, ``hash``, ``seq`` and ``leaf_index``.
``left`` and ``right`` are the hashes of the aligned complete subtrees covering leaves
[0, start) and [end, tree_size) (``merkle.aligned_blocks``): with the records' own leaves they
give the tree's root, which must be the checkpoint's. So a record changed, dropped, added or
moved, or a checkpoint of another tree or key, does not verify — and the first record that is
wrong is named, as ``GET /v1/audit/verify`` names it (both use ``chain.record_failure``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson

from services.audit import merkle, notes
from services.audit.chain import ALL_CHAINED_FIELDS, GENESIS, record_failure

FORMAT = "tongban-audit-export/1"
RECORD_FIELDS = ("seq", "leaf_index", "canonical_version", *ALL_CHAINED_FIELDS, "prev_hash", "hash")
DATETIME_FIELDS = frozenset({"occurred_at"})


def header(
    start: int, end: int, tree_size: int, checkpoint: str, left: Sequence[bytes], right: Sequence[bytes]
) -> bytes:
    return orjson.dumps(
        {
            "format": FORMAT,
            "start": start,
            "end": end,
            "tree_size": tree_size,
            "checkpoint": checkpoint,
            "left": [base64.b64encode(h).decode() for h in left],
            "right": [base64.b64encode(h).decode() for h in right],
        }
    )


def record_line(field: Any) -> bytes:
    """One record (read by ``field(name)``) as an export line; times in ISO 8601 with their offset."""
    values = {f: field(f) for f in RECORD_FIELDS}
    for f in DATETIME_FIELDS:
        values[f] = values[f].isoformat()
    return orjson.dumps(values)


def _record(line: bytes) -> dict[str, Any]:
    values: dict[str, Any] = orjson.loads(line)
    if not isinstance(values, dict) or set(values) != set(RECORD_FIELDS):
        raise ValueError("not a record line of this format")
    for f in DATETIME_FIELDS:
        values[f] = datetime.fromisoformat(values[f])
    return values


def _bad(checked: int, record: dict[str, Any] | None, leaf: int | None, detail: str) -> dict[str, Any]:
    return {
        "ok": False,
        "checked": checked,
        "first_bad_seq": record.get("seq") if record else None,
        "first_bad_event_id": record.get("event_id") if record else None,
        "first_bad_leaf": leaf,
        "detail": detail,
    }


def _hashes(encoded: Any) -> list[bytes]:
    if not isinstance(encoded, list):
        raise ValueError("a list of base64 hashes")
    out = [base64.b64decode(h, validate=True) for h in encoded]
    if any(len(h) != merkle.HASH_SIZE for h in out):
        raise ValueError("a hash is not 32 bytes")
    return out


def verify_export(
    lines: Iterable[bytes], log: notes.VerifierKey, witnesses: Sequence[notes.VerifierKey] = ()
) -> dict[str, Any]:
    """Check an export against the log's key (and, if given, that each witness cosigned its
    checkpoint); the report has the shape of ``GET /v1/audit/verify``'s."""
    lines = iter(line for line in lines if line.strip())
    try:
        head = orjson.loads(next(lines))
        if head.get("format") != FORMAT:
            return _bad(0, None, None, f"not an export of format {FORMAT}")
        start, end, size = int(head["start"]), int(head["end"]), int(head["tree_size"])
        note = str(head["checkpoint"])
        left, right = _hashes(head["left"]), _hashes(head["right"])
    except StopIteration:
        return _bad(0, None, None, "the export is empty")
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as err:
        return _bad(0, None, None, f"the export's header does not parse: {err}")
    try:
        checkpoint = notes.open_checkpoint(note, log.name, log.public)
    except notes.BadNote as err:
        return _bad(0, None, None, f"the checkpoint is not the log's: {err}")
    if checkpoint.size != size:
        return _bad(0, None, None, f"the checkpoint signs a tree of {checkpoint.size} records, the export says {size}")
    if not 0 <= start <= end <= size:
        return _bad(0, None, None, f"the range [{start}, {end}) is not within the tree of {size} records")
    body, signatures = notes.split_note(note)
    for witness in witnesses:
        if not any(_cosigned(line, body, witness) for line in signatures):
            return _bad(0, None, None, f"the checkpoint has no valid cosignature by the witness {witness.name}")
    if len(left) != len(merkle.aligned_blocks(0, start)) or len(right) != len(merkle.aligned_blocks(end, size)):
        return _bad(0, None, None, "the export's left or right subtree hashes do not fit its range")

    frontier = merkle.Frontier(start, left)
    prev: str | None = GENESIS if start == 0 else None  # else: the first record's own, bound by the root
    checked = 0
    for line in lines:
        position = start + checked
        try:
            record = _record(line)
        except (ValueError, TypeError, KeyError) as err:
            return _bad(checked, None, position, f"line {checked + 2} is not a record: {err}")
        if position >= end:
            return _bad(checked, record, position, f"a record beyond the range's end ({end}): one was added")
        failure = record_failure(record["prev_hash"] if prev is None else prev, position, record.__getitem__)
        if failure is not None:
            return _bad(checked, record, position, failure)
        frontier.append(bytes.fromhex(record["hash"]))
        prev = record["hash"]
        checked += 1
    if start + checked < end:
        return _bad(checked, None, start + checked, f"leaf {start + checked} and after are missing: the tail was cut")
    pieces = frontier.blocks()
    for (level, n), h in zip(merkle.aligned_blocks(end, size), right, strict=True):
        pieces[(n << level, (n + 1) << level)] = h
    if merkle.root_from_pieces(size, pieces) != checkpoint.root:
        return _bad(
            checked,
            None,
            start,
            f"the records with the subtrees beside them do not give the checkpoint's root: the range "
            f"[{start}, {end}) was rewritten consistently, or the subtree hashes are not this tree's",
        )
    return {
        "ok": True,
        "checked": checked,
        "head": prev,
        "tree_size": size,
        "root": base64.b64encode(checkpoint.root).decode(),
        "checkpoints": 1,
    }


def _cosigned(line: str, body: str, witness: notes.VerifierKey) -> bool:
    try:
        notes.open_cosignature(line, body, witness)
    except notes.BadNote:
        return False
    return True
