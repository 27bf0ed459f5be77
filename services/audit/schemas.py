"""Audit API schemas."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from services.common.schemas import Strict


class AuditRecordPublic(BaseModel):
    seq: int
    canonical_version: int
    event_id: str
    occurred_at: datetime
    occurred_unix_ms_raw: int | None
    recorded_at: datetime
    action: str
    outcome: str
    reason: str
    actor: str
    consumer_dept: str
    consumer_client_id: str
    provider_dept: str
    resource_code: str
    purpose: str
    subject_type: str
    subject_hash: str
    subject_key_id: str
    fields: list[str]
    query_id: str
    request_id: str
    hash: str


class AuditRecordList(BaseModel):
    items: list[AuditRecordPublic]
    next_cursor: str | None


class VerifyReport(BaseModel):
    ok: bool
    checked: int
    head: str | None = None
    first_bad_seq: int | None = None
    first_bad_event_id: str | None = None
    first_bad_leaf: int | None = None  # position in the Merkle tree; set also when the record is gone
    detail: str | None = None
    tree_size: int | None = None
    root: str | None = None  # base64, as in a checkpoint
    checkpoints: int | None = None  # how many signed checkpoints were checked


class InclusionProof(BaseModel):
    """RFC 9162 inclusion proof: leaf ``leaf_index`` of the tree of ``tree_size`` records. The
    leaf's data is the 32 bytes of the record's chain hash ``leaf_data`` (hex); ``hashes`` are
    base64, leaf to root; ``checkpoint`` is the signed note of that tree size, if one was taken."""

    event_id: str
    seq: int
    leaf_index: int
    tree_size: int
    leaf_data: str
    hashes: list[str]
    checkpoint: str | None


class ConsistencyProof(BaseModel):
    """RFC 9162 consistency proof between the trees of ``from`` and ``to`` records (base64)."""

    model_config = ConfigDict(populate_by_name=True)

    from_: int = Field(alias="from")
    to: int
    hashes: list[str]
    from_checkpoint: str | None
    to_checkpoint: str | None


class DeadLetterPublic(BaseModel):
    """A dead letter (死信): where it came from, why, and the message itself (bytes in base64)."""

    id: int
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    consumer_group: str
    key: str | None  # the key as text, when it is UTF-8
    key_base64: str | None
    value_base64: str
    headers: dict[str, str]
    reason: str
    received_at: datetime
    replayed_at: datetime | None


class DeadLetterList(BaseModel):
    items: list[DeadLetterPublic]
    next_cursor: str | None


class CosignatureCreate(Strict):
    """A witness's cosignature (C2SP tlog-cosignature) of the checkpoint at ``tree_size``: its
    note signature line, ``— <witness name> <base64(key hash ‖ time ‖ signature)>``."""

    tree_size: int = Field(ge=1, le=2**63 - 1)
    cosignature: str = Field(min_length=1, max_length=1024)


class CosignaturePublic(BaseModel):
    tree_size: int
    witness: str
    signed_at: datetime
    cosignature: str
    checkpoint: str  # the signed note with every cosignature kept so far
