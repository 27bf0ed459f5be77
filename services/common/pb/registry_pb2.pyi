from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.internal import containers as _containers

DESCRIPTOR: _descriptor.FileDescriptor

class InformationItem(_message.Message):
    __slots__ = ("data_type", "length", "masking", "name", "sensitive")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    SENSITIVE_FIELD_NUMBER: _ClassVar[int]
    MASKING_FIELD_NUMBER: _ClassVar[int]
    name: str
    data_type: str
    length: int
    sensitive: bool
    masking: str
    def __init__(self, name: str | None = ..., data_type: str | None = ..., length: int | None = ..., sensitive: bool | None = ..., masking: str | None = ...) -> None: ...

class ResourcePublished(_message.Message):
    __slots__ = ("code", "items", "name", "provider_dept", "share_type", "version")
    CODE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_DEPT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHARE_TYPE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    code: str
    name: str
    provider_dept: str
    version: int
    share_type: str
    items: _containers.RepeatedCompositeFieldContainer[InformationItem]
    def __init__(self, code: str | None = ..., name: str | None = ..., provider_dept: str | None = ..., version: int | None = ..., share_type: str | None = ..., items: _Iterable[InformationItem | _Mapping] | None = ...) -> None: ...

class GrantIssued(_message.Message):
    __slots__ = ("client_id", "consumer_dept", "daily_quota", "grant_id", "items", "masking", "provider_dept", "purpose", "resource_code", "valid_until_unix_ms")
    class MaskingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: str | None = ..., value: str | None = ...) -> None: ...
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_CODE_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_DEPT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DAILY_QUOTA_FIELD_NUMBER: _ClassVar[int]
    MASKING_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_DEPT_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    resource_code: str
    consumer_dept: str
    client_id: str
    items: _containers.RepeatedScalarFieldContainer[str]
    purpose: str
    valid_until_unix_ms: int
    daily_quota: int
    masking: _containers.ScalarMap[str, str]
    provider_dept: str
    def __init__(self, grant_id: str | None = ..., resource_code: str | None = ..., consumer_dept: str | None = ..., client_id: str | None = ..., items: _Iterable[str] | None = ..., purpose: str | None = ..., valid_until_unix_ms: int | None = ..., daily_quota: int | None = ..., masking: _Mapping[str, str] | None = ..., provider_dept: str | None = ...) -> None: ...

class GrantRevoked(_message.Message):
    __slots__ = ("grant_id", "reason")
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    reason: str
    def __init__(self, grant_id: str | None = ..., reason: str | None = ...) -> None: ...

class RegistryEvent(_message.Message):
    __slots__ = ("event_id", "grant_issued", "grant_revoked", "occurred_unix_ms", "resource_published")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    GRANT_ISSUED_FIELD_NUMBER: _ClassVar[int]
    GRANT_REVOKED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_unix_ms: int
    resource_published: ResourcePublished
    grant_issued: GrantIssued
    grant_revoked: GrantRevoked
    def __init__(self, event_id: str | None = ..., occurred_unix_ms: int | None = ..., resource_published: ResourcePublished | _Mapping | None = ..., grant_issued: GrantIssued | _Mapping | None = ..., grant_revoked: GrantRevoked | _Mapping | None = ...) -> None: ...
