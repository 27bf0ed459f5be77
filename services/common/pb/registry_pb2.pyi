from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InformationItem(_message.Message):
    __slots__ = ("name", "data_type", "length", "sensitive", "masking")
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
    def __init__(self, name: _Optional[str] = ..., data_type: _Optional[str] = ..., length: _Optional[int] = ..., sensitive: _Optional[bool] = ..., masking: _Optional[str] = ...) -> None: ...

class ResourcePublished(_message.Message):
    __slots__ = ("code", "name", "provider_dept", "version", "share_type", "items")
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
    def __init__(self, code: _Optional[str] = ..., name: _Optional[str] = ..., provider_dept: _Optional[str] = ..., version: _Optional[int] = ..., share_type: _Optional[str] = ..., items: _Optional[_Iterable[_Union[InformationItem, _Mapping]]] = ...) -> None: ...

class GrantIssued(_message.Message):
    __slots__ = ("grant_id", "resource_code", "consumer_dept", "client_id", "items", "purpose", "valid_until_unix_ms", "daily_quota", "masking", "provider_dept")
    class MaskingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
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
    def __init__(self, grant_id: _Optional[str] = ..., resource_code: _Optional[str] = ..., consumer_dept: _Optional[str] = ..., client_id: _Optional[str] = ..., items: _Optional[_Iterable[str]] = ..., purpose: _Optional[str] = ..., valid_until_unix_ms: _Optional[int] = ..., daily_quota: _Optional[int] = ..., masking: _Optional[_Mapping[str, str]] = ..., provider_dept: _Optional[str] = ...) -> None: ...

class GrantRevoked(_message.Message):
    __slots__ = ("grant_id", "reason")
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    reason: str
    def __init__(self, grant_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ResourceChanged(_message.Message):
    __slots__ = ("code", "provider_dept", "version", "change", "actor", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_DEPT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: str
    provider_dept: str
    version: int
    change: str
    actor: str
    reason: str
    def __init__(self, code: _Optional[str] = ..., provider_dept: _Optional[str] = ..., version: _Optional[int] = ..., change: _Optional[str] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ApplicationChanged(_message.Message):
    __slots__ = ("application_id", "resource_code", "provider_dept", "consumer_dept", "client_id", "change", "status", "items", "purpose", "due_by", "reason", "actor", "grant_id")
    APPLICATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_CODE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_DEPT_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_DEPT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    DUE_BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    application_id: str
    resource_code: str
    provider_dept: str
    consumer_dept: str
    client_id: str
    change: str
    status: str
    items: _containers.RepeatedScalarFieldContainer[str]
    purpose: str
    due_by: str
    reason: str
    actor: str
    grant_id: str
    def __init__(self, application_id: _Optional[str] = ..., resource_code: _Optional[str] = ..., provider_dept: _Optional[str] = ..., consumer_dept: _Optional[str] = ..., client_id: _Optional[str] = ..., change: _Optional[str] = ..., status: _Optional[str] = ..., items: _Optional[_Iterable[str]] = ..., purpose: _Optional[str] = ..., due_by: _Optional[str] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., grant_id: _Optional[str] = ...) -> None: ...

class ServiceItemMaterial(_message.Message):
    __slots__ = ("id", "name", "source", "necessity", "resource_code", "items")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NECESSITY_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_CODE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    source: str
    necessity: str
    resource_code: str
    items: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., source: _Optional[str] = ..., necessity: _Optional[str] = ..., resource_code: _Optional[str] = ..., items: _Optional[_Iterable[str]] = ...) -> None: ...

class ServiceItemChanged(_message.Message):
    __slots__ = ("code", "name", "dept", "version", "withdrawn", "materials")
    CODE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEPT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    MATERIALS_FIELD_NUMBER: _ClassVar[int]
    code: str
    name: str
    dept: str
    version: int
    withdrawn: bool
    materials: _containers.RepeatedCompositeFieldContainer[ServiceItemMaterial]
    def __init__(self, code: _Optional[str] = ..., name: _Optional[str] = ..., dept: _Optional[str] = ..., version: _Optional[int] = ..., withdrawn: _Optional[bool] = ..., materials: _Optional[_Iterable[_Union[ServiceItemMaterial, _Mapping]]] = ...) -> None: ...

class RegistryEvent(_message.Message):
    __slots__ = ("event_id", "occurred_unix_ms", "resource_published", "grant_issued", "grant_revoked", "resource_changed", "application_changed", "service_item_changed")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    GRANT_ISSUED_FIELD_NUMBER: _ClassVar[int]
    GRANT_REVOKED_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    APPLICATION_CHANGED_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ITEM_CHANGED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_unix_ms: int
    resource_published: ResourcePublished
    grant_issued: GrantIssued
    grant_revoked: GrantRevoked
    resource_changed: ResourceChanged
    application_changed: ApplicationChanged
    service_item_changed: ServiceItemChanged
    def __init__(self, event_id: _Optional[str] = ..., occurred_unix_ms: _Optional[int] = ..., resource_published: _Optional[_Union[ResourcePublished, _Mapping]] = ..., grant_issued: _Optional[_Union[GrantIssued, _Mapping]] = ..., grant_revoked: _Optional[_Union[GrantRevoked, _Mapping]] = ..., resource_changed: _Optional[_Union[ResourceChanged, _Mapping]] = ..., application_changed: _Optional[_Union[ApplicationChanged, _Mapping]] = ..., service_item_changed: _Optional[_Union[ServiceItemChanged, _Mapping]] = ...) -> None: ...
