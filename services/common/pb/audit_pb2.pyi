from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class AuditEvent(_message.Message):
    __slots__ = ("event_id", "occurred_unix_ms", "service", "action", "outcome", "reason", "actor", "consumer_dept", "consumer_client_id", "provider_dept", "resource_code", "purpose", "subject_type", "subject_hash", "fields", "query_id", "request_id", "subject_key_id", "answer_sha256", "disclosed_fields", "bundle_id", "batch_id")
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
    SUBJECT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWER_SHA256_FIELD_NUMBER: _ClassVar[int]
    DISCLOSED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
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
    subject_key_id: str
    answer_sha256: str
    disclosed_fields: _containers.RepeatedScalarFieldContainer[str]
    bundle_id: str
    batch_id: str
    def __init__(self, event_id: _Optional[str] = ..., occurred_unix_ms: _Optional[int] = ..., service: _Optional[str] = ..., action: _Optional[str] = ..., outcome: _Optional[str] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., consumer_dept: _Optional[str] = ..., consumer_client_id: _Optional[str] = ..., provider_dept: _Optional[str] = ..., resource_code: _Optional[str] = ..., purpose: _Optional[str] = ..., subject_type: _Optional[str] = ..., subject_hash: _Optional[str] = ..., fields: _Optional[_Iterable[str]] = ..., query_id: _Optional[str] = ..., request_id: _Optional[str] = ..., subject_key_id: _Optional[str] = ..., answer_sha256: _Optional[str] = ..., disclosed_fields: _Optional[_Iterable[str]] = ..., bundle_id: _Optional[str] = ..., batch_id: _Optional[str] = ...) -> None: ...
