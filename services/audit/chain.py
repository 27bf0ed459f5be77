"""The hash chain (哈希链) of audit records, as pure functions that the audit service's own
``verify`` and the offline verifier of an export (``python -m services.audit verify``) share:
the versioned canonical form, the chain hash, and the check of one record in its place."""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable
from typing import Any

import orjson

GENESIS = "0" * 64
# The canonical form (规范形式) that the chain hashes, by version. Version 1 is what records were
# written with before versions existed: it must keep hashing exactly as it did, or old chains
# stop verifying. A new field means a new version; old records keep theirs.
CHAINED_FIELDS = (
    "event_id",
    "occurred_at",
    "service",
    "action",
    "outcome",
    "reason",
    "actor",
    "consumer_dept",
    "consumer_client_id",
    "provider_dept",
    "resource_code",
    "purpose",
    "subject_type",
    "subject_hash",
    "fields",
    "query_id",
    "request_id",
)
CHAINED_FIELDS_BY_VERSION: dict[int, tuple[str, ...]] = {
    1: CHAINED_FIELDS,
    2: (*CHAINED_FIELDS, "occurred_unix_ms_raw"),
    3: (*CHAINED_FIELDS, "occurred_unix_ms_raw", "subject_key_id"),
    4: (*CHAINED_FIELDS, "occurred_unix_ms_raw", "subject_key_id", "answer_sha256", "disclosed_fields"),
    5: (
        *CHAINED_FIELDS,
        "occurred_unix_ms_raw",
        "subject_key_id",
        "answer_sha256",
        "disclosed_fields",
        "bundle_id",
        "batch_id",
    ),
}
CANONICAL_VERSION = 5  # what new records are written with
# Every field any canonical version hashes, in a stable order (what an export writes).
ALL_CHAINED_FIELDS = tuple(dict.fromkeys(f for fields in CHAINED_FIELDS_BY_VERSION.values() for f in fields))


# Each version's fields read as one tuple (orjson writes a tuple as the same array a list makes).
_CHAINED = {version: operator.itemgetter(*fields) for version, fields in CHAINED_FIELDS_BY_VERSION.items()}


def canonical(values: dict[str, Any]) -> bytes:
    """The bytes the chain hashes for a record, in the version ``values["canonical_version"]``."""
    version = values["canonical_version"]
    chained = _CHAINED[version](values)
    if version == 1:
        return orjson.dumps(chained, default=lambda v: v.isoformat())
    return orjson.dumps((version, *chained))  # the version is hashed too: forms never collide


def chain_hash(prev_hash: str, values: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(values)).hexdigest()


def record_failure(prev: str, position: int, field: Callable[[str], Any]) -> str | None:
    """Why the record read by ``field`` cannot be leaf ``position`` after the record whose hash is
    ``prev`` — or None: its version is known, it links to ``prev``, its content gives its hash,
    and it says it is that leaf."""
    version = field("canonical_version")
    fields = CHAINED_FIELDS_BY_VERSION.get(version)
    if fields is None:
        return f"unknown canonical version {version}"
    if field("prev_hash") != prev:
        return "prev_hash is not the hash of the record before: one is missing, added or moved"
    values = {"canonical_version": version} | {f: field(f) for f in fields}
    if chain_hash(prev, values) != field("hash"):
        return "the record's content does not match its hash"
    if field("leaf_index") != position:
        return f"the record says it is leaf {field('leaf_index')}, it is leaf {position}"
    return None
