"""JSON logs that carry the request id and the W3C trace id of what is being handled.

Both travel with the work: over HTTP in ``X-Request-Id`` and ``traceparent``, in Kafka headers as
``request-id`` and ``traceparent``. Values that come from outside are bounded here before they
reach a log line, an outgoing call or an audit event: a request id must match
:data:`REQUEST_ID_PATTERN`, a ``traceparent`` must be valid W3C Trace Context (version 00), or
it is dropped and a new one made.
"""

import logging
import re
import secrets
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

log = logging.getLogger("tongban.logs")

# Kafka header names (HTTP uses ``X-Request-Id`` and ``traceparent``).
REQUEST_ID_HEADER = "request-id"
TRACEPARENT_HEADER = "traceparent"

# What an audit record's ``request_id`` column (64 characters) and a log line can hold safely.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
# W3C Trace Context, version 00: version-traceid-parentid-flags, lowercase hex only.
TRACEPARENT_PATTERN = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@dataclass(frozen=True, slots=True)
class Trace:
    """This process's span of a trace (链路). ``trace_id`` joins the logs of every service that
    handled one request; ``span_id`` is the parent-id that this span's outgoing calls carry."""

    trace_id: str
    span_id: str
    flags: str = "00"

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
trace_var: ContextVar[Trace | None] = ContextVar("trace", default=None)


def valid_request_id(value: str | None) -> str | None:
    """``value`` when it is an acceptable request id, else None."""
    return value if value is not None and REQUEST_ID_PATTERN.fullmatch(value) else None


def request_id_or_new(value: str | None) -> str:
    """``value`` if acceptable, else a new id (an over-long or odd id from outside would fail the
    audit store or pollute logs; replacing it keeps the request working)."""
    if (rid := valid_request_id(value)) is not None:
        return rid
    rid = uuid.uuid4().hex
    if value is not None:
        log.debug("request id replaced", extra={"ctx_given_length": len(value), "ctx_request_id": rid})
    return rid


def parse_traceparent(value: str | None) -> tuple[str, str, str] | None:
    """(trace id, parent id, flags) of a valid version-00 ``traceparent``; None for anything else
    (the spec says to drop an invalid one, never to repair it)."""
    if value is None or (match := TRACEPARENT_PATTERN.fullmatch(value)) is None:
        return None
    trace_id, parent_id, flags = match.groups()
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return trace_id, parent_id, flags


def continue_trace(traceparent: str | None) -> Trace:
    """A new span of the trace ``traceparent`` names, or of a new trace when it is absent or invalid."""
    if (parsed := parse_traceparent(traceparent)) is not None:
        trace_id, _, flags = parsed
        return Trace(trace_id, secrets.token_hex(8), flags)
    if traceparent is not None:
        log.debug("invalid traceparent dropped", extra={"ctx_given_length": len(traceparent)})
    return Trace(secrets.token_hex(16), secrets.token_hex(8))


def context_headers() -> dict[str, str]:
    """HTTP headers that carry the current request id and trace to a call this service makes."""
    headers: dict[str, str] = {}
    if (rid := request_id_var.get()) is not None:
        headers["x-request-id"] = rid
    if (trace := trace_var.get()) is not None:
        headers["traceparent"] = trace.traceparent
    return headers


@contextmanager
def bound_context(request_id: str | None, trace: Trace) -> Iterator[None]:
    """Run the body with ``request_id`` and ``trace`` as the current ones (logs, outgoing calls,
    problem bodies and audit events read them)."""
    rid_token = request_id_var.set(request_id)
    trace_token = trace_var.set(trace)
    try:
        yield
    finally:
        trace_var.reset(trace_token)
        request_id_var.reset(rid_token)


@contextmanager
def restored_context(headers: Mapping[str, str]) -> Iterator[Trace]:
    """Handle a consumed message in the request id and trace it was sent in (its Kafka headers),
    as a new span; a missing or invalid ``traceparent`` starts a new trace, an unacceptable
    request id is dropped."""
    trace = continue_trace(headers.get(TRACEPARENT_HEADER))
    with bound_context(valid_request_id(headers.get(REQUEST_ID_HEADER)), trace):
        yield trace


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if (rid := request_id_var.get()) is not None:
            entry["request_id"] = rid
        if (trace := trace_var.get()) is not None:
            entry["trace_id"] = trace.trace_id
            entry["span_id"] = trace.span_id
        for key, value in record.__dict__.items():
            if key.startswith("ctx_"):
                entry[key[4:]] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Neither format reads a record's source line, thread or process: skip collecting them (the
    # logging HOWTO's "Optimization"). A line then costs about 15 µs of CPU instead of 21; every
    # request and every consumed batch writes one (bench/results/2026-11-27-cpu-profile.md).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root.setLevel(level)
    for noisy in ("aiokafka", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
