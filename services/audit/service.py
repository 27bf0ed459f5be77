"""Audit rules: append events once each, in one hash chain; let auditors search and verify; keep
the platform's dead letters (死信) and send them back when asked."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import operator
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import ARRAY, String, any_, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit import export, merkle, notes
from services.audit.chain import CANONICAL_VERSION, GENESIS, chain_hash, record_failure
from services.audit.models import (
    AuditRecord,
    ChainHead,
    Checkpoint,
    Cosignature,
    DeadLetter,
    RetentionCut,
    SigningKey,
    TreeHash,
)
from services.audit.problems import AuditProblem
from services.common.bus import (
    DLQ_GROUP,
    DLQ_HEADER_PREFIX,
    DLQ_ID,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_SOURCE,
    DLQ_TIMESTAMP,
    DLQ_WITHHELD,
    Bus,
    Message,
    NotRetained,
)
from services.common.contracts.audit import (
    OCCURRED_MAX_MS,
    OCCURRED_MIN_MS,
    TEXT_LIMITS,
    all_fit,
    bounded,
    bounded_fields,
    storable,
)
from services.common.keywrap import KeyWrap, KeyWrapError
from services.common.logs import REQUEST_ID_HEADER, TRACEPARENT_HEADER
from services.common.pagination import one_more, page
from services.common.pb import audit_pb2
from services.common.security import Principal, Role, forbidden

log = logging.getLogger("tongban.audit")
T = TypeVar("T")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STRING_FIELDS = tuple(TEXT_LIMITS)


def event_id_of(event: audit_pb2.AuditEvent) -> str:
    """The event's id, or — when it has none that can be stored as it is — the SHA-256 of its
    deterministic encoding: the same event delivered again gets the same id, so stays one record."""
    given = event.event_id
    if 0 < len(given) <= TEXT_LIMITS["event_id"] and storable(given) == given:
        return given
    return hashlib.sha256(event.SerializeToString(deterministic=True)).hexdigest()


def occurred_of(event: audit_pb2.AuditEvent, received_at: datetime) -> tuple[datetime, int | None]:
    """(occurred_at, raw value kept): the producer's time, or — out of range — when it was received."""
    ms = event.occurred_unix_ms
    if OCCURRED_MIN_MS <= ms <= OCCURRED_MAX_MS:
        return EPOCH + timedelta(milliseconds=ms), None  # exact, unlike a float division
    return received_at, ms


_TEXTS = operator.attrgetter(*STRING_FIELDS)  # an event's text fields as a tuple, in one C call
_TEXT_LIMITS = tuple(TEXT_LIMITS[f] for f in STRING_FIELDS)


def record_values(event: audit_pb2.AuditEvent, received_at: datetime | None = None) -> dict[str, Any]:
    """The storable values of any decodable event, in the current canonical version: no NUL, no
    unpaired surrogate, each text within its column (cut with a visible marker), a time that
    exists, an id that is never empty."""
    return _values(event, received_at or datetime.now(UTC), event_id_of(event))


def _values(event: audit_pb2.AuditEvent, received_at: datetime, event_id: str) -> dict[str, Any]:
    occurred_at, raw = occurred_of(event, received_at)
    texts = _TEXTS(event)
    # Nearly every event fits as it is: checked for all its texts at once, in C (the per-field
    # path was half of the append's time, cProfile of bench/audit.py).
    if all_fit(texts, _TEXT_LIMITS):
        values = dict(zip(STRING_FIELDS, texts, strict=True))
    else:
        values = {f: bounded(t, limit) for f, t, limit in zip(STRING_FIELDS, texts, _TEXT_LIMITS, strict=True)}
    values |= {
        "canonical_version": CANONICAL_VERSION,
        "event_id": event_id,
        "occurred_at": occurred_at,
        "occurred_unix_ms_raw": raw,
        "fields": bounded_fields(list(event.fields)),
        "disclosed_fields": bounded_fields(list(event.disclosed_fields)),
    }
    return values


CHAIN = ("prev_hash", "hash", "leaf_index", "month")
# The columns append writes (the rest have defaults: seq, recorded_at); event_id is also a text field.
RECORD_COLUMNS = tuple(
    dict.fromkeys(
        [
            *STRING_FIELDS,
            "canonical_version",
            "event_id",
            "occurred_at",
            "occurred_unix_ms_raw",
            "fields",
            "disclosed_fields",
            *CHAIN,
        ]
    )
)
_ROW = operator.itemgetter(*RECORD_COLUMNS)
# Events per COPY within one append: the next chunk is hashed while PostgreSQL writes this one.
# make bench-audit-ingest, batches of 1000 on a quiet 2-core machine: 64 → 20.8k events/s,
# 125 → 22.0k, 250 → 20.5k, 500 → 15.1k (smaller chunks overlap more; tiny ones cost round trips).
APPEND_CHUNK = 125


def month_of(moment: datetime) -> date:
    """The partition month (UTC) of a record appended at ``moment``."""
    utc = moment.astimezone(UTC)
    return date(utc.year, utc.month, 1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"records_{month:%Y_%m}"


async def ensure_partition(session: AsyncSession, month: date) -> None:
    """The month's partition of ``audit.records`` (月分区), made when the month's first record is
    appended (under the chain head's lock, so once)."""
    await session.execute(
        text(
            f"CREATE TABLE IF NOT EXISTS audit.{partition_name(month)} PARTITION OF audit.records "
            f"FOR VALUES FROM ('{month.isoformat()}') TO ('{next_month(month).isoformat()}')"
        )
    )


async def append(session: AsyncSession, events: Sequence[audit_pb2.AuditEvent], now: datetime | None = None) -> int:
    """Append the events not yet recorded (redelivery is normal); returns how many were new.

    Each new record is also a leaf of the Merkle tree: its stored hashes are written in the same
    transaction, from the tree's right edge read once per batch (O(batch + log n) hashes). Records
    and tree hashes are written with COPY on the session's own connection (so in its
    transaction): building ORM objects cost four times the hashing (cProfile, bench/audit.py).
    The batch is written in chunks of :data:`APPEND_CHUNK`, each COPY running while the next chunk
    is made storable, encoded and hashed: the ingest's Python work and PostgreSQL's writing use a
    core each instead of taking turns."""
    head = await session.get(ChainHead, 1, with_for_update=True)
    if head is None:
        await session.execute(insert(ChainHead).values(id=1, seq=0, hash=GENESIS).on_conflict_do_nothing())
        head = await session.get(ChainHead, 1, with_for_update=True)
        assert head is not None
    received_at = now or datetime.now(UTC)
    # Months never go back in leaf order (a clock set back stays in the head's month): a month
    # dropped by retention is always a prefix of the leaves.
    month = max(month_of(received_at), head.month) if head.month is not None else month_of(received_at)
    if not events:
        return 0
    ids = [event_id_of(e) for e in events]
    # What is already recorded, and the tree's right edge, are read while the first chunk is
    # made storable and encoded (that needs neither); the chain and the tree wait for both.
    lookup = asyncio.create_task(_known_and_frontier(session, ids, head.seq))
    await asyncio.sleep(0)  # the query is sent before the encoding holds the loop
    known: set[str] | None = None
    frontier = merkle.Frontier()
    driver: Any = None
    prev = head.hash
    appended = 0
    writing: asyncio.Task[None] | None = None
    try:
        for first in range(0, len(events), APPEND_CHUNK):
            chunk = [
                _values(e, received_at, i)
                for e, i in zip(events[first : first + APPEND_CHUNK], ids[first : first + APPEND_CHUNK], strict=True)
            ]
            if known is None:
                known, frontier = await lookup
                driver = (await (await session.connection()).get_raw_connection()).driver_connection
            records: list[tuple[Any, ...]] = []
            stored: list[tuple[int, bytes]] = []
            for values in chunk:
                if values["event_id"] in known:
                    continue
                known.add(values["event_id"])
                digest = chain_hash(prev, values)
                index = frontier.size
                values |= {"prev_hash": prev, "hash": digest, "leaf_index": index, "month": month}
                records.append(_ROW(values))
                start = merkle.stored_hash_index(0, index)
                stored += [(start + k, h) for k, h in enumerate(frontier.append(bytes.fromhex(digest)))]
                prev = digest
            if not records:
                continue
            if writing is not None:
                await writing
            elif head.month != month:  # before the first COPY: nothing else is on the connection
                await ensure_partition(session, month)
                head.month = month
            # seq is the identity's next values, in COPY row order: chunks are written one after
            # another, so seq keeps the chain's order.
            writing = asyncio.create_task(_copy(driver, records, stored))
            appended += len(records)
            await asyncio.sleep(0)  # the COPY is sent before the next chunk's encoding holds the loop
        if writing is not None:
            await writing
    except BaseException:
        # Failed meanwhile (the transaction is rolled back): the query or COPY in flight is
        # stopped and its outcome collected, so nothing uses the connection after this.
        for task in (lookup, writing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await task
        raise
    if appended:
        head.hash = prev
        head.seq = head.seq + appended
        await session.flush()
    return appended


async def _known_and_frontier(session: AsyncSession, ids: list[str], size: int) -> tuple[set[str], merkle.Frontier]:
    # = ANY(one array parameter): an IN list of a thousand parameters costs more to compile than to run.
    query = select(AuditRecord.event_id).where(AuditRecord.event_id == any_(bindparam("ids", ids, ARRAY(String))))
    known = set((await session.scalars(query)).all())
    return known, await load_frontier(session, size)


async def _copy(driver: Any, records: list[tuple[Any, ...]], stored: list[tuple[int, bytes]]) -> None:
    await driver.copy_records_to_table("records", schema_name="audit", records=records, columns=RECORD_COLUMNS)
    await driver.copy_records_to_table("tree_hashes", schema_name="audit", records=stored, columns=("idx", "hash"))


async def read_stored(session: AsyncSession, indexes: Sequence[int]) -> dict[int, bytes]:
    rows = await session.execute(select(TreeHash.idx, TreeHash.hash).where(TreeHash.idx.in_(set(indexes))))
    return {idx: bytes(h) for idx, h in rows}


async def load_frontier(session: AsyncSession, size: int) -> merkle.Frontier:
    indexes = merkle.Frontier.indexes(size)
    stored = await read_stored(session, indexes)
    return merkle.Frontier(size, [stored[i] for i in indexes])


async def tree_size(session: AsyncSession) -> int:
    """How many records the tree has (the chain head counts them)."""
    head = await session.get(ChainHead, 1)
    return 0 if head is None else head.seq


async def compute_from_store(session: AsyncSession, compute: Callable[[merkle.Reader], T]) -> T:
    """Run a root or proof computation over the stored hashes, fetched in one query."""
    stored = await read_stored(session, merkle.needed(compute))
    return compute(merkle.reader_of(stored))


# ----------------------------------------------------------------------------- checkpoints


SIGNING_KEY_ID = 1  # the log has one checkpoint key: auditors keep its verifier key


@dataclass(frozen=True, slots=True)
class CheckpointSigner:
    """The log's checkpoint key, unsealed: in this process's memory only, never stored so."""

    name: str
    private: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        return notes.public_bytes(self.private)

    @property
    def verifier_key(self) -> str:
        return notes.verifier_key(self.name, self.public_key)


def sealing_context(key_id: int) -> str:
    """What a sealed key is bound to: it opens only on its own row."""
    return f"tongban.audit.signing_keys:{key_id}"


async def signing_key(session: AsyncSession, name: str, wrap: KeyWrap) -> CheckpointSigner:
    """The log's checkpoint key (签名密钥), unsealed. Made (Ed25519, sealed under the key-encryption
    key) the first time; a key an earlier version kept in clear is sealed now and its clear copy
    erased, in ``session``'s transaction (the row is locked: replicas starting together seal it
    once). Raises :class:`KeyWrapError` when ``wrap``'s KEK does not open the stored key; the
    transaction then changes nothing."""
    context = sealing_context(SIGNING_KEY_ID)
    row = await session.get(SigningKey, SIGNING_KEY_ID, with_for_update=True)
    if row is None:
        key = Ed25519PrivateKey.generate()
        await session.execute(
            insert(SigningKey)
            .values(
                id=SIGNING_KEY_ID,
                name=name,
                public_key=notes.public_bytes(key),
                sealed_private_key=wrap.seal(key.private_bytes_raw(), context),
            )
            .on_conflict_do_nothing()  # another instance made one first: use that one
        )
        row = await session.get(SigningKey, SIGNING_KEY_ID, with_for_update=True, populate_existing=True)
        assert row is not None
    if row.private_key is not None:
        row.sealed_private_key = wrap.seal(row.private_key, context)
        row.private_key = None
        await session.flush()
    assert row.sealed_private_key is not None  # made sealed, or sealed just above
    try:
        private = Ed25519PrivateKey.from_private_bytes(wrap.open(row.sealed_private_key, context))
    except KeyWrapError as err:
        raise KeyWrapError(
            "the audit log's checkpoint key does not open with TONGBAN_KEY_ENCRYPTION_KEY: it was sealed "
            'under another KEK (docs/operations.md, "Rotate keys and secrets"); nothing was changed'
        ) from err
    signer = CheckpointSigner(row.name, private)
    if signer.public_key != row.public_key:  # a key that would sign checkpoints no auditor can verify
        raise KeyWrapError("the audit log's checkpoint key does not match its stored public key")
    return signer


async def latest_checkpoint(session: AsyncSession) -> Checkpoint | None:
    query = select(Checkpoint).order_by(Checkpoint.tree_size.desc(), Checkpoint.id.desc()).limit(1)
    return (await session.scalars(query)).first()


async def take_checkpoint(session: AsyncSession, origin: str, signer: CheckpointSigner) -> Checkpoint | None:
    """Sign the tree as it is now (检查点), unless the latest checkpoint already covers it; None
    while the tree is empty. A tree smaller than a checkpoint already signed is never signed:
    records were removed, and ``verify`` says which."""
    size = await tree_size(session)
    latest = await latest_checkpoint(session)
    if latest is not None and latest.tree_size >= size:
        if latest.tree_size > size:
            log.error("tree is smaller than its last checkpoint", extra={"ctx_size": size})
        return latest
    if size == 0:
        return None
    root = await compute_from_store(session, lambda read: merkle.tree_hash(size, read))
    note = notes.sign_checkpoint(signer.private, signer.name, origin, size, root)
    row = Checkpoint(tree_size=size, root_hash=root, note=note)
    session.add(row)
    await session.flush()
    return row


async def checkpoint_at(session: AsyncSession, size: int) -> Checkpoint | None:
    query = select(Checkpoint).where(Checkpoint.tree_size == size).order_by(Checkpoint.id.desc()).limit(1)
    return (await session.scalars(query)).first()


async def served_note(session: AsyncSession, checkpoint: Checkpoint) -> str:
    """The checkpoint's signed note with every witness's cosignature line appended (C2SP: one
    note, the log's signature first)."""
    lines = (
        await session.scalars(
            select(Cosignature.line).where(Cosignature.checkpoint_id == checkpoint.id).order_by(Cosignature.id)
        )
    ).all()
    return checkpoint.note + "".join(f"{line}\n" for line in lines)


# A witness's clock may run ahead of ours by this much; a cosignature dated later is refused.
COSIGNATURE_SKEW = timedelta(minutes=5)


async def add_cosignature(
    session: AsyncSession, witnesses: Sequence[notes.VerifierKey], size: int, line: str, now: datetime
) -> tuple[Checkpoint, Cosignature]:
    """Keep a witness's cosignature (见证签名) of the checkpoint at ``size``: by one of the
    configured ``witnesses``, verifying over that checkpoint's body, not dated in the future, and
    not for a smaller tree than the witness cosigned before (a witness only moves forward). The
    same witness cosigning the same checkpoint again changes nothing."""
    claimed = notes.signer_of(line.strip())
    if claimed is None:
        raise AuditProblem.BAD_COSIGNATURE.problem("not a note signature line: — <witness name> <base64>")
    witness = next((w for w in witnesses if (w.name, w.key_hash) == claimed), None)
    if witness is None:
        raise AuditProblem.UNKNOWN_WITNESS.problem(
            f"{claimed[0]!r} with key hash {claimed[1].hex()} is not a witness this log is configured with"
        )
    checkpoint = await checkpoint_at(session, size)
    if checkpoint is None:
        raise AuditProblem.NO_CHECKPOINT.problem(f"no checkpoint was signed at tree size {size}")
    body, _ = notes.split_note(checkpoint.note)
    try:
        timestamp = notes.open_cosignature(line.strip(), body, witness)
    except notes.BadNote as err:
        raise AuditProblem.BAD_COSIGNATURE.problem(f"{err} (over the checkpoint of tree size {size})") from err
    signed_at = EPOCH + timedelta(seconds=timestamp)
    if signed_at > now + COSIGNATURE_SKEW:
        raise AuditProblem.BAD_COSIGNATURE.problem(f"the cosignature is dated {signed_at.isoformat()}, in the future")
    last = await session.scalar(select(func.max(Cosignature.tree_size)).where(Cosignature.witness == witness.name))
    if last is not None and last > size:
        raise AuditProblem.STALE_COSIGNATURE.problem(
            f"{witness.name} already cosigned a tree of {last} records; a witness never goes back to {size}"
        )
    await session.execute(
        insert(Cosignature)
        .values(
            checkpoint_id=checkpoint.id, tree_size=size, witness=witness.name, signed_at=signed_at, line=line.strip()
        )
        .on_conflict_do_nothing()
    )
    kept = (
        await session.scalars(
            select(Cosignature).where(Cosignature.checkpoint_id == checkpoint.id, Cosignature.witness == witness.name)
        )
    ).one()
    return checkpoint, kept


def check_tree_size(size: int, current: int) -> None:
    if size > current:
        raise AuditProblem.TREE_SIZE.problem(f"the tree has {current} records, not {size}")


async def inclusion(session: AsyncSession, event_id: str, size: int | None) -> dict[str, Any]:
    """The inclusion proof (包含证明) of a record in the tree of ``size`` leaves — by default the
    latest checkpoint's — with that checkpoint when one was signed at that size."""
    # An id that cannot be stored (a NUL…) names no record: asking PostgreSQL would be an error.
    known = storable(event_id) == event_id
    record = (
        (await session.scalars(select(AuditRecord).where(AuditRecord.event_id == event_id))).first() if known else None
    )
    if record is None:
        cut = await latest_cut(session)
        where = (
            ""
            if cut is None
            else f"; records before leaf {cut.end_leaf} were archived by the retention policy (latest archive: "
            f"{cut.archive}): an archive's records carry their leaf index and hash"
        )
        raise AuditProblem.UNKNOWN_EVENT.problem("no audit record has this event id" + where)
    if size is None:
        latest = await latest_checkpoint(session)
        if latest is None:
            raise AuditProblem.NO_CHECKPOINT.problem("no checkpoint has been signed yet; name a tree_size")
        size = latest.tree_size
    check_tree_size(size, await tree_size(session))
    if size <= record.leaf_index:
        raise AuditProblem.TREE_SIZE.problem(
            f"the record is leaf {record.leaf_index}: a tree of {size} records does not contain it"
        )
    index = record.leaf_index
    proof = await compute_from_store(session, lambda read: merkle.inclusion_proof(index, size, read))
    checkpoint = await checkpoint_at(session, size)
    return {
        "event_id": record.event_id,
        "seq": record.seq,
        "leaf_index": index,
        "tree_size": size,
        "leaf_data": record.hash,
        "hashes": [base64.b64encode(h).decode() for h in proof],
        "checkpoint": await served_note(session, checkpoint) if checkpoint else None,
    }


async def consistency(session: AsyncSession, old: int, new: int) -> dict[str, Any]:
    """The consistency proof (一致性证明) that the tree of ``old`` records is a prefix of ``new``."""
    if old > new:
        raise AuditProblem.CONSISTENCY_RANGE.problem(f"from ({old}) is after to ({new})")
    check_tree_size(new, await tree_size(session))
    proof = await compute_from_store(session, lambda read: merkle.consistency_proof(old, new, read))
    old_cp, new_cp = await checkpoint_at(session, old), await checkpoint_at(session, new)
    return {
        "from": old,
        "to": new,
        "hashes": [base64.b64encode(h).decode() for h in proof],
        "from_checkpoint": await served_note(session, old_cp) if old_cp else None,
        "to_checkpoint": await served_note(session, new_cp) if new_cp else None,
    }


EXPORT_MAX = 100_000  # records per export: the answer is built in memory


async def export_range(session: AsyncSession, start: int, end: int | None, size: int | None) -> list[bytes]:
    """The export (导出, NDJSON lines; see ``export.py``) of leaves [start, end) with the checkpoint
    of ``size`` records — by default the latest, and up to its end — and the stored hashes of the
    subtrees beside the range, so that it verifies offline against that checkpoint alone."""
    checkpoint = await (latest_checkpoint(session) if size is None else checkpoint_at(session, size))
    if checkpoint is None:
        raise AuditProblem.NO_CHECKPOINT.problem(
            "no checkpoint has been signed yet" if size is None else f"no checkpoint was signed at tree size {size}"
        )
    size = checkpoint.tree_size
    end = size if end is None else end
    if not start < end <= size:
        raise AuditProblem.EXPORT_RANGE.problem(f"leaves [{start}, {end}) are not a range within the {size} signed")
    if end - start > EXPORT_MAX:
        raise AuditProblem.EXPORT_RANGE.problem(f"{end - start} records: at most {EXPORT_MAX} per export")
    cut = await latest_cut(session)
    if cut is not None and start < cut.end_leaf:
        raise archived(cut, start)
    left = [merkle.stored_hash_index(level, n) for level, n in merkle.aligned_blocks(0, start)]
    right = [merkle.stored_hash_index(level, n) for level, n in merkle.aligned_blocks(end, size)]
    stored = await read_stored(session, left + right)
    query = (
        select(AuditRecord)
        .where(AuditRecord.leaf_index >= start, AuditRecord.leaf_index < end)
        .order_by(AuditRecord.leaf_index)
    )
    rows = (await session.scalars(query)).all()
    note = await served_note(session, checkpoint)
    head = export.header(start, end, size, note, [stored[i] for i in left], [stored[i] for i in right])
    return [head, *(export.record_line(partial(getattr, row)) for row in rows)]


def require_auditor(principal: Principal) -> None:
    if not principal.has_role(Role.AUDITOR):
        raise forbidden("Only an auditor may read the audit trail.")


def _bad(checked: int, row: AuditRecord | None, leaf: int | None, detail: str, **more: Any) -> dict[str, Any]:
    return {
        "ok": False,
        "checked": checked,
        "first_bad_seq": row.seq if row else None,
        "first_bad_event_id": row.event_id if row else None,
        "first_bad_leaf": leaf,
        "detail": detail,
        **more,
    }


async def verify(
    session: AsyncSession, batch: int = 5000, witnesses: Sequence[notes.VerifierKey] = ()
) -> dict[str, Any]:
    """Recompute the chain and the Merkle tree from the start, and check every signed checkpoint
    against them; report the first record that does not match.

    Per record, in seq order: its chain link, its leaf position, and the tree hashes stored for
    it. Per checkpoint: its signature, the cosignatures kept with it by the configured
    ``witnesses`` (a witness no longer configured is not checked), and, once the walk reaches its
    size, its root. A checkpoint whose root differs (the chain was rewritten consistently) cannot
    say which of its leaves changed: the first record after the last checkpoint that still
    matches is named.

    Every read is of one snapshot (a REPEATABLE READ, READ ONLY transaction), when ``session``
    has not begun a transaction — give it a fresh one: records appended meanwhile would
    otherwise be seen in part (their tree hashes or the head without the records) and reported
    as tampering. A session already in a transaction (a test's, writing) is read as it is."""
    if not session.in_transaction():
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True})
    key = await session.get(SigningKey, 1)
    checkpoints = list((await session.scalars(select(Checkpoint).order_by(Checkpoint.tree_size, Checkpoint.id))).all())
    for cp in checkpoints:
        if key is None:
            return _bad(0, None, None, f"checkpoint {cp.id} exists but the signing key does not")
        try:
            signed = notes.open_checkpoint(cp.note, key.name, key.public_key)
        except notes.BadNote as err:
            return _bad(0, None, None, f"checkpoint {cp.id}: {err}")
        if signed.size != cp.tree_size or signed.root != cp.root_hash:
            return _bad(0, None, None, f"checkpoint {cp.id}: its row differs from its signed note")
    failure = await _cosignature_failure(session, {c.id: c for c in checkpoints}, witnesses)
    if failure is not None:
        return _bad(0, None, None, failure)
    # After a retention cut (保留期截断) the live chain starts at the cut: its first record links
    # to the last archived one, and the tree is rebuilt from the cut's frontier. Checkpoints of
    # trees that end before the cut are checked by their signature here, and by the archives.
    cut = await latest_cut(session)
    start = 0 if cut is None else cut.end_leaf
    pending = iter(cp for cp in checkpoints if cp.tree_size >= start)
    next_cp = next(pending, None)
    frontier = merkle.Frontier() if cut is None else merkle.Frontier(cut.end_leaf, cut.frontier)
    prev, checked, last_seq, good_size = (GENESIS if cut is None else cut.last_hash), 0, 0, start
    after_good: AuditRecord | None = None  # the first record after the last matching checkpoint
    while next_cp is not None and next_cp.tree_size == start:
        if frontier.root() != next_cp.root_hash:
            return _bad(0, None, start, f"checkpoint {next_cp.id} signed another tree than the retention cut's")
        next_cp = next(pending, None)
    while True:
        rows = (
            await session.scalars(
                select(AuditRecord).where(AuditRecord.seq > last_seq).order_by(AuditRecord.seq).limit(batch)
            )
        ).all()
        if not rows:
            break
        lo = merkle.stored_hash_index(0, frontier.size)
        hi = merkle.stored_hash_count(frontier.size + len(rows))
        stored = {
            idx: bytes(h)
            for idx, h in (
                await session.execute(select(TreeHash.idx, TreeHash.hash).where(TreeHash.idx >= lo, TreeHash.idx < hi))
            )
        }
        for row in rows:
            position = frontier.size
            if position == good_size:
                after_good = row
            failure = record_failure(prev, position, partial(getattr, row))
            if failure is not None:
                return _bad(checked, row, position, failure)
            first = merkle.stored_hash_index(0, position)
            for k, h in enumerate(frontier.append(bytes.fromhex(row.hash))):
                if stored.get(first + k) != h:
                    return _bad(checked, row, position, "the tree hashes stored for the record do not match it")
            prev, last_seq = row.hash, row.seq
            checked += 1
            while next_cp is not None and next_cp.tree_size == frontier.size:
                if frontier.root() != next_cp.root_hash:
                    return _bad(
                        checked,
                        after_good,
                        good_size,
                        f"checkpoint {next_cp.id} signed another tree of {next_cp.tree_size} records: "
                        f"records from leaf {good_size} on were changed",
                    )
                good_size = next_cp.tree_size
                next_cp = next(pending, None)
    if next_cp is not None:
        return _bad(
            checked,
            None,
            frontier.size,
            f"checkpoint {next_cp.id} signed {next_cp.tree_size} records; only {frontier.size} remain: the tail is missing",
        )
    head = await session.get(ChainHead, 1)
    if head is not None and (head.hash != prev or head.seq != start + checked):
        return _bad(checked, None, frontier.size, "chain head does not match the last record")
    if await _stored_count(session) != merkle.stored_hash_count(frontier.size):
        return _bad(checked, None, frontier.size, "tree hashes are stored beyond the last record")
    return {
        "ok": True,
        "checked": checked,
        "head": prev,
        "tree_size": frontier.size,
        "root": base64.b64encode(frontier.root()).decode(),
        "checkpoints": len(checkpoints),
        "start_leaf": start,
    }


async def latest_cut(session: AsyncSession) -> RetentionCut | None:
    """The last retention cut (the live records start at its ``end_leaf``), or None."""
    return (await session.scalars(select(RetentionCut).order_by(RetentionCut.end_leaf.desc()).limit(1))).first()


def archived(cut: RetentionCut, leaf: int) -> Exception:
    """The 410 for a leaf no longer in the database: which archive holds the records before the cut."""
    return AuditProblem.ARCHIVED.problem(
        f"leaf {leaf} is before leaf {cut.end_leaf}, where the live records start: the records before it were "
        f"archived by the retention policy (the latest archive: {cut.archive}, sha256 {cut.archive_sha256}, "
        f"archived {cut.archived_at.isoformat()}); verify an archive offline with `python -m services.audit verify`"
    )


async def _cosignature_failure(
    session: AsyncSession, checkpoints: dict[int, Checkpoint], witnesses: Sequence[notes.VerifierKey]
) -> str | None:
    """Why a kept cosignature by a configured witness does not verify over its checkpoint, or None."""
    by_name = {w.name: w for w in witnesses}
    rows = (await session.scalars(select(Cosignature).order_by(Cosignature.id))).all()
    for row in rows:
        witness = by_name.get(row.witness)
        if witness is None:
            continue
        checkpoint = checkpoints.get(row.checkpoint_id)
        if checkpoint is None or checkpoint.tree_size != row.tree_size:
            return f"cosignature {row.id} by {row.witness}: not of the checkpoint of {row.tree_size} records"
        body, _ = notes.split_note(checkpoint.note)
        try:
            signed = notes.open_cosignature(row.line, body, witness)
        except notes.BadNote as err:
            return f"cosignature {row.id} by {row.witness}: {err}"
        if EPOCH + timedelta(seconds=signed) != row.signed_at:
            return f"cosignature {row.id} by {row.witness}: its row differs from its signed time"
    return None


async def _stored_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(TreeHash)) or 0)


# ----------------------------------------------------------------------------- dead letters

HEADER_MAX = 1024  # characters per header name or value kept


def _int_or_none(value: str | None) -> int | None:
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and 0 <= number < 2**63 else None


def letter_id_of(message: Message) -> str:
    """Names one dead-lettering: its ``dlq-id``, or — from a producer that sets none — a digest of
    the dead letter as consumed, so that a redelivered copy is still recognised."""
    given = message.headers.get(DLQ_ID, "")
    if 0 < len(given) <= 64 and storable(given) == given:
        return given
    digest = hashlib.sha256(
        orjson.dumps([message.topic, message.partition, message.offset, sorted(message.headers.items())])
    )
    digest.update(message.key or b"")
    digest.update(message.value)
    return "sha256:" + digest.hexdigest()[:57]


# Anything shaped like a 居民身份证号码 — a region code, a birth date, three digits, with or without
# its check character — in a dead letter's bytes. Protobuf keeps strings as UTF-8, so a subject
# value inside an encoded message (decodable or not) is found as it is.
ID_SHAPED = re.compile(
    rb"(?<![0-9])[1-8][0-9]{5}(?:19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]?(?![0-9])"
)
WITHHELD_HEADER = "…withheld"


def withheld_because(message: Message, personal_topics: Sequence[str]) -> str | None:
    """Why a dead letter's message must not be kept by audit, or None. The messages of the
    exchange's data plane (``personal_topics``: requests carry the subject's identifier in clear,
    replies the provider's data) are never kept, decodable or not; and any other message holding
    something shaped like a resident identity number is not kept either (defence in depth). The
    dead-letter topic's own retention still holds the message for the time it is configured to.
    A letter the bus already withheld (``dlq-withheld``, an empty value) says why itself."""
    if given := message.headers.get(DLQ_WITHHELD):
        return bounded(given, HEADER_MAX)
    source = message.headers.get(DLQ_SOURCE, "")
    if any(source.startswith(t) for t in personal_topics):
        return "the exchange's data-plane messages carry personal data in clear (个人信息): not kept by audit"
    parts = [message.value, message.key or b"", *(v.encode() for v in message.headers.values())]
    if any(ID_SHAPED.search(part) for part in parts):
        return "the message holds what looks like a resident identity number in clear: not kept by audit"
    return None


def dead_letter_values(message: Message, personal_topics: Sequence[str] = ()) -> dict[str, Any]:
    """The row of a message consumed from the dead-letter topic (all text made storable). A
    message that carries personal data in clear (:func:`withheld_because`) is kept without its
    value, and its key and headers only where they hold nothing shaped like an identity number:
    the letter still says where it came from, at which offset, and why it failed."""
    withheld = withheld_because(message, personal_topics)
    headers = {bounded(k, HEADER_MAX): bounded(v, HEADER_MAX) for k, v in message.headers.items()}
    key = message.key
    if withheld is not None:
        headers = {k: WITHHELD_HEADER if ID_SHAPED.search(v.encode()) else v for k, v in headers.items()}
        key = None if key is not None and ID_SHAPED.search(key) else key
    return {
        "letter_id": letter_id_of(message),
        "source_topic": bounded(message.headers.get(DLQ_SOURCE, ""), 255),
        "source_partition": _int_or_none(message.headers.get(DLQ_PARTITION)),
        "source_offset": _int_or_none(message.headers.get(DLQ_OFFSET)),
        "consumer_group": bounded(message.headers.get(DLQ_GROUP, ""), 255),
        "key": key,
        "value": None if withheld else message.value,
        "withheld": withheld,
        "headers": headers,
        "reason": bounded(message.headers.get(DLQ_REASON, ""), 2000),
    }


async def store_dead_letters(
    session: AsyncSession, messages: Sequence[Message], personal_topics: Sequence[str] = ()
) -> int:
    """Keep each dead letter once (redelivery is normal); returns how many were new.
    ``personal_topics``: prefixes of the topics whose messages are never kept (see
    :func:`withheld_because`)."""
    if not messages:
        return 0
    result = await session.execute(
        insert(DeadLetter)
        .values([dead_letter_values(m, personal_topics) for m in messages])
        .on_conflict_do_nothing(index_elements=[DeadLetter.letter_id])
        .returning(DeadLetter.id)
    )
    return len(result.all())


async def count_unreplayed(session: AsyncSession) -> int:
    """Dead letters that hold their message and were not replayed. A withheld one is not counted:
    its message is in its source topic only for that topic's retention (a day on the data plane),
    and replaying it is a deliberate act per letter (:func:`replay_dead_letters`)."""
    count = await session.scalar(
        select(func.count())
        .select_from(DeadLetter)
        .where(DeadLetter.replayed_at.is_(None), DeadLetter.value.is_not(None))
    )
    return int(count or 0)


async def list_dead_letters(
    session: AsyncSession, limit: int, cursor: int | None, replayed: bool | None
) -> tuple[list[DeadLetter], str | None]:
    """Newest first; ``replayed`` True/False filters, None lists both."""
    query = one_more(select(DeadLetter).order_by(DeadLetter.id.desc()), limit)
    if cursor is not None:
        query = query.where(DeadLetter.id < cursor)
    if replayed is not None:
        query = query.where(DeadLetter.replayed_at.is_not(None) if replayed else DeadLetter.replayed_at.is_(None))
    rows = list((await session.scalars(query)).all())
    return page(rows, limit, lambda d: d.id)


def replay_message(letter: DeadLetter) -> Message:
    """The message as it was before it was dead-lettered: its topic, key, value and own headers."""
    assert letter.value is not None, "a withheld dead letter is replayed from its source (replay_withheld)"
    headers = {k: v for k, v in letter.headers.items() if not k.startswith(DLQ_HEADER_PREFIX)}
    return Message(letter.source_topic, letter.value, letter.key, headers)


ADDED_ON_PUBLISH = frozenset({REQUEST_ID_HEADER, TRACEPARENT_HEADER})  # services.common.bus.outgoing_headers

# Re-reads the message at (topic, partition, offset): KafkaBus.read_at.
Reread = Callable[[str, int, int], Awaitable[Message]]


class ReplayRefused(Exception):
    """A withheld dead letter that cannot be replayed now; the text, for the operator, names
    where the message was and why (never the message). Nothing was changed."""


def not_the_same(letter: DeadLetter, found: Message) -> str | None:
    """Why ``found`` (re-read at the letter's source offset) is not the message the letter was
    made of, or None: the key, the record's timestamp (``dlq-timestamp``, when the producer
    recorded it) and every header the letter kept must be the same."""
    if letter.key is not None and found.key != letter.key:
        return "key differs"
    recorded = _int_or_none(letter.headers.get(DLQ_TIMESTAMP))
    if recorded is not None and found.timestamp != recorded:
        return "timestamp differs"
    # As dead_letter_values kept them: bounded; a value shaped like an identity number withheld.
    seen = {bounded(k, HEADER_MAX): bounded(v, HEADER_MAX) for k, v in found.headers.items()}
    for name, value in letter.headers.items():
        if name.startswith(DLQ_HEADER_PREFIX) or value == WITHHELD_HEADER:
            continue
        # The bus adds the sender's request id and trace to what it publishes when the message has
        # none: a dead letter may carry them where the message itself did not.
        if name not in seen and name in ADDED_ON_PUBLISH:
            continue
        if seen.get(name) != value:
            return f"header {name} differs"
    return None


def _retention_text(ms: int | None) -> str:
    if ms is None:
        return "retention.ms unknown"
    if ms < 0:
        return "retention.ms=-1 (kept for ever)"
    return f"retention.ms={ms} ({ms / 3_600_000:g} h)"


async def replay_withheld(letter: DeadLetter, reread: Reread) -> Message:
    """The message to send back for a withheld dead letter: re-read from its source topic at the
    recorded partition and offset, checked to be the same message, with its own key, value and
    headers. The message is personal data (个人信息): it is only ever published, never kept or
    logged. :class:`ReplayRefused` when it cannot be re-read as it was."""
    from aiokafka.errors import KafkaError  # the bus's dependency, imported where it is used

    where = f"{letter.source_topic} partition {letter.source_partition} offset {letter.source_offset}"
    if letter.source_partition is None or letter.source_offset is None:
        raise ReplayRefused(f"未记录源分区或偏移量，无法重读 (no source partition/offset recorded): {where}")
    try:
        found = await reread(letter.source_topic, letter.source_partition, letter.source_offset)
    except NotRetained as gone:
        kept = "the topic or partition does not exist"
        if gone.first is not None and gone.end is not None:
            kept = f"offsets {gone.first}..{gone.end - 1} retained" if gone.end > gone.first else "nothing retained"
        raise ReplayRefused(
            f"原消息已不在源主题中，无法重放 (the original message is no longer retained): {where}; "
            f"{kept}, {_retention_text(gone.retention_ms)}"
        ) from None
    except KafkaError as err:  # e.g. no right to read the source topic
        raise ReplayRefused(f"无法读取源主题 (cannot read the source topic): {where}: {type(err).__name__}") from None
    if (why := not_the_same(letter, found)) is not None:
        raise ReplayRefused(f"源主题该位置的消息不是死信所指的消息 (not the dead-lettered message): {where}: {why}")
    headers = {k: v for k, v in found.headers.items() if not k.startswith(DLQ_HEADER_PREFIX)}
    return Message(letter.source_topic, found.value, found.key, headers)


@dataclass(frozen=True, slots=True)
class Replayed:
    """What a replay run did: how many letters it sent back; the ids given that do not exist;
    the withheld letters that could not be re-read (:class:`ReplayRefused`)."""

    count: int
    missing: list[int]
    refused: list[int]


async def replay_dead_letters(
    sessions: async_sessionmaker[AsyncSession],
    bus: Bus,
    ids: Sequence[int] | None,
    say: Callable[[str], None],
    reread: Reread | None = None,
) -> Replayed:
    """Send dead letters back to their source topic — ``ids``, or every one not yet replayed — and
    mark them replayed, one at a time (a crash loses no progress; consumers are idempotent, so a
    letter sent twice by a crash between publish and commit does no harm). Letters already replayed
    are skipped, so running it twice replays nothing twice.

    A withheld letter (its message is personal data, not kept) is replayed only when named by id,
    and only with ``reread``: its message is re-read from the source topic (:func:`replay_withheld`).
    One that cannot be is left as it was, and said so."""
    missing: list[int] = []
    if ids is not None:
        async with sessions() as session:
            found = set((await session.scalars(select(DeadLetter.id).where(DeadLetter.id.in_(ids)))).all())
        missing = [i for i in ids if i not in found]
        for i in missing:
            say(f"死信 {i}: not found")
    async with sessions() as session:
        query = select(DeadLetter.id).where(DeadLetter.replayed_at.is_(None)).order_by(DeadLetter.id)
        todo = list((await session.scalars(query if ids is None else query.where(DeadLetter.id.in_(ids)))).all())
    if ids is not None:
        for i in sorted(set(ids) - set(todo) - set(missing)):
            say(f"死信 {i}: already replayed, skipped")
    replayed, refused = 0, []
    for n, letter_id in enumerate(todo, 1):
        async with sessions.begin() as session:
            letter = (
                await session.scalars(
                    select(DeadLetter)
                    .where(DeadLetter.id == letter_id, DeadLetter.replayed_at.is_(None))
                    .with_for_update(skip_locked=True)
                )
            ).first()
            if letter is None:  # replayed meanwhile by another run
                say(f"死信 {letter_id}: replayed meanwhile, skipped")
                continue
            if not letter.source_topic:
                say(f"死信 {letter_id}: no source topic recorded, cannot replay")
                continue
            if letter.value is not None:
                message = replay_message(letter)
            elif ids is None or reread is None:
                say(
                    f"死信 {letter_id}: withheld (its message is personal data, not kept), skipped; to re-read it "
                    f"from {letter.source_topic} within that topic's retention: dead-letters replay --id {letter_id}"
                )
                continue
            else:
                try:
                    message = await replay_withheld(letter, reread)
                except ReplayRefused as refusal:
                    say(f"死信 {letter_id}: {refusal}; nothing was replayed")
                    refused.append(letter_id)
                    continue
            await bus.publish(message)
            await session.execute(update(DeadLetter).where(DeadLetter.id == letter_id).values(replayed_at=func.now()))
        replayed += 1
        how = " (re-read from its source offset)" if letter.value is None else ""
        say(f"死信 {letter_id}: replayed to {letter.source_topic}{how} ({n}/{len(todo)})")
    return Replayed(replayed, missing, refused)
