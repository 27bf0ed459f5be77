from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.internal import containers as _containers

DESCRIPTOR: _descriptor.FileDescriptor

class AuditEvent(_message.Message):
    __slots__ = ("action", "actor", "consumer_client_id", "consumer_dept", "event_id", "fields", "occurred_unix_ms", "outcome", "provider_dept", "purpose", "query_id", "reason", "request_id", "resource_code", "service", "subject_hash", "subject_type")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_DEPT_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_DEPT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_CODE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_HASH_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_unix_ms: int
    service: str
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
    fields: _containers.RepeatedScalarFieldContainer[str]
    query_id: str
    request_id: str
    def __init__(self, event_id: str | None = ..., occurred_unix_ms: int | None = ..., service: str | None = ..., action: str | None = ..., outcome: str | None = ..., reason: str | None = ..., actor: str | None = ..., consumer_dept: str | None = ..., consumer_client_id: str | None = ..., provider_dept: str | None = ..., resource_code: str | None = ..., purpose: str | None = ..., subject_type: str | None = ..., subject_hash: str | None = ..., fields: _Iterable[str] | None = ..., query_id: str | None = ..., request_id: str | None = ...) -> None: ...
