"""Audit tables (schema ``audit``): an append-only, hash-chained record of accesses, and the dead
letters (死信) of the whole platform."""

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.contracts.audit import FIELD_NAME_MAX, TEXT_LIMITS
from services.common.db import one_of, schema_metadata
from services.common.outbox import OutboxRow


class Base(DeclarativeBase):
    metadata = schema_metadata("audit")


def _text(field: str) -> Any:
    return mapped_column(String(TEXT_LIMITS[field]))


class AuditRecord(Base):
    """AuditRecord — 访问记录. ``hash`` = SHA-256(previous hash + this record's canonical form, in
    the version ``canonical_version`` names)."""

    __tablename__ = "records"
    __table_args__ = (
        # Auditors' queries (services.audit.queries) filter by one of these and page in time
        # order, (occurred_at, seq): each index serves its filter, its sort and its cursor.
        Index("ix_records_subject_time", "subject_hash", "occurred_at", "seq"),
        Index("ix_records_consumer_time", "consumer_dept", "occurred_at", "seq"),
        Index("ix_records_provider_time", "provider_dept", "occurred_at", "seq"),
        Index("ix_records_time", "occurred_at", "seq"),
        # The completeness check (services.audit.completeness) looks records up by query id.
        Index("ix_records_query_id", "query_id", postgresql_where=text("query_id <> ''")),
        # An auditor's look-up of every record of one evidence bundle, or of one batch.
        Index("ix_records_bundle_id", "bundle_id", postgresql_where=text("bundle_id <> ''")),
        Index("ix_records_batch_id", "batch_id", postgresql_where=text("batch_id <> ''")),
        # Unique per partition (PostgreSQL's rule for a partitioned table): the append, serialised
        # on the chain head, keeps event ids unique, and verify checks leaves are dense.
        UniqueConstraint("event_id", "month"),
        UniqueConstraint("leaf_index", "month"),
        # One partition per month (月分区, records_YYYY_MM), made by the append when a month
        # begins, dropped whole by the retention command once archived (services.audit.retention).
        {"postgresql_partition_by": "RANGE (month)"},
    )

    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    # The UTC month the record was appended in (its partition); never decreasing in leaf order.
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    canonical_version: Mapped[int] = mapped_column(SmallInteger)
    event_id: Mapped[str] = mapped_column(String(TEXT_LIMITS["event_id"]))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The producer's occurred_unix_ms when it was out of range (occurred_at is then the time the
    # event was received); None when occurred_at is the producer's.
    occurred_unix_ms_raw: Mapped[int | None] = mapped_column(BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    service: Mapped[str] = _text("service")
    action: Mapped[str] = _text("action")
    outcome: Mapped[str] = _text("outcome")
    reason: Mapped[str] = _text("reason")
    actor: Mapped[str] = _text("actor")
    consumer_dept: Mapped[str] = _text("consumer_dept")
    consumer_client_id: Mapped[str] = _text("consumer_client_id")
    provider_dept: Mapped[str] = _text("provider_dept")
    resource_code: Mapped[str] = _text("resource_code")
    purpose: Mapped[str] = _text("purpose")
    subject_type: Mapped[str] = _text("subject_type")
    subject_hash: Mapped[str] = _text("subject_hash")
    # Which subject key made subject_hash ("" for records from before key ids, or from a producer
    # that does not know it): keys are rotated, and a search hashes under each key kept.
    subject_key_id: Mapped[str] = _text("subject_key_id")
    fields: Mapped[list[str]] = mapped_column(ARRAY(String(FIELD_NAME_MAX)))
    # A verifiable answer's SD-JWT hash and the items it disclosed ("" and [] for anything else,
    # and for records from before canonical version 4).
    answer_sha256: Mapped[str] = _text("answer_sha256")
    disclosed_fields: Mapped[list[str]] = mapped_column(ARRAY(String(FIELD_NAME_MAX)))
    # The evidence bundle (免提交) or batch (批量查询) an exchange query was part of ("" otherwise,
    # and for records from before canonical version 5).
    bundle_id: Mapped[str] = _text("bundle_id")
    batch_id: Mapped[str] = _text("batch_id")
    query_id: Mapped[str] = _text("query_id")
    request_id: Mapped[str] = _text("request_id")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # Position in the Merkle tree (0, 1, 2… in seq order, no gaps, unlike seq): a proof names it.
    leaf_index: Mapped[int] = mapped_column(BigInteger)


class ChainHead(Base):
    """The last link of the chain; appends lock this row, so the chain has one order."""

    __tablename__ = "chain_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    month: Mapped[date | None] = mapped_column(Date)  # the last record's month (partition)


class RetentionCut(Base):
    """RetentionCut — 保留期截断: a month of records archived (records plus the signed checkpoint
    covering them, verified once written) and then dropped. Leaves [start_leaf, end_leaf) are in
    the archive; the live chain starts at ``end_leaf`` with ``last_hash`` as its prev_hash, and
    ``frontier`` (the hashes of the tree's complete subtrees over [0, end_leaf)) lets verify
    rebuild the Merkle tree over every leaf since genesis without the dropped records. The tree's
    stored hashes are kept whole, so proofs for any leaf still come from the live service."""

    __tablename__ = "retention_cuts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    month: Mapped[date] = mapped_column(Date, unique=True)
    start_leaf: Mapped[int] = mapped_column(BigInteger)
    end_leaf: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))
    frontier: Mapped[list[bytes]] = mapped_column(ARRAY(LargeBinary))
    checkpoint_size: Mapped[int] = mapped_column(BigInteger)  # the checkpoint the archive carries
    archive: Mapped[str] = mapped_column(Text)  # the archive's file name in the archive directory
    archive_sha256: Mapped[str] = mapped_column(String(64))
    records: Mapped[int] = mapped_column(BigInteger)
    archived_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TreeHash(Base):
    """TreeHash — 树哈希: one stored hash of the Merkle tree (``services.audit.merkle``), at its
    tlog storage index; written with the records that complete it, never changed."""

    __tablename__ = "tree_hashes"

    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class Checkpoint(Base):
    """Checkpoint — 检查点: the signed note (C2SP tlog-checkpoint) of the tree at ``tree_size``."""

    __tablename__ = "checkpoints"
    __table_args__ = (Index("ix_checkpoints_tree_size", "tree_size"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary)
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Cosignature(Base):
    """Cosignature — 见证签名: a witness's (C2SP tlog-cosignature) statement that the checkpoint is
    consistent with every checkpoint of this log it saw before; served appended to the checkpoint.
    Kept once per witness and checkpoint: a repeated post changes nothing."""

    __tablename__ = "cosignatures"
    __table_args__ = (
        UniqueConstraint("checkpoint_id", "witness"),
        Index("ix_cosignatures_witness_tree_size", "witness", "tree_size"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    checkpoint_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("audit.checkpoints.id"))
    tree_size: Mapped[int] = mapped_column(BigInteger)
    witness: Mapped[str] = mapped_column(String(255))  # the witness key's name
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the cosignature's own time
    line: Mapped[str] = mapped_column(Text)  # the note signature line, as the witness sent it
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SigningKey(Base):
    """The log's Ed25519 checkpoint key (签名密钥), made on first start, its private half sealed
    (AES-GCM) under the key-encryption key of the environment (services.common.keywrap): the
    database alone cannot sign. Whoever holds both can: the auditors' own copies of checkpoints
    (and witnesses' cosignatures) are what catch that."""

    __tablename__ = "signing_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sealed_private_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Before the key-encryption key: the raw key in clear, sealed (and cleared) at the next start.
    private_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DeadLetter(Base):
    """DeadLetter — 死信: a message some consumer of the platform could not handle, as it was
    dead-lettered (value, key, headers), with why; ``replayed_at`` once it was sent back."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    letter_id: Mapped[str] = mapped_column(String(64), unique=True)  # dlq-id, or a digest: idempotency
    source_topic: Mapped[str] = mapped_column(String(255))
    source_partition: Mapped[int | None] = mapped_column(Integer)
    source_offset: Mapped[int | None] = mapped_column(BigInteger)
    consumer_group: Mapped[str] = mapped_column(String(255))
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    # None when the message was not kept (``withheld`` says why): it carried personal data in
    # clear, which must not outlive its topic's own retention here (services.audit.service).
    value: Mapped[bytes | None] = mapped_column(LargeBinary)
    withheld: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict[str, str]] = mapped_column(JSONB)
    reason: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AlertRule(StrEnum):
    """The anomaly rules (异常规则) of ``services.audit.anomalies``; thresholds in ``AuditSettings``."""

    VOLUME = "volume"  # a consumer far above its own baseline (访问量突增)
    OFF_HOURS = "off_hours"  # queries outside working hours (非工作时间访问)
    DENIALS = "denials"  # repeated denials of one system (多次被拒)
    SUBJECT_SPREAD = "subject_spread"  # one subject read by many consumers (同一主体被多部门查询)
    RARE_PURPOSE = "rare_purpose"  # a purpose the consumer rarely uses (罕用事项)


class Alert(Base):
    """Alert — 告警: one rule exceeded for one key (a consumer, a system, a subject hash) in one
    window. ``dedupe_key`` makes a re-evaluation of the same window raise nothing new."""

    __tablename__ = "alerts"
    __table_args__ = (one_of("rule", AlertRule), Index("ix_alerts_open", "acknowledged_at", "id"))

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    rule: Mapped[str] = mapped_column(String(32))
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    # What the alert is about (empty when the rule does not key on it).
    consumer_dept: Mapped[str] = _text("consumer_dept")
    actor: Mapped[str] = _text("actor")
    purpose: Mapped[str] = _text("purpose")
    subject_hash: Mapped[str] = _text("subject_hash")
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    observed: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(String(500))
    raised_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(String(TEXT_LIMITS["actor"]))


class LedgerWindow(Base):
    """LedgerWindow — 台账窗口: the exchange's ledger of one window (the ids of the queries it
    closed in [window_start, window_end)), and what the completeness check found: ``missing``, the
    ids with no ``exchange.query`` record at the last check; ``reconciled_at`` once none is."""

    __tablename__ = "ledger_windows"
    __table_args__ = (Index("ix_ledger_windows_open", "window_end", postgresql_where=text("reconciled_at IS NULL")),)

    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    query_ids: Mapped[list[str]] = mapped_column(ARRAY(String(TEXT_LIMITS["query_id"])))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    missing: Mapped[list[str]] = mapped_column(ARRAY(String(TEXT_LIMITS["query_id"])), server_default="{}")
    reconciled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Outbox(OutboxRow, Base):
    """The audit service's own audit events (审计查询留痕: an auditor's search, export, aggregate,
    a citizen's report, an alert acknowledged), written in the route's transaction and published
    to ``audit.events``: they are appended in batches with every other service's events, instead
    of each taking the chain's lock in the request (see services.common.outbox)."""
