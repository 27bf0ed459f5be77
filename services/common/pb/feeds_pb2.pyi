from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeedChange(_message.Message):
    __slots__ = ("resource_code", "provider_dept", "op", "subject_type", "subject_value", "data", "watermark", "changed_unix_ms")
    class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OP_UNSPECIFIED: _ClassVar[FeedChange.Op]
        UPSERT: _ClassVar[FeedChange.Op]
        DELETE: _ClassVar[FeedChange.Op]
    OP_UNSPECIFIED: FeedChange.Op
    UPSERT: FeedChange.Op
    DELETE: FeedChange.Op
    class DataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RESOURCE_CODE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_DEPT_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    CHANGED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    resource_code: str
    provider_dept: str
    op: FeedChange.Op
    subject_type: str
    subject_value: str
    data: _containers.ScalarMap[str, str]
    watermark: str
    changed_unix_ms: int
    def __init__(self, resource_code: _Optional[str] = ..., provider_dept: _Optional[str] = ..., op: _Optional[_Union[FeedChange.Op, str]] = ..., subject_type: _Optional[str] = ..., subject_value: _Optional[str] = ..., data: _Optional[_Mapping[str, str]] = ..., watermark: _Optional[str] = ..., changed_unix_ms: _Optional[int] = ...) -> None: ...
