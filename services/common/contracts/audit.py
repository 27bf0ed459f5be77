"""``audit.events`` (proto/audit.proto): what every service tells audit about an access.

:class:`AuditContext` is who asked what about whom; :func:`audit_message` turns it and an outcome
into the wire message. Every string is bounded here, at the edge, to :data:`FIELD_LIMITS`, so no
event a client can provoke is too long for the audit store.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace

from services.common.bus import Message
from services.common.logs import request_id_var
from services.common.pb import audit_pb2

# The longest value each field may carry. Producers cut to these; audit's columns hold them.
FIELD_LIMITS: dict[str, int] = {
    "event_id": 64,
    "service": 32,
    "action": 64,
    "outcome": 32,
    "reason": 64,
    "actor": 64,
    "consumer_dept": 18,
    "consumer_client_id": 64,
    "provider_dept": 18,
    "resource_code": 40,
    "purpose": 64,
    "subject_type": 16,
    "subject_hash": 64,
    "field": 50,
    "query_id": 40,
    "request_id": 64,
}
MAX_FIELDS = 200


def bounded(value: str, name: str) -> str:
    return value[: FIELD_LIMITS[name]]


@dataclass(frozen=True, slots=True)
class AuditContext:
    """Who asked (actor, department, system), for what (resource, purpose 事项, fields) and about
    whom (the subject, only as its keyed hash), as far as it is known when the event is made."""

    actor: str
    consumer_dept: str
    consumer_client_id: str = ""
    resource: str = ""
    provider: str = ""
    purpose: str = ""
    subject_type: str = ""
    subject_hash: str = ""
    fields: tuple[str, ...] = field(default_factory=tuple)
    query_id: str = ""

    def with_(self, **changes: object) -> AuditContext:
        return replace(self, **changes)  # type: ignore[arg-type]


def audit_message(
    topic: str, service: str, action: str, ctx: AuditContext, *, outcome: str, reason: str = ""
) -> Message:
    """The ``AuditEvent`` of ``ctx`` ending in ``outcome`` (``reason``: the problem code of a
    denial), keyed by its event id, with the current request id."""
    event = audit_pb2.AuditEvent(
        event_id=uuid.uuid4().hex,
        occurred_unix_ms=int(time.time() * 1000),
        service=bounded(service, "service"),
        action=bounded(action, "action"),
        outcome=bounded(outcome, "outcome"),
        reason=bounded(reason, "reason"),
        actor=bounded(ctx.actor, "actor"),
        consumer_dept=bounded(ctx.consumer_dept, "consumer_dept"),
        consumer_client_id=bounded(ctx.consumer_client_id, "consumer_client_id"),
        provider_dept=bounded(ctx.provider, "provider_dept"),
        resource_code=bounded(ctx.resource, "resource_code"),
        purpose=bounded(ctx.purpose, "purpose"),
        subject_type=bounded(ctx.subject_type, "subject_type"),
        subject_hash=bounded(ctx.subject_hash, "subject_hash"),
        fields=[bounded(f, "field") for f in ctx.fields[:MAX_FIELDS]],
        query_id=bounded(ctx.query_id, "query_id"),
        request_id=bounded(request_id_var.get() or "", "request_id"),
    )
    return Message(topic=topic, key=event.event_id.encode(), value=event.SerializeToString())
