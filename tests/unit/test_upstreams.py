"""The gateway's choice of upstream replica (round-robin among the healthy, passive health) and
what it may send again; pure functions, a hand-driven clock."""

from __future__ import annotations

import pytest

from services.gateway.upstreams import Replica, Upstream, replica_urls, response_headers, retryable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def upstream(clock: Clock, n: int = 3) -> Upstream:
    return Upstream("exchange", [Replica(f"http://10.0.0.{i}:8002") for i in range(n)], cooloff_s=10, clock=clock)


def test_healthy_replicas_take_turns() -> None:
    u = upstream(Clock())
    firsts = [u.order()[0].url for _ in range(6)]
    assert firsts == [f"http://10.0.0.{i % 3}:8002" for i in range(6)]


def test_a_replica_set_aside_gets_nothing_until_its_cooloff_ends_then_one_try() -> None:
    clock = Clock()
    u = upstream(clock)
    dead = u.replicas[1]
    u.mark_down(dead)
    firsts = []
    for _ in range(6):
        order = u.order()
        assert order[0] is not dead and order[-1] is dead  # still last resort, never first
        firsts.append(order[0])
    assert firsts.count(u.replicas[0]) == firsts.count(u.replicas[2]) == 3  # its share spread evenly
    clock.now += 10.5
    assert dead in [u.order()[0] for _ in range(3)]


def test_when_every_replica_rests_the_soonest_back_is_tried_first() -> None:
    clock = Clock()
    u = upstream(clock, 2)
    u.mark_down(u.replicas[1])
    clock.now += 1
    u.mark_down(u.replicas[0])
    assert [r.url for r in u.order()] == ["http://10.0.0.1:8002", "http://10.0.0.0:8002"]


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", {}, True),
        ("PUT", {}, True),
        ("DELETE", {}, True),
        ("POST", {}, False),
        ("POST", {"idempotency-key": "k-1"}, True),
        ("POST", {"idempotency-key": ""}, False),
        ("PATCH", {"idempotency-key": "k-1"}, False),
    ],
)
def test_only_idempotent_requests_are_sent_again_after_a_broken_connection(
    method: str, headers: dict[str, str], expected: bool
) -> None:
    assert retryable(method, headers) is expected


def test_replica_lists_keep_the_single_url_setting_and_refuse_what_is_not_a_base_url() -> None:
    assert replica_urls("http://127.0.0.1:8002/") == ["http://127.0.0.1:8002"]
    assert replica_urls(" http://a:8002, http://b:8002 ") == ["http://a:8002", "http://b:8002"]
    for bad in ("", ",", "ftp://a:21", "http://a:8002?x=1", "a:8002", "http://a:1,http://a:1"):
        with pytest.raises(ValueError, match=r"upstream URL|not an http|named twice"):
            replica_urls(bad)


def test_hop_by_hop_headers_and_those_connection_names_are_not_passed_on() -> None:
    got = response_headers(
        {
            "Content-Type": "application/json",
            "Connection": "keep-alive, X-Internal",
            "Keep-Alive": "timeout=5",
            "Transfer-Encoding": "chunked",
            "X-Internal": "secret",
            "Content-Length": "10",
            "ETag": '"v1"',
        },
        "keep-alive, X-Internal",
    )
    assert got == {"content-type": "application/json", "etag": '"v1"'}
