from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExchangeRequest(_message.Message):
    __slots__ = ("query_id", "resource_code", "resource_version", "consumer_dept", "consumer_client_id", "provider_dept", "purpose", "subject_type", "subject_value", "fields", "deadline_unix_ms", "grant_id")
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
    def __init__(self, query_id: _Optional[str] = ..., resource_code: _Optional[str] = ..., resource_version: _Optional[int] = ..., consumer_dept: _Optional[str] = ..., consumer_client_id: _Optional[str] = ..., provider_dept: _Optional[str] = ..., purpose: _Optional[str] = ..., subject_type: _Optional[str] = ..., subject_value: _Optional[str] = ..., fields: _Optional[_Iterable[str]] = ..., deadline_unix_ms: _Optional[int] = ..., grant_id: _Optional[str] = ...) -> None: ...

class ExchangeReply(_message.Message):
    __slots__ = ("query_id", "status", "data", "error", "provider_dept", "request_hash", "signature", "key_id", "answered_unix_ms", "deadline_unix_ms", "sd_jwt")
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
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_DEPT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SD_JWT_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    status: ExchangeReply.Status
    data: _containers.ScalarMap[str, str]
    error: str
    provider_dept: str
    request_hash: str
    signature: str
    key_id: str
    answered_unix_ms: int
    deadline_unix_ms: int
    sd_jwt: str
    def __init__(self, query_id: _Optional[str] = ..., status: _Optional[_Union[ExchangeReply.Status, str]] = ..., data: _Optional[_Mapping[str, str]] = ..., error: _Optional[str] = ..., provider_dept: _Optional[str] = ..., request_hash: _Optional[str] = ..., signature: _Optional[str] = ..., key_id: _Optional[str] = ..., answered_unix_ms: _Optional[int] = ..., deadline_unix_ms: _Optional[int] = ..., sd_jwt: _Optional[str] = ...) -> None: ...

class ExchangeLedger(_message.Message):
    __slots__ = ("window_start_unix_ms", "window_end_unix_ms", "query_ids")
    WINDOW_START_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    QUERY_IDS_FIELD_NUMBER: _ClassVar[int]
    window_start_unix_ms: int
    window_end_unix_ms: int
    query_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, window_start_unix_ms: _Optional[int] = ..., window_end_unix_ms: _Optional[int] = ..., query_ids: _Optional[_Iterable[str]] = ...) -> None: ...
