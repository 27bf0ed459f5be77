"""The bounds of an audit event's fields (``proto/audit.proto: AuditEvent``), in one place.

The audit store's columns are sized by these numbers, and it cuts whatever is longer (with
:data:`TRUNCATED` at the end, so a cut value is visibly not the original). Producers bound their
values at the edge with the same numbers, so that nothing they send is ever cut.
"""

from __future__ import annotations

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
    return UNSTORABLE.sub(REPLACEMENT, value)


def bounded(value: str, limit: int) -> str:
    """``value`` storable and at most ``limit`` characters; a longer one is cut and ends in
    :data:`TRUNCATED`."""
    value = storable(value)
    return value if len(value) <= limit else value[: limit - 1] + TRUNCATED


def bounded_fields(fields: list[str]) -> list[str]:
    """``fields`` with each entry bounded; past :data:`FIELDS_MAX` entries the last one says how
    many were left out."""
    kept = [bounded(f, FIELD_NAME_MAX) for f in fields]
    if len(kept) <= FIELDS_MAX:
        return kept
    return [*kept[: FIELDS_MAX - 1], f"{TRUNCATED}+{len(kept) - FIELDS_MAX + 1}"]
