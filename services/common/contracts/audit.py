"""``audit.events`` (proto/audit.proto): what every service tells audit about an access, and the
bounds of its fields, in one place.

:class:`AuditContext` is who asked what about whom; :func:`audit_message` turns it and an outcome
into the wire message, every value bounded at the edge to :data:`TEXT_LIMITS`. The audit store's
columns are sized by the same numbers, and it cuts whatever is longer anyway (ending in
:data:`TRUNCATED`, so a cut value is visibly not the original): no event a client can provoke is
too long, or unstorable, for the store.
"""

from __future__ import annotations

import operator
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from itertools import repeat

from services.common.bus import Message
from services.common.logs import request_id_var
from services.common.pb import audit_pb2
from services.common.schemas import UNSTORABLE

# Longest text per string field, in characters (PostgreSQL's VARCHAR counts characters too).
TEXT_LIMITS: dict[str, int] = {
    "event_id": 64,
    "service": 32,
    "action": 64,
    "outcome": 32,
    "reason": 128,  # a problem code
    "actor": 128,  # a token subject: a username or a client id, perhaps with a namespace prefix
    "consumer_dept": 18,  # 统一社会信用代码
    "consumer_client_id": 128,
    "provider_dept": 18,
    "resource_code": 40,  # 信息资源代码
    "purpose": 64,  # 事项 code
    "subject_type": 16,
    "subject_hash": 64,  # hex HMAC-SHA256
    "query_id": 40,
    "request_id": 64,  # X-Request-Id, after the gateway's check
    "subject_key_id": 32,  # the subject key's id (settings.subject_hash_key_id)
    "answer_sha256": 64,  # hex SHA-256 of the SD-JWT answer passed on
    "bundle_id": 40,  # the evidence bundle a query was asked for (a UUID)
    "batch_id": 40,  # the batch a query was one of (a UUID)
}
FIELD_NAME_MAX = 50  # each entry of ``fields`` (a catalogue item name)
FIELDS_MAX = 200  # entries of ``fields``

# occurred_unix_ms outside [1970-01-01, 9999-12-31 23:59:59.999 UTC] is not a time the event can
# have happened at (nor one Python can represent): the store records the time it received the
# event instead, and keeps the raw value.
OCCURRED_MIN_MS = 0
OCCURRED_MAX_MS = 253_402_300_799_999

TRUNCATED = "…"  # U+2026 ends a value that was cut to its bound
REPLACEMENT = "\ufffd"  # stands for a character that cannot be stored (NUL, an unpaired surrogate)


def storable(value: str) -> str:
    """``value`` without what PostgreSQL text cannot hold: NUL and unpaired surrogates become U+FFFD."""
    # Fast path (the audit ingest calls this for every text field of every event): ASCII holds no
    # surrogate, and both checks run in C — four times cheaper than the substitution (cProfile).
    if value.isascii() and "\x00" not in value:
        return value
    return UNSTORABLE.sub(REPLACEMENT, value)


def bounded(value: str, limit: int) -> str:
    """``value`` storable and at most ``limit`` characters; a longer one is cut and ends in
    :data:`TRUNCATED`."""
    value = storable(value)
    return value if len(value) <= limit else value[: limit - 1] + TRUNCATED


def all_fit(values: Sequence[str], limits: Iterable[int]) -> bool:
    """Whether every value is storable and within its limit as it is (``bounded`` would change
    none): the audit ingest's fast path, checked for all of an event's texts at once, in C."""
    joined = "".join(values)
    clean = (joined.isascii() and "\x00" not in joined) or UNSTORABLE.search(joined) is None
    return clean and all(map(operator.le, map(len, values), limits))


def bounded_fields(fields: list[str]) -> list[str]:
    """``fields`` with each entry bounded; past :data:`FIELDS_MAX` entries the last one says how
    many were left out."""
    if not fields or (len(fields) <= FIELDS_MAX and all_fit(fields, repeat(FIELD_NAME_MAX))):
        return fields
    kept = [bounded(f, FIELD_NAME_MAX) for f in fields]
    if len(kept) <= FIELDS_MAX:
        return kept
    return [*kept[: FIELDS_MAX - 1], f"{TRUNCATED}+{len(kept) - FIELDS_MAX + 1}"]


class AuditAction(StrEnum):
    """What an audit event records: ``<service>.<object>.<verb>``. The catalogue of every action
    any service reports; an auditor filters by these values, so they are a contract (never rename
    one)."""

    EXCHANGE_QUERY = "exchange.query"  # one query of shared data, and its outcome
    EXCHANGE_EVIDENCE = "exchange.evidence"  # one evidence bundle (免提交), tying its queries
    # one change of a change feed (库表共享) served to a consumer, with its subject (hashed) and items;
    # reason "<op> <position>; page <first>..<last>, <n> changes" (records of earlier releases are
    # one per page, reason "changes=<count>", without a subject)
    EXCHANGE_FEED = "exchange.feed"
    # gateway: tokens, sign-ins and identities
    TOKEN_ISSUED = "gateway.token.issued"
    TOKEN_DENIED = "gateway.token.denied"
    SIGN_IN = "gateway.sign_in"  # outcome completed or denied
    LOCKOUT = "gateway.lockout"
    UNLOCK = "gateway.unlock"
    IDENTITY_CHANGED = "gateway.identity.changed"  # a department, system or user created/changed
    SECRET_ROTATED = "gateway.secret.rotated"
    KEY_ROTATED = "gateway.key.rotated"  # a token signing key
    # registry: the catalogue and its lifecycle, the lists, applications and grants
    RESOURCE_CREATED = "registry.resource.created"
    RESOURCE_EDITED = "registry.resource.edited"
    RESOURCE_SUBMITTED = "registry.resource.submitted"
    RESOURCE_PUBLISHED = "registry.resource.published"
    RESOURCE_REJECTED = "registry.resource.rejected"
    RESOURCE_DEPRECATED = "registry.resource.deprecated"
    APPLICATION_SUBMITTED = "registry.application.submitted"
    APPLICATION_APPROVED = "registry.application.approved"
    APPLICATION_REJECTED = "registry.application.rejected"
    GRANT_REVOKED = "registry.grant.revoked"
    DEMAND_ACCEPTED = "registry.demand.accepted"  # 需求清单: the provider took it into its 责任清单
    DEMAND_REJECTED = "registry.demand.rejected"
    NEGATIVE_LISTED = "registry.negative.listed"  # 负面清单: a resource or item put on it
    NEGATIVE_UNLISTED = "registry.negative.unlisted"
    IMPORT_SUBMITTED = "registry.import.submitted"  # a file queued for import (导入任务)
    IMPORT_FINISHED = "registry.import.finished"  # outcome completed (all rows written) or failed (none)
    # audit: what auditors do about the trail itself
    ALERT_ACKNOWLEDGED = "audit.alert.acknowledged"  # an anomaly alert (告警) was looked at
    # the auditors' own look-ups of the trail (审计查询留痕): who, with which filter (subject hashed)
    RECORDS_SEARCHED = "audit.records.searched"
    RECORDS_EXPORTED = "audit.records.exported"  # a CSV export, or a signed export of leaves
    RECORDS_AGGREGATED = "audit.records.aggregated"
    SUBJECT_REPORT_READ = "audit.subject_report.read"  # a person's access report (数据使用记录)


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
    subject_key_id: str = ""  # the id of the key subject_hash was made with
    answer_sha256: str = ""  # the SD-JWT the consumer got (可验证应答), hashed
    disclosed_fields: tuple[str, ...] = field(default_factory=tuple)  # items whose disclosures it carried
    bundle_id: str = ""  # the evidence bundle (免提交) the query was asked for
    batch_id: str = ""  # the batch (批量查询) the query was one of

    def with_(self, **changes: object) -> AuditContext:
        return replace(self, **changes)  # type: ignore[arg-type]


def audit_message(
    topic: str, service: str, action: AuditAction, ctx: AuditContext, *, outcome: str, reason: str = ""
) -> Message:
    """The ``AuditEvent`` of ``ctx`` ending in ``outcome`` (``reason``: the problem code of a
    denial), keyed by its event id, with the current request id."""
    event = audit_pb2.AuditEvent(
        event_id=uuid.uuid4().hex,
        occurred_unix_ms=int(time.time() * 1000),
        service=bounded(service, TEXT_LIMITS["service"]),
        action=bounded(action, TEXT_LIMITS["action"]),
        outcome=bounded(outcome, TEXT_LIMITS["outcome"]),
        reason=bounded(reason, TEXT_LIMITS["reason"]),
        actor=bounded(ctx.actor, TEXT_LIMITS["actor"]),
        consumer_dept=bounded(ctx.consumer_dept, TEXT_LIMITS["consumer_dept"]),
        consumer_client_id=bounded(ctx.consumer_client_id, TEXT_LIMITS["consumer_client_id"]),
        provider_dept=bounded(ctx.provider, TEXT_LIMITS["provider_dept"]),
        resource_code=bounded(ctx.resource, TEXT_LIMITS["resource_code"]),
        purpose=bounded(ctx.purpose, TEXT_LIMITS["purpose"]),
        subject_type=bounded(ctx.subject_type, TEXT_LIMITS["subject_type"]),
        subject_hash=bounded(ctx.subject_hash, TEXT_LIMITS["subject_hash"]),
        fields=bounded_fields(list(ctx.fields)),
        query_id=bounded(ctx.query_id, TEXT_LIMITS["query_id"]),
        request_id=bounded(request_id_var.get() or "", TEXT_LIMITS["request_id"]),
        subject_key_id=bounded(ctx.subject_key_id, TEXT_LIMITS["subject_key_id"]),
        answer_sha256=bounded(ctx.answer_sha256, TEXT_LIMITS["answer_sha256"]),
        disclosed_fields=bounded_fields(list(ctx.disclosed_fields)),
        bundle_id=bounded(ctx.bundle_id, TEXT_LIMITS["bundle_id"]),
        batch_id=bounded(ctx.batch_id, TEXT_LIMITS["batch_id"]),
    )
    return Message(topic=topic, key=event.event_id.encode(), value=event.SerializeToString())
