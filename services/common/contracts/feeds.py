"""``exchange.feeds.<resource>`` (proto/feeds.proto ``FeedChange``): the change feed (库表共享) of
one resource. The connector writes it (``services/connector/feeds.py``), the exchange reads it for
consumers (``services/exchange/feeds.py``); both name the topic and map the message here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from services.common.bus import Message
from services.common.pb import feeds_pb2 as pb

# Kafka topic names allow letters, digits, ".", "_" and "-"; a 信息资源代码 also holds "/".
TOPIC_SAFE = re.compile(r"[A-Za-z0-9._-]+")


class ChangeOp(StrEnum):
    UPSERT = "upsert"
    DELETE = "delete"


OPS = {ChangeOp.UPSERT: pb.FeedChange.UPSERT, ChangeOp.DELETE: pb.FeedChange.DELETE}


def feed_topic_name(resource_code: str) -> str:
    """The topic (before the platform's prefix) of a resource's changes: ``exchange.feeds.`` and
    the code with "/" written as "." (codes hold digits and "/", so no two codes share a topic).
    Raises ``ValueError`` for a code that cannot name a topic."""
    name = resource_code.replace("/", ".")
    if not TOPIC_SAFE.fullmatch(name) or ".." in name or name.startswith(".") or name.endswith("."):
        raise ValueError(f"resource code {resource_code!r} cannot name a Kafka topic")
    return f"exchange.feeds.{name}"


@dataclass(frozen=True, slots=True)
class Change:
    """Change — 变更: one row of a provider's table as it is now (or its deletion)."""

    resource_code: str
    provider_dept: str
    op: ChangeOp
    subject_type: str
    subject_value: str
    data: dict[str, str] = field(default_factory=dict)
    watermark: str = ""
    changed_unix_ms: int = 0

    def message(self, topic: str) -> Message:
        """The wire message, keyed by the subject: one subject's changes stay in order."""
        change = pb.FeedChange(
            resource_code=self.resource_code,
            provider_dept=self.provider_dept,
            op=OPS[self.op],
            subject_type=self.subject_type,
            subject_value=self.subject_value,
            data=self.data,
            watermark=self.watermark,
            changed_unix_ms=self.changed_unix_ms,
        )
        return Message(topic, change.SerializeToString(), self.subject_value.encode())


def parse_change(value: bytes) -> Change:
    """The change a message carries. Raises ``ValueError`` for bytes that are not one."""
    change = pb.FeedChange()
    try:
        change.ParseFromString(value)
    except Exception as err:  # DecodeError, or a message of the wrong type
        raise ValueError(f"not a FeedChange: {type(err).__name__}") from None
    op = next((name for name, wire in OPS.items() if wire == change.op), None)
    if op is None:
        raise ValueError("FeedChange without an operation")
    return Change(
        change.resource_code,
        change.provider_dept,
        op,
        change.subject_type,
        change.subject_value,
        dict(change.data),
        change.watermark,
        change.changed_unix_ms,
    )
