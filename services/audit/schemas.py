"""Audit API schemas."""

from datetime import datetime

from pydantic import BaseModel


class AuditRecordPublic(BaseModel):
    seq: int
    event_id: str
    occurred_at: datetime
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
