from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper

DESCRIPTOR: _descriptor.FileDescriptor

class ExchangeRequest(_message.Message):
    __slots__ = ("consumer_client_id", "consumer_dept", "deadline_unix_ms", "fields", "grant_id", "provider_dept", "purpose", "query_id", "resource_code", "resource_version", "subject_type", "subject_value")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_CODE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_DEPT_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_DEPT_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_VALUE_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    resource_code: str
    resource_version: int
    consumer_dept: str
    consumer_client_id: str
    provider_dept: str
    purpose: str
    subject_type: str
    subject_value: str
    fields: _containers.RepeatedScalarFieldContainer[str]
    deadline_unix_ms: int
    grant_id: str
    def __init__(self, query_id: str | None = ..., resource_code: str | None = ..., resource_version: int | None = ..., consumer_dept: str | None = ..., consumer_client_id: str | None = ..., provider_dept: str | None = ..., purpose: str | None = ..., subject_type: str | None = ..., subject_value: str | None = ..., fields: _Iterable[str] | None = ..., deadline_unix_ms: int | None = ..., grant_id: str | None = ...) -> None: ...

class ExchangeReply(_message.Message):
    __slots__ = ("answered_unix_ms", "data", "error", "key_id", "provider_dept", "query_id", "request_hash", "signature", "status")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[ExchangeReply.Status]
        OK: _ClassVar[ExchangeReply.Status]
        NOT_FOUND: _ClassVar[ExchangeReply.Status]
        ERROR: _ClassVar[ExchangeReply.Status]
    STATUS_UNSPECIFIED: ExchangeReply.Status
    OK: ExchangeReply.Status
    NOT_FOUND: ExchangeReply.Status
    ERROR: ExchangeReply.Status
    class DataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: str | None = ..., value: str | None = ...) -> None: ...
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_DEPT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    status: ExchangeReply.Status
    data: _containers.ScalarMap[str, str]
    error: str
    provider_dept: str
    request_hash: str
    signature: str
    key_id: str
    answered_unix_ms: int
    def __init__(self, query_id: str | None = ..., status: ExchangeReply.Status | str | None = ..., data: _Mapping[str, str] | None = ..., error: str | None = ..., provider_dept: str | None = ..., request_hash: str | None = ..., signature: str | None = ..., key_id: str | None = ..., answered_unix_ms: int | None = ...) -> None: ...
