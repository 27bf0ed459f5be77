"""Audit API schemas."""

from datetime import datetime

from pydantic import BaseModel


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
    detail: str | None = None


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
