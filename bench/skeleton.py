"""Walking-skeleton benchmark: a synchronous exchange query through the gateway, against raw Kafka.

    python -m bench.skeleton        (``make bench`` runs it with var/infra.env loaded)

Order of the run, all on 127.0.0.1 and on the broker of ``make infra-up``:

1. Raw Kafka baselines at concurrency 1 and 8, measured first on a quiet machine (the best case):
   * produce→consume: one producer (the platform's settings: acks=all, idempotent) to a fresh topic, one group-less
     consumer (auto_offset_reset=latest, fetch_max_wait 100 ms); send→receive latency per message.
   * request→reply (2 hops): the same, plus an echo consumer that produces every request to a reply
     topic; the latency is send→reply received. The exchange makes two Kafka hops per query.
2. The platform in distributed mode (tests/stack.py: five service processes), seeded with the demo.
3. Phase A (latency): warm-up, then a fixed number of queries at concurrency 1, then at 8.
   Phase B (throughput): a closed loop at concurrency 32 for a fixed time; any non-200 is an error.
   Its CPU is also given per query, per process (the services, the broker, this checkout's
   PostgreSQL server); before the platform stops, each process's peak RSS (VmHWM) is read.

Targets: query p99 ≤ 3× the raw Kafka round-trip p99 (compared at the same concurrency), and
≥ 200 queries/s with zero errors.
Results go to bench/results/<YYYY-MM-DD>-skeleton.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import secrets
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]

from services.common.bus import PRODUCER_SETTINGS
from services.demo import POLICE, DemoCredentials
from tests.stack import ROOT, DistributedStack, asyncpg_dsn, create_database, drop_database, infra_env

RESULTS_DIR = ROOT / "bench" / "results"
KAFKA_POM = ROOT / "deploy" / "local" / "kafka" / "pom.xml"
KAFKA_PID_FILE = ROOT / "var" / "run" / "kafka.pid"
POSTMASTER_PID_FILE = ROOT / "var" / "pg" / "postmaster.pid"  # its first line is the postmaster's pid

QUERY_WARMUP = 50
# Latency is measured twice: alone (concurrency 1: the path itself) and under load (concurrency 8:
# the path plus queueing for two shared cores). Each raw-Kafka baseline is measured the same way.
LEVELS = ((1, 500), (8, 1000))  # (concurrency, operations)
THROUGHPUT_SECONDS = 20.0
THROUGHPUT_CONCURRENCY = 32
THROUGHPUT_MAX_REQUESTS = 200_000  # a bound on the closed loop, far above what 20 s can reach here
REQUEST_TIMEOUT_S = 10.0

RAW_WARMUP = 50
RAW_PARTITIONS = 4  # as the platform's own topics (services/common/bus.py)
RAW_PAYLOAD = b"x" * 512  # roughly the size of a query event
RAW_TIMEOUT_S = 10.0

TARGET_P99_RATIO = 3.0
TARGET_QPS = 200.0

Op = Callable[[], Awaitable[str | None]]  # returns None on success, else a short error kind

_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[bench +{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


# --------------------------------------------------------------------------------------------- figures


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Sample:
    label: str
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def completed(self) -> int:
        return len(self.latencies_ms)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rate(self) -> float:
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "label": self.label,
            "concurrency": self.concurrency,
            "completed": self.completed,
            "errors": self.error_count,
            "error_kinds": dict(self.errors),
            "error_examples": self.error_examples,
            "elapsed_s": round(self.elapsed_s, 3),
            "per_second": round(self.rate, 1),
            "p50_ms": _r(self.p(50)),
            "p90_ms": _r(self.p(90)),
            "p99_ms": _r(self.p(99)),
            "mean_ms": _r(statistics.fmean(lat) if lat else math.nan),
            "min_ms": _r(min(lat) if lat else math.nan),
            "max_ms": _r(max(lat) if lat else math.nan),
        }


def _r(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


async def _timed(op: Op, sample: Sample) -> None:
    start = time.perf_counter()
    try:
        error = await op()
    except Exception as exc:  # one failed request must not end the run
        error = f"{type(exc).__name__}: {exc}"[:200]
    if error is None:
        sample.latencies_ms.append((time.perf_counter() - start) * 1000.0)
    else:
        sample.errors[error.split(":", 1)[0]] += 1
        if len(sample.error_examples) < 5:
            sample.error_examples.append(error)


async def run_count(label: str, op: Op, n: int, concurrency: int, progress_every: int = 0) -> Sample:
    """n operations by `concurrency` closed-loop workers."""
    sample = Sample(label, concurrency)
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while issued < n:
            issued += 1
            await _timed(op, sample)
            done = sample.completed + sample.error_count
            if progress_every and done % progress_every == 0:
                say(f"  {label}: {done}/{n}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    sample.elapsed_s = time.perf_counter() - start
    return sample


async def run_for(label: str, op: Op, seconds: float, concurrency: int, max_ops: int) -> Sample:
    """`concurrency` closed-loop workers for `seconds` (and at most `max_ops` operations)."""
    sample = Sample(label, concurrency)
    issued = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal issued
        while time.perf_counter() < deadline and issued < max_ops:
            issued += 1
            await _timed(op, sample)

    async def ticker() -> None:
        while True:
            await asyncio.sleep(5.0)
            elapsed = time.perf_counter() - start
            say(f"  {label}: {elapsed:4.1f}s, {sample.completed} ok, {sample.error_count} errors")

    tick = asyncio.create_task(ticker())
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
    sample.elapsed_s = time.perf_counter() - start
    return sample


# --------------------------------------------------------------------------------------------- CPU use


MACHINE = "whole machine"
OTHER = "other processes (not this benchmark's)"


class CpuMeter:
    """CPU seconds of named processes from /proc (Linux); reports % of one core over an interval.

    ``pids`` are fixed processes; ``trees`` a process and its children, rescanned at every snapshot
    (PostgreSQL forks a backend per connection); ``comms`` process names, rescanned likewise (every
    process of that name on the machine: only where the tree is not known). A process born inside
    the interval counts from zero.
    """

    def __init__(self) -> None:
        self.pids: dict[str, list[int]] = {}
        self.trees: dict[str, int] = {}
        self.comms: dict[str, str] = {}
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._start: dict[tuple[str, int], float] = {}
        self._wall = 0.0

    @staticmethod
    def _cpu_ticks(pid: int) -> int | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    @staticmethod
    def pids_named(comm: str) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if (entry / "comm").read_text().strip() == comm:
                        found.append(int(entry.name))
        return found

    @staticmethod
    def pids_under(root: int) -> list[int]:
        """``root`` and its direct children (a postmaster's backends and helpers)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    if int(entry.name) == root or parent == root:
                        found.append(int(entry.name))
        return found

    def groups(self) -> dict[str, list[int]]:
        """Every name the meter knows, with its processes now."""
        return {
            **self.pids,
            **{name: self.pids_under(root) for name, root in self.trees.items()},
            **{name: self.pids_named(comm) for name, comm in self.comms.items()},
        }

    @staticmethod
    def _machine_busy_ticks() -> int | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        values = [int(v) for v in fields]
        return sum(values[:8]) - values[3] - values[4]  # all but idle and iowait (guest is in user)

    def _snapshot(self) -> dict[tuple[str, int], float]:
        out: dict[tuple[str, int], float] = {}
        machine = self._machine_busy_ticks()
        if machine is not None:
            out[(MACHINE, 0)] = machine / self._tick
        for name, pids in self.groups().items():
            for pid in pids:
                ticks = self._cpu_ticks(pid)
                if ticks is not None:
                    out[(name, pid)] = ticks / self._tick
        return out

    def start(self) -> None:
        self._start, self._wall = self._snapshot(), time.monotonic()

    def stop(self) -> dict[str, float]:
        """% of one core per name; also the whole machine and what is not ours ("other")."""
        end, wall = self._snapshot(), time.monotonic() - self._wall
        seconds: dict[str, float] = dict.fromkeys([*self.pids, *self.trees, *self.comms], 0.0)
        for (name, pid), value in end.items():
            seconds[name] = seconds.get(name, 0.0) + value - self._start.get((name, pid), 0.0)
        used = {name: round(100.0 * value / wall, 1) for name, value in seconds.items()}
        if MACHINE in used:
            ours = sum(v for k, v in used.items() if k != MACHINE)
            used[OTHER] = round(max(0.0, used[MACHINE] - ours), 1)
        return used


def base_meter() -> CpuMeter:
    meter = CpuMeter()
    meter.pids["bench (this process)"] = [os.getpid()]
    with contextlib.suppress(OSError, ValueError):
        meter.pids["kafka broker"] = [int(KAFKA_PID_FILE.read_text().strip())]
    try:  # this checkout's server only: other checkouts on the machine may run theirs
        meter.trees["postgresql (whole server)"] = int(POSTMASTER_PID_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        meter.comms["postgresql (whole server)"] = "postgres"
    return meter


def peak_rss_kib(pid: int) -> int | None:
    """A process's peak resident set size so far (``VmHWM`` of /proc/<pid>/status), in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss(meter: CpuMeter) -> dict[str, Any]:
    """Peak RSS (MiB) of every process the meter knows, read while they still run.

    The platform's services and the broker are one process each; their peak covers their whole
    life (the broker's includes the raw-Kafka baselines). PostgreSQL is a process per connection:
    its backends share the buffer pool, so their sum counts shared pages once per backend that
    touched them and overstates the server's memory; the largest single process is given with it.
    """
    out: dict[str, Any] = {}
    for name, pids in meter.groups().items():
        peaks = [kib for pid in pids if (kib := peak_rss_kib(pid)) is not None]
        if not peaks or name == "bench (this process)":
            continue
        if name in meter.pids and len(peaks) == 1:
            out[name] = round(peaks[0] / 1024, 1)
        else:
            out[name] = {
                "processes": len(peaks),
                "largest_process": round(max(peaks) / 1024, 1),
                "sum_over_processes": round(sum(peaks) / 1024, 1),
            }
    return out


def format_rss(rss: dict[str, Any]) -> str:
    parts = []
    for name, value in rss.items():
        if isinstance(value, dict):
            parts.append(
                f"{name} largest {value['largest_process']:.0f} MiB "
                f"({value['processes']} processes, sum {value['sum_over_processes']:.0f} MiB: shared pages counted in each)"
            )
        else:
            parts.append(f"{name} {value:.0f} MiB")
    return ", ".join(parts)


PLATFORM = "platform (services, broker, PostgreSQL)"


def cpu_ms_per_query(cpu: dict[str, float], sample: Sample) -> dict[str, float]:
    """CPU milliseconds per completed query, per process (from % of one core over the sample),
    and the platform's total: every service, the broker and PostgreSQL; not the load generator."""
    if not sample.completed:
        return {}
    per = {name: pct / 100.0 * sample.elapsed_s * 1000.0 / sample.completed for name, pct in cpu.items()}
    outside = (MACHINE, OTHER, "bench (this process)")
    per[PLATFORM] = sum(v for name, v in per.items() if name not in outside)
    return {name: round(v, 3) for name, v in per.items()}


def format_cpu_ms(per_query: dict[str, float]) -> str:
    parts = [f"{name} {ms:.2f}" for name, ms in sorted(per_query.items(), key=lambda kv: -kv[1]) if name != MACHINE]
    return ", ".join(parts)


def format_cpu(cpu: dict[str, float]) -> str:
    parts = [f"{name} {pct:.0f}%" for name, pct in sorted(cpu.items(), key=lambda kv: -kv[1]) if name != MACHINE]
    capacity = 100 * (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    total = f"{MACHINE} {cpu[MACHINE]:.0f}% of {capacity}%; " if MACHINE in cpu else ""
    return total + ", ".join(parts)


# --------------------------------------------------------------------------------------------- raw Kafka


async def _wait_assigned(consumer: Any, topic: str, timeout_s: float = 30.0) -> None:
    """Until the group-less consumer owns every partition and has resolved its 'latest' offsets."""
    deadline = time.monotonic() + timeout_s
    while True:
        assigned = consumer.assignment()
        if len(assigned) == RAW_PARTITIONS:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"consumer of {topic} not assigned after {timeout_s}s (has {assigned})")
        await asyncio.sleep(0.05)
    for tp in assigned:
        await consumer.position(tp)  # forces the offset reset now, before anything is sent


async def raw_kafka(bootstrap: str, two_hop: bool) -> dict[int, Sample]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    label = "raw kafka request→reply (2 hops)" if two_hop else "raw kafka produce→consume"
    request_topic = f"bench.raw.{secrets.token_hex(4)}"
    reply_topic = f"{request_topic}.reply"
    topics = [request_topic, reply_topic] if two_hop else [request_topic]

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench")
    await admin.start()
    producers: list[Any] = []
    consumers: list[Any] = []
    tasks: list[asyncio.Task[None]] = []
    pending: dict[bytes, asyncio.Future[None]] = {}
    try:
        await admin.create_topics([NewTopic(t, num_partitions=RAW_PARTITIONS, replication_factor=1) for t in topics])

        def producer() -> Any:
            p = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="bench", **PRODUCER_SETTINGS)
            producers.append(p)
            return p

        def consumer(topic: str) -> Any:
            c = AIOKafkaConsumer(
                bootstrap_servers=bootstrap,
                client_id="bench",
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="latest",
                fetch_max_wait_ms=100,
            )
            c.subscribe([topic])
            consumers.append(c)
            return c

        requester = producer()
        receiver = consumer(reply_topic if two_hop else request_topic)
        for p in producers:
            await p.start()
        await receiver.start()
        await _wait_assigned(receiver, reply_topic if two_hop else request_topic)

        async def receive() -> None:
            while True:
                batches = await receiver.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        future = pending.pop(record.key, None)
                        if future is not None and not future.done():
                            future.set_result(None)

        tasks.append(asyncio.create_task(receive(), name="bench:receive"))

        if two_hop:
            echo_producer = producer()
            await echo_producer.start()
            echo_consumer = consumer(request_topic)
            await echo_consumer.start()
            await _wait_assigned(echo_consumer, request_topic)

            async def echo() -> None:
                while True:
                    batches = await echo_consumer.getmany(timeout_ms=1000)
                    for records in batches.values():
                        for record in records:
                            await echo_producer.send(reply_topic, value=record.value, key=record.key)

            tasks.append(asyncio.create_task(echo(), name="bench:echo"))

        loop = asyncio.get_running_loop()

        async def round_trip() -> str | None:
            key = secrets.token_bytes(16)
            future: asyncio.Future[None] = loop.create_future()
            pending[key] = future
            try:
                await requester.send(request_topic, value=RAW_PAYLOAD, key=key)
                await asyncio.wait_for(future, RAW_TIMEOUT_S)
            except TimeoutError:
                return "timeout"
            finally:
                pending.pop(key, None)
            return None

        say(f"  {label}: warm-up {RAW_WARMUP}")
        await run_count(label, round_trip, RAW_WARMUP, max(c for c, _ in LEVELS))
        return {c: await run_count(label, round_trip, n, c) for c, n in LEVELS}
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for c in consumers:
            with contextlib.suppress(Exception):
                await c.stop()
        for p in producers:
            with contextlib.suppress(Exception):
                await p.stop()
        with contextlib.suppress(Exception):
            await admin.delete_topics(topics)
        await admin.close()


# --------------------------------------------------------------------------------------------- exchange


async def lift_rate_limit(creds: DemoCredentials, admin_password: str) -> None:
    """Give the benchmark's system a rate limit above what it can send, as a platform admin would:
    the limit is still checked on every request (its cost is measured), it never refuses one."""
    async with aiohttp.ClientSession(creds.gateway) as client:
        async with client.post("/v1/auth/login", json={"username": "admin", "password": admin_password}) as login:
            login.raise_for_status()
            headers = {"authorization": f"Bearer {(await login.json())['access_token']}"}
        limit = {"rate_per_s": 1e5, "burst": 10**6}
        async with client.put(f"/v1/systems/{creds.client_id}/rate-limit", json=limit, headers=headers) as answer:
            answer.raise_for_status()


async def exchange_phases(
    creds: DemoCredentials, meter: CpuMeter
) -> tuple[dict[int, Sample], Sample, dict[int, list[Trace]], dict[str, Any]]:
    if not creds.gateway.startswith("http://127.0.0.1:"):
        raise RuntimeError(f"refusing to benchmark a non-local gateway: {creds.gateway}")
    # aiohttp, not httpx: the load generator shares the two cores with the platform, and aiohttp
    # costs it about a third of the CPU per request.
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(creds.gateway, connector=connector, timeout=timeout) as client:
        auth = aiohttp.BasicAuth(creds.client_id, creds.client_secret)
        async with client.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=auth) as token:
            token.raise_for_status()
            access_token = (await token.json())["access_token"]
        headers = {"authorization": f"Bearer {access_token}"}
        body = {
            "resource": creds.resource,
            "purpose": creds.purpose,
            "subject": {"type": "id_card", "value": creds.subject},
        }

        traces: list[Trace] | None = None

        async def query() -> str | None:
            sent = time.time()
            async with client.post("/v1/exchange/queries", json=body, headers=headers) as response:
                content = await response.read()
            if response.status != 200:
                return f"HTTP {response.status}: {content[:160].decode(errors='replace')}"
            if traces is not None:
                traces.append(Trace(str(json.loads(content)["id"]), sent, time.time()))
            return None

        say(f"phase A: warm-up {QUERY_WARMUP} queries")
        warm = await run_count("warm-up", query, QUERY_WARMUP, max(c for c, _ in LEVELS))
        if warm.error_count:
            say(f"  warm-up had {warm.error_count} errors: {warm.error_examples[:2]}")
        latency: dict[int, Sample] = {}
        traced: dict[int, list[Trace]] = {}
        extra: dict[str, Any] = {"warmup": warm.summary()}
        for concurrency, n in LEVELS:
            say(f"phase A: {n} queries at concurrency {concurrency}")
            meter.start()
            traces = traced[concurrency] = []
            sample = latency[concurrency] = await run_count(
                "exchange query", query, n, concurrency, progress_every=n // 2
            )
            traces = None
            cpu = extra[f"cpu_percent_phase_a_c{concurrency}"] = meter.stop()
            say(
                f"phase A at concurrency {concurrency} done: p50 {sample.p(50):.1f} ms, p99 {sample.p(99):.1f} ms, "
                f"{sample.rate:.0f}/s, {sample.error_count} errors"
            )
            say(f"  CPU (% of one core): {format_cpu(cpu)}")

        say(f"phase B: closed loop at concurrency {THROUGHPUT_CONCURRENCY} for {THROUGHPUT_SECONDS:.0f} s")
        meter.start()
        throughput = await run_for(
            "exchange query", query, THROUGHPUT_SECONDS, THROUGHPUT_CONCURRENCY, THROUGHPUT_MAX_REQUESTS
        )
        cpu_b = meter.stop()
        say(
            f"phase B done: {throughput.completed} ok, {throughput.error_count} errors in "
            f"{throughput.elapsed_s:.1f} s = {throughput.rate:.0f} queries/s (p99 under load {throughput.p(99):.1f} ms)"
        )
        say(f"  CPU (% of one core): {format_cpu(cpu_b)}")
        extra["cpu_percent_phase_b"] = cpu_b
        per_query = extra["cpu_ms_per_query_phase_b"] = cpu_ms_per_query(cpu_b, throughput)
        say(f"  CPU ms per query: {format_cpu_ms(per_query)}")
        return latency, throughput, traced, extra


@dataclass(frozen=True, slots=True)
class Trace:
    """One successful phase-A query as the client saw it (wall clock, seconds)."""

    query_id: str
    sent: float
    received: float


STAGES = (
    ("client → exchange transaction start", "sent", "created"),
    ("exchange: checks + insert + commit → request on Kafka", "created", "request"),
    ("Kafka hop 1 + connector → reply on Kafka", "request", "reply"),
    ("Kafka hop 2 → exchange wakes, finish begins", "reply", "completed"),
    ("finish (update + audit commit) → gateway → client", "completed", "received"),
)


async def _topic_timestamps(bootstrap: str, topic: str, timeout_s: float = 30.0) -> dict[str, float]:
    """key → record timestamp (s) of every record of `topic` up to its current end."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, client_id="bench-trace", group_id=None, auto_offset_reset="earliest"
    )
    consumer.subscribe([topic])
    await consumer.start()
    out: dict[str, float] = {}
    try:
        deadline = time.monotonic() + timeout_s
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no partitions of {topic} assigned")
            await asyncio.sleep(0.05)
        partitions = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)

        async def behind() -> bool:
            for tp in partitions:
                if await consumer.position(tp) < ends[tp]:
                    return True
            return False

        while await behind() and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for record in records:
                    if record.key is not None:
                        out.setdefault(record.key.decode(), record.timestamp / 1000.0)
    finally:
        await consumer.stop()
    return out


async def stage_breakdown(
    traces: list[Trace], database_url: str, bootstrap: str, prefix: str, provider: str
) -> dict[str, Any]:
    """Where phase A's time went, from the queries' rows (created_at, completed_at: transaction starts)
    and the Kafka record timestamps of each query's request and reply. One host, one clock."""
    dsn, _ = asyncpg_dsn(database_url)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id::text AS id, created_at, completed_at FROM exchange.queries WHERE id = ANY($1::uuid[])",
            [t.query_id for t in traces],
        )
    finally:
        await conn.close()
    db = {r["id"]: (r["created_at"].timestamp(), r["completed_at"].timestamp()) for r in rows if r["completed_at"]}
    requests = await _topic_timestamps(bootstrap, f"{prefix}exchange.requests.{provider}")
    replies = await _topic_timestamps(bootstrap, f"{prefix}exchange.replies")
    durations: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    matched = 0
    for t in traces:
        if t.query_id not in db or t.query_id not in requests or t.query_id not in replies:
            continue
        matched += 1
        points = {
            "sent": t.sent,
            "created": db[t.query_id][0],
            "request": requests[t.query_id],
            "reply": replies[t.query_id],
            "completed": db[t.query_id][1],
            "received": t.received,
        }
        for name, start, end in STAGES:
            durations[name].append((points[end] - points[start]) * 1000.0)
    return {
        "matched_queries": matched,
        "note": "Kafka timestamps have 1 ms resolution; created_at/completed_at are PostgreSQL transaction starts",
        "stages": {
            name: {"p50_ms": _r(percentile(v, 50)), "p99_ms": _r(percentile(v, 99)), "mean_ms": _r(_mean(v))}
            for name, v in durations.items()
        },
    }


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def log_tails(stack: DistributedStack, lines: int = 25) -> None:
    for name in ("gateway", "registry", "exchange", "audit", "connector"):
        path = stack.logs / f"{stack.prefix}{name}.log"
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            print(f"----- {path} (last {len(tail)} lines)", file=sys.stderr)
            print("\n".join(tail), file=sys.stderr)


# --------------------------------------------------------------------------------------------- report


def kafka_version() -> str:
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", KAFKA_POM.read_text())
    return match.group(1) if match else "unknown"


def machine() -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "nproc": affinity,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "client_event_loop": type(asyncio.get_running_loop()).__module__,
    }


def fmt(value: float, digits: int = 1) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}"


Row = tuple[str, int, float, float, float, int]  # label, concurrency, p50, p99, per second, errors


def print_table(rows: list[Row]) -> None:
    header = ("", "concurrency", "p50 ms", "p99 ms", "per second", "errors")
    body = [(label, str(c), fmt(p50), fmt(p99), fmt(rate, 0), str(err)) for label, c, p50, p99, rate, err in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = "+".join("-" * (w + 2) for w in widths)
    print(line)
    for i, row in enumerate([header, *body]):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print(" " + " | ".join(cells))
        if i == 0:
            print(line)
    print(line)


def print_breakdown(concurrency: int, breakdown: dict[str, Any]) -> None:
    if "stages" not in breakdown:
        return
    print(f"\nwhere the time went at concurrency {concurrency} ({breakdown['matched_queries']} queries matched):")
    width = max(len(name) for name in breakdown["stages"])
    print(f"  {'stage'.ljust(width)}  p50 ms  p99 ms")
    for name, figures in breakdown["stages"].items():
        p50, p99 = (math.nan if figures[k] is None else figures[k] for k in ("p50_ms", "p99_ms"))
        print(f"  {name.ljust(width)}  {fmt(p50):>6}  {fmt(p99):>6}")


async def main() -> int:
    env = infra_env()
    bootstrap = env["TONGBAN_KAFKA_BOOTSTRAP"]
    started = dt.datetime.now().astimezone()
    say(f"Kafka {kafka_version()} at {bootstrap}; {machine()['nproc']} CPUs; Python {sys.version.split()[0]}")

    meter = base_meter()
    raw: dict[str, dict[int, Sample]] = {}
    raw_cpu: dict[str, dict[str, float]] = {}
    for key, hops2 in (("single", False), ("two_hop", True)):
        label = "raw kafka request→reply (2 hops)" if hops2 else "raw kafka produce→consume"
        say(f"baseline: {label}, at concurrency {' and '.join(str(c) for c, _ in LEVELS)}")
        meter.start()
        raw[key] = await raw_kafka(bootstrap, hops2)
        raw_cpu[key] = meter.stop()
        for c, sample in raw[key].items():
            say(
                f"baseline done at concurrency {c}: p50 {sample.p(50):.1f} ms, p99 {sample.p(99):.1f} ms, "
                f"{sample.rate:.0f}/s, {sample.error_count} errors"
            )
        say(f"  CPU (% of one core): {format_cpu(raw_cpu[key])}")

    say("starting the platform in distributed mode (5 service processes) and seeding the demo")
    url = await create_database(env["TONGBAN_DATABASE_URL"])
    stack = DistributedStack(database_url=url)
    breakdowns: dict[int, dict[str, Any]] = {}
    rss: dict[str, Any] = {}
    try:
        t = time.monotonic()
        try:
            creds = await stack.start()
        except Exception as exc:
            say(f"the platform did not start: {type(exc).__name__}: {exc}")
            log_tails(stack)
            return 1
        say(f"platform up in {time.monotonic() - t:.1f} s: gateway {creds.gateway}, logs var/log/{stack.prefix}*.log")
        for name, process in stack.processes.items():
            meter.pids[f"service {name}"] = [process.pid]
        await lift_rate_limit(creds, stack.admin_password)
        latency, throughput, traces, extra = await exchange_phases(creds, meter)
        # Read before the platform stops: PostgreSQL's backends end with the services' pools.
        rss = peak_rss(meter)
        say(f"peak RSS: {format_rss(rss)}")
        say("stage breakdown of phase A (queries table + Kafka record timestamps)")
        for c, traced in traces.items():
            try:
                breakdowns[c] = await stage_breakdown(traced, url, bootstrap, stack.prefix, POLICE["code"])
            except Exception as exc:  # a diagnostic: never lose the run's figures over it
                say(f"  stage breakdown failed: {type(exc).__name__}: {exc}")
                breakdowns[c] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        say("stopping the platform")
        stack.stop_all()
        with contextlib.suppress(Exception):
            await drop_database(url)

    query_errors = sum(s.error_count for s in latency.values()) + throughput.error_count
    ratios = {
        c: {
            "vs_produce_consume": latency[c].p(99) / raw["single"][c].p(99),
            "vs_request_reply_two_hops": latency[c].p(99) / raw["two_hop"][c].p(99),
        }
        for c, _ in LEVELS
    }
    qps_met = throughput.rate >= TARGET_QPS and query_errors == 0

    def row(label: str, s: Sample) -> Row:
        return (label, s.concurrency, s.p(50), s.p(99), s.rate, s.error_count)

    print()
    print_table(
        [
            *(row("exchange query via gateway", s) for s in latency.values()),
            row("exchange query via gateway (phase B)", throughput),
            *(row("raw kafka produce→consume", s) for s in raw["single"].values()),
            *(row("raw kafka request→reply (2 hops)", s) for s in raw["two_hop"].values()),
        ]
    )
    print(
        "exchange: phase A is a fixed number of queries per concurrency; phase B a "
        f"{THROUGHPUT_SECONDS:.0f} s closed loop, its p50/p99 are under full load. raw kafka: round trips."
    )
    for c, breakdown in breakdowns.items():
        print_breakdown(c, breakdown)
    print()
    verdict = {True: "MET", False: "NOT MET"}
    for c, r in ratios.items():
        for name, value in r.items():
            baseline = "raw produce→consume" if name == "vs_produce_consume" else "raw request→reply (2)"
            print(
                f"p99 ratio at concurrency {c}: query / {baseline.ljust(21)} = {value:6.2f}  "
                f"(target ≤ {TARGET_P99_RATIO:.0f}×): {verdict[value <= TARGET_P99_RATIO]}"
            )
    print(
        f"throughput {throughput.rate:.0f} queries/s, {query_errors} errors "
        f"(target ≥ {TARGET_QPS:.0f}/s, zero errors): {verdict[qps_met]}"
    )
    print(f"peak RSS (MiB): {format_rss(rss)}")

    results = {
        "benchmark": "skeleton",
        "timestamp": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "kafka_version": kafka_version(),
        "kafka_bootstrap": bootstrap,
        "settings": {
            "query_warmup": QUERY_WARMUP,
            "levels": [{"concurrency": c, "operations": n} for c, n in LEVELS],
            "throughput_seconds": THROUGHPUT_SECONDS,
            "throughput_concurrency": THROUGHPUT_CONCURRENCY,
            "raw_warmup": RAW_WARMUP,
            "raw_partitions": RAW_PARTITIONS,
            "raw_payload_bytes": len(RAW_PAYLOAD),
            "producer": PRODUCER_SETTINGS,
        },
        "exchange": {
            "latency_phase_a": {str(c): s.summary() for c, s in latency.items()},
            "throughput_phase_b": throughput.summary(),
            "stage_breakdown_phase_a": {str(c): b for c, b in breakdowns.items()},
            **extra,
        },
        "peak_rss_mib": rss,
        "raw_kafka": {
            "produce_consume": {str(c): s.summary() for c, s in raw["single"].items()},
            "request_reply_two_hops": {str(c): s.summary() for c, s in raw["two_hop"].items()},
            "cpu_percent": raw_cpu,
        },
        "targets": {
            "p99_ratio_max": TARGET_P99_RATIO,
            "p99_ratios": {str(c): {k: round(v, 3) for k, v in r.items()} for c, r in ratios.items()},
            "p99_met": {str(c): {k: v <= TARGET_P99_RATIO for k, v in r.items()} for c, r in ratios.items()},
            "queries_per_s_min": TARGET_QPS,
            "queries_per_s": round(throughput.rate, 1),
            "errors": query_errors,
            "throughput_met": qps_met,
        },
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{started:%Y-%m-%d}-skeleton.json"
    out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n")
    print(f"\nresults written to {out.relative_to(ROOT)}")
    return 0


def run() -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


if __name__ == "__main__":
    sys.exit(run())
