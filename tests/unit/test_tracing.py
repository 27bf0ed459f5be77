"""W3C Trace Context and the request id across Kafka: sent in headers, restored by consumers,
one trace id in the JSON logs of every hop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import SimpleNamespace

import orjson
import pytest

from services.common.bus import MemoryBus, Message, Subscription, as_message, handling, outgoing_headers
from services.common.logs import (
    JsonFormatter,
    Trace,
    bound_context,
    continue_trace,
    parse_traceparent,
    request_id_var,
    restored_context,
    trace_var,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"


def test_parse_traceparent() -> None:
    assert parse_traceparent(VALID) == (TRACE_ID, PARENT_ID, "01")
    for invalid in (
        None,
        "",
        VALID.upper(),
        VALID + "-",
        VALID.replace("00-", "ff-", 1),
        f"00-{'0' * 32}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-001",
        f"00-{TRACE_ID}-{PARENT_ID}-01\n",
    ):
        assert parse_traceparent(invalid) is None, invalid


def test_continue_trace_keeps_trace_id_and_flags_with_a_new_span() -> None:
    span = continue_trace(VALID)
    assert (span.trace_id, span.flags) == (TRACE_ID, "01")
    assert span.span_id != PARENT_ID
    assert parse_traceparent(span.traceparent) == (TRACE_ID, span.span_id, "01")
    fresh = continue_trace("garbage")
    assert fresh.trace_id != TRACE_ID and parse_traceparent(fresh.traceparent) is not None


def test_outgoing_headers_carry_request_id_and_traceparent() -> None:
    assert outgoing_headers({"x": "1"}) == {"x": "1"}  # nothing bound: nothing added
    trace = Trace(TRACE_ID, PARENT_ID, "01")
    with bound_context("req-1", trace):
        assert outgoing_headers({"x": "1"}) == {"x": "1", "request-id": "req-1", "traceparent": VALID}
        own = {"request-id": "up", "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-00"}
        assert outgoing_headers(own) == own  # a message's own values are kept
    assert request_id_var.get() is None and trace_var.get() is None


def test_restored_context_continues_the_senders_trace() -> None:
    with restored_context({"request-id": "req-7", "traceparent": VALID}) as trace:
        assert request_id_var.get() == "req-7"
        current = trace_var.get()
        assert current is trace and current.trace_id == TRACE_ID and current.span_id != PARENT_ID
    assert request_id_var.get() is None and trace_var.get() is None


def test_restored_context_drops_hostile_values() -> None:
    with restored_context({"request-id": "x" * 65, "traceparent": "00-zz"}) as trace:
        assert request_id_var.get() is None
        assert trace.trace_id != TRACE_ID and len(trace.trace_id) == 32


def test_consumed_record_headers_never_raise() -> None:
    record = SimpleNamespace(
        topic="t",
        value=b"v",
        key=None,
        headers=[("traceparent", VALID.encode()), ("bad", b"\xff\xfe"), ("none", None)],
    )
    message = as_message(record)
    assert message.headers["traceparent"] == VALID
    assert message.headers["bad"] == "\ufffd\ufffd"
    assert "none" not in message.headers


def test_handling_one_trace_batch_restores_it(caplog: pytest.LogCaptureFixture) -> None:
    batch = [Message("t", b"1", headers={"traceparent": VALID, "request-id": "r1"})] * 2
    with caplog.at_level(logging.INFO, logger="tongban.bus"), handling(batch):
        trace = trace_var.get()
        assert trace is not None and trace.trace_id == TRACE_ID
        assert request_id_var.get() == "r1"
    [line] = [r for r in caplog.records if r.getMessage() == "batch handled"]
    assert line.__dict__["ctx_count"] == 2 and "ctx_trace_ids" not in line.__dict__


def test_handling_mixed_batch_gets_its_own_trace_and_names_theirs(caplog: pytest.LogCaptureFixture) -> None:
    other = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    batch = [
        Message("t", b"1", headers={"traceparent": VALID}),
        Message("t", b"2", headers={"traceparent": other}),
        Message("t", b"3"),
    ]
    with caplog.at_level(logging.INFO, logger="tongban.bus"), handling(batch):
        trace = trace_var.get()
        assert trace is not None and trace.trace_id not in (TRACE_ID, "a" * 32)
        assert request_id_var.get() is None
    [line] = [r for r in caplog.records if r.getMessage() == "batch handled"]
    assert line.__dict__["ctx_trace_ids"] == sorted([TRACE_ID, "a" * 32])


def test_json_log_lines_carry_the_trace_id() -> None:
    record = logging.LogRecord("tongban.t", logging.INFO, __file__, 1, "hello", None, None)
    with bound_context("req-9", Trace(TRACE_ID, PARENT_ID)):
        entry = orjson.loads(JsonFormatter().format(record))
    assert (entry["trace_id"], entry["span_id"], entry["request_id"]) == (TRACE_ID, PARENT_ID, "req-9")
    assert "trace_id" not in orjson.loads(JsonFormatter().format(record))


async def test_one_trace_across_two_hops_of_the_bus() -> None:
    """A request publishes; a consumer answers with a message of its own; the second consumer sees
    the same trace id (and request id), each hop in a span of its own."""
    bus = MemoryBus("t.dlq")
    seen: list[tuple[str | None, Trace | None, dict[str, str]]] = []
    done = asyncio.Event()

    async def first(batch: Sequence[Message]) -> None:
        seen.append((request_id_var.get(), trace_var.get(), dict(batch[0].headers)))
        await bus.publish(Message("t.replies", b"reply"))

    async def second(batch: Sequence[Message]) -> None:
        seen.append((request_id_var.get(), trace_var.get(), dict(batch[0].headers)))
        done.set()

    bus.subscribe(Subscription(["t.requests"], first, group="a"))
    bus.subscribe(Subscription(["t.replies"], second, group="b"))
    await bus.start()
    try:
        origin = continue_trace(VALID)
        with bound_context("req-42", origin):
            await bus.publish(Message("t.requests", b"ask"))
        await asyncio.wait_for(done.wait(), 5)
    finally:
        await bus.stop()

    (rid1, hop1, headers1), (rid2, hop2, headers2) = seen
    assert rid1 == rid2 == "req-42"
    assert hop1 is not None and hop2 is not None
    assert hop1.trace_id == hop2.trace_id == TRACE_ID
    assert len({origin.span_id, hop1.span_id, hop2.span_id}) == 3
    assert headers1["traceparent"] == origin.traceparent  # the parent of hop 1 is the origin's span
    assert headers2["traceparent"] == hop1.traceparent  # the parent of hop 2 is hop 1's span
