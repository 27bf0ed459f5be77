"""Audit API schemas."""

from datetime import date, datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.common.schemas import Strict
from services.common.subjects import SubjectType


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
    answer_sha256: str
    disclosed_fields: list[str]
    bundle_id: str
    batch_id: str
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
    start_leaf: int | None = None  # where the live chain starts (after a retention cut; else 0)


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
    value_base64: str | None  # None: not kept, see withheld
    withheld: str | None  # why the message itself was not kept (it carried personal data in clear)
    headers: dict[str, str]
    reason: str
    received_at: datetime
    replayed_at: datetime | None


class DeadLetterList(BaseModel):
    items: list[DeadLetterPublic]
    next_cursor: str | None


class SubjectRef(Strict):
    """The person (居民身份证号码) or organisation (统一社会信用代码), in clear: sent in the body so
    that it is in no URL, proxy log or browser history; only its keyed hash is looked up."""

    type: SubjectType = "id_card"
    value: str = Field(min_length=1, max_length=32)


class SubjectAccessQuery(Strict):
    subject: SubjectRef
    from_: AwareDatetime | None = Field(None, alias="from")
    to: AwareDatetime | None = None
    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = Field(None, min_length=1, max_length=512)


class SubjectAccess(BaseModel):
    """One access to the person's data (数据使用记录): who (department 部门 and system 系统), when,
    for which service item (事项), from which provider and resource, which items (数据项), and how:
    ``exchange.query`` (a query, its ``query_id``) or ``exchange.feed`` (a change about the person
    in a change feed, 库表共享, read by the consumer; no query id)."""

    occurred_at: datetime
    action: str
    consumer_dept: str
    consumer_client_id: str
    purpose: str
    provider_dept: str
    resource_code: str
    fields: list[str]
    outcome: str
    query_id: str


class SubjectAccessList(BaseModel):
    items: list[SubjectAccess]
    next_cursor: str | None


class DayCountPublic(BaseModel):
    day: date
    key: str  # the consumer, provider, resource or purpose counted
    total: int
    outcomes: dict[str, int]


class AggregateList(BaseModel):
    by: str
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    items: list[DayCountPublic]


class AlertPublic(BaseModel):
    id: int
    rule: str
    consumer_dept: str
    actor: str
    purpose: str
    subject_hash: str
    window_start: datetime
    window_end: datetime
    observed: float
    threshold: float
    detail: str
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None


class AlertList(BaseModel):
    items: list[AlertPublic]
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
