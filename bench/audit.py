"""Audit benchmark (`make bench-audit`, issue 11 "Benchmark"), on the local PostgreSQL, in one run:

1. **Ingest**: events appended by the store's own batch append (hashing, chain, Merkle tree
   hashes) with a signed checkpoint per batch group, in events/s — against a raw COPY of the same
   rows into a table like ``audit.records`` (same indexes) in the same database.
2. **Inclusion proofs** at a large tree: the tree hashes of ``BENCH_AUDIT_TREE`` synthetic leaves
   are computed as the store computes them (``merkle.Frontier``) and COPYed into
   ``audit.tree_hashes``; then proofs of random leaves are built from the store (the service's
   ``compute_from_store``) and verified (RFC 9162 root from the proof, compared with the root).
3. **Queries**: ``BENCH_AUDIT_RECORDS`` synthetic records generated inside PostgreSQL, then the
   auditors' search (``services.audit.queries.search``, first page of 100) by subject, by consumer
   and day, and by a one-hour time range; p50/p95 per kind.

Sizes come from the environment (BENCH_AUDIT_INGEST, BENCH_AUDIT_TREE, BENCH_AUDIT_RECORDS);
BENCH_AUDIT_PROFILE=1 profiles the ingest phase with cProfile and prints the top functions
(by cumulative time; BENCH_AUDIT_PROFILE_SORT=tottime sorts by their own time).
``--only ingest`` (repeatable: ``ingest``, ``inclusion_proofs``, ``queries``) runs just those
phases: the ingest alone takes under a minute, the whole run over a quarter of an hour.
Writes ``bench/results/<date>-audit.json`` (``<date>-audit-<phases>.json`` for a partial run, so a
partial run never overwrites a full one).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import hashlib
import io
import json
import os
import pstats
import random
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import text

from bench.skeleton import RESULTS_DIR, machine, percentile
from services.audit import merkle
from services.audit.app import MIGRATIONS
from services.audit.queries import Cursors, Order, RecordFilter, search
from services.audit.service import (
    append,
    compute_from_store,
    next_month,
    partition_name,
    signing_key,
    take_checkpoint,
)
from services.common.db import create_engine, migrate, session_factory
from services.common.keywrap import KeyWrap, new_kek
from services.common.pb import audit_pb2
from tests.stack import ROOT, asyncpg_dsn, create_database, drop_database, infra_env

INGEST = int(os.environ.get("BENCH_AUDIT_INGEST", "50000"))
INGEST_BATCH = 1000  # events per append: the consumer's batches are about this size under load
CHECKPOINT_EVERY = 10  # batches per signed checkpoint
TREE = int(os.environ.get("BENCH_AUDIT_TREE", "10000000"))
TREE_CHUNK = 500_000  # leaves per COPY
PROOFS = 200
RECORDS = int(os.environ.get("BENCH_AUDIT_RECORDS", "10000000"))
QUERIES = 100  # per kind
CONSUMERS = 200
SUBJECTS = 500_000
DAYS = 365
PROFILE = os.environ.get("BENCH_AUDIT_PROFILE") == "1"
ORIGIN = "bench.tongban/audit"

TARGET_RATE = 20_000.0
TARGET_RATIO = 0.3
TARGET_PROOF_BYTES = 1024
TARGET_VERIFY_MS = 1.0
TARGET_P95_MS = 200.0


def say(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", flush=True)


def synthetic_event(n: int, at_ms: int) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        event_id=uuid.uuid4().hex,
        occurred_unix_ms=at_ms,
        service="exchange",
        action="exchange.query",
        outcome="completed",
        actor=f"client-{n % 50}",
        consumer_dept=f"11110100000{n % CONSUMERS:06d}X",
        consumer_client_id=f"client-{n % 50}",
        provider_dept="111101000000198608",
        resource_code="101010/000001",
        purpose="ZDSHBZ-SP",
        subject_type="id_card",
        subject_hash=hashlib.sha256(f"s{n % SUBJECTS}".encode()).hexdigest(),
        subject_key_id="k1",
        fields=["姓名", "出生日期", "户籍地址"],
        query_id=str(uuid.uuid4()),
        request_id=secrets.token_hex(8),
    )


async def ingest(url: str) -> dict[str, Any]:
    """The store's append (with a checkpoint every CHECKPOINT_EVERY batches) against COPY."""
    engine = create_engine(url, pool_size=2)
    sessions = session_factory(engine)
    now_ms = int(time.time() * 1000)
    batches = [
        [synthetic_event(b * INGEST_BATCH + i, now_ms + b) for i in range(INGEST_BATCH)]
        for b in range(INGEST // INGEST_BATCH)
    ]
    # The service's checkpoint key, sealed as it is in production (under a KEK of this run's own)
    # and unsealed once, as the service does at start.
    async with sessions.begin() as session:
        signer = await signing_key(session, ORIGIN, KeyWrap(new_kek()))
    profiler = cProfile.Profile() if PROFILE else None
    say(f"ingest: {INGEST} events in batches of {INGEST_BATCH}, a checkpoint every {CHECKPOINT_EVERY} batches")
    load_before = os.getloadavg()
    began, cpu_began = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    checkpoints = 0
    for n, batch in enumerate(batches, 1):
        async with sessions.begin() as session:
            await append(session, batch)
        if n % CHECKPOINT_EVERY == 0 or n == len(batches):
            async with sessions.begin() as session:
                await take_checkpoint(session, ORIGIN, signer)
            checkpoints += 1
    if profiler:
        profiler.disable()
    took, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    rate = INGEST / took
    say(
        f"ingest: {rate:,.0f} events/s ({took:.1f} s, {checkpoints} checkpoints; this process's CPU "
        f"{cpu * 1e6 / INGEST:.0f} µs/event; load {load_before[0]:.1f})"
    )
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(
            os.environ.get("BENCH_AUDIT_PROFILE_SORT", "cumulative")
        ).print_stats(30)
        print(out.getvalue())
    await engine.dispose()

    # The same rows, as stored, COPYed into a table like audit.records: the same columns and
    # indexes, partitioned by month as it is (its partitions made up front) — and, for comparison,
    # into the same table unpartitioned (the baseline of the runs before 2026-11-27 10:00).
    dsn, _ = asyncpg_dsn(url)
    conn = await asyncpg.connect(dsn)
    try:
        columns = [
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'audit' "
                "AND table_name = 'records' ORDER BY ordinal_position"
            )
        ]
        listed = ", ".join(columns)  # names read from the catalogue just above, not input
        rows = [tuple(r) for r in await conn.fetch(f"SELECT {listed} FROM audit.records ORDER BY seq")]  # noqa: S608
        await conn.execute(
            "CREATE TABLE public.raw_records (LIKE audit.records INCLUDING ALL) PARTITION BY RANGE (month)"
        )
        for month in sorted({r[columns.index("month")] for r in rows}):
            await conn.execute(
                f"CREATE TABLE public.{partition_name(month)} PARTITION OF public.raw_records "
                f"FOR VALUES FROM ('{month.isoformat()}') TO ('{next_month(month).isoformat()}')"
            )
        await conn.execute("CREATE TABLE public.raw_records_flat (LIKE audit.records INCLUDING ALL)")
        copy_took = await copy_rows(conn, "raw_records", rows, columns)
        flat_took = await copy_rows(conn, "raw_records_flat", rows, columns)
    finally:
        await conn.close()
    copy_rate, flat_rate = len(rows) / copy_took, len(rows) / flat_took
    load_after = os.getloadavg()
    say(
        f"raw COPY of the same rows: {copy_rate:,.0f} rows/s ({copy_took:.1f} s), unpartitioned {flat_rate:,.0f} "
        f"rows/s; ratio {rate / copy_rate:.2f} ({rate / flat_rate:.2f} to unpartitioned); load {load_after[0]:.1f}"
    )
    return {
        "events": INGEST,
        "batch": INGEST_BATCH,
        "checkpoints": checkpoints,
        "seconds": round(took, 2),
        "events_per_s": round(rate),
        "ingest_process_cpu_us_per_event": round(cpu * 1e6 / INGEST, 1),
        "raw_copy_rows_per_s": round(copy_rate),
        "raw_copy_seconds": round(copy_took, 2),
        "ratio_to_raw_copy": round(rate / copy_rate, 3),
        "raw_copy_unpartitioned_rows_per_s": round(flat_rate),
        "ratio_to_raw_copy_unpartitioned": round(rate / flat_rate, 3),
        "load_average_1m": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
        "met": rate >= TARGET_RATE and rate / copy_rate >= TARGET_RATIO,
    }


async def copy_rows(conn: Any, table: str, rows: list[tuple[Any, ...]], columns: list[str]) -> float:
    """Seconds to COPY ``rows`` into ``public.<table>`` in transactions of INGEST_BATCH rows, as
    the ingest writes them."""
    began = time.perf_counter()
    for first in range(0, len(rows), INGEST_BATCH):
        async with conn.transaction():
            await conn.copy_records_to_table(
                table, schema_name="public", records=rows[first : first + INGEST_BATCH], columns=columns
            )
    return time.perf_counter() - began


async def big_tree(url: str) -> dict[str, Any]:
    """Tree hashes of TREE leaves into audit.tree_hashes; proofs of random leaves from the store."""
    dsn, _ = asyncpg_dsn(url)
    conn = await asyncpg.connect(dsn)
    say(f"tree: {TREE:,} leaves, hashes computed and COPYed in chunks of {TREE_CHUNK:,}")
    frontier = merkle.Frontier()
    began = time.perf_counter()
    try:
        await conn.execute("TRUNCATE audit.tree_hashes")
        for first in range(0, TREE, TREE_CHUNK):
            rows: list[tuple[int, bytes]] = []
            for index in range(first, min(first + TREE_CHUNK, TREE)):
                start = merkle.stored_hash_index(0, index)
                leaf = hashlib.sha256(index.to_bytes(8, "big")).digest()  # a record's hash stands in
                rows += [(start + k, h) for k, h in enumerate(frontier.append(leaf))]
            await conn.copy_records_to_table("tree_hashes", schema_name="audit", records=rows, columns=["idx", "hash"])
            if (first // TREE_CHUNK) % 4 == 3:
                say(f"tree: {first + TREE_CHUNK:,} leaves")
    finally:
        await conn.close()
    built = time.perf_counter() - began
    root = frontier.root()
    say(f"tree: built in {built:.0f} s")

    engine = create_engine(url, pool_size=2)
    sessions = session_factory(engine)
    fetch_ms: list[float] = []
    verify_ms: list[float] = []
    sizes: set[int] = set()
    rng = random.Random(7)
    for _ in range(PROOFS):
        index = rng.randrange(TREE)
        leaf = hashlib.sha256(index.to_bytes(8, "big")).digest()
        t0 = time.perf_counter()
        async with sessions() as session:
            proof = await compute_from_store(session, lambda read, i=index: merkle.inclusion_proof(i, TREE, read))
        t1 = time.perf_counter()
        ok = merkle.root_from_inclusion(index, TREE, leaf, proof) == root
        t2 = time.perf_counter()
        assert ok, f"the proof of leaf {index} does not verify"
        fetch_ms.append((t1 - t0) * 1000)
        verify_ms.append((t2 - t1) * 1000)
        sizes.add(len(proof) * 32)
    await engine.dispose()
    summary = {
        "tree_size": TREE,
        "build_seconds": round(built, 1),
        "stored_hashes": merkle.stored_hash_count(TREE),
        "proofs": PROOFS,
        "proof_bytes_max": max(sizes),
        "proof_hashes_max": max(sizes) // 32,
        "proof_from_store_ms": {"p50": round(percentile(fetch_ms, 50), 3), "p95": round(percentile(fetch_ms, 95), 3)},
        "verify_ms": {"p50": round(percentile(verify_ms, 50), 4), "p95": round(percentile(verify_ms, 95), 4)},
    }
    summary["met"] = summary["proof_bytes_max"] < TARGET_PROOF_BYTES and summary["verify_ms"]["p95"] < TARGET_VERIFY_MS
    say(
        f"proofs: {summary['proof_bytes_max']} bytes ({summary['proof_hashes_max']} hashes); from the store "
        f"p95 {summary['proof_from_store_ms']['p95']} ms; verification p95 {summary['verify_ms']['p95']} ms"
    )
    return summary


# Records generated inside PostgreSQL: CONSUMERS departments, SUBJECTS subjects, over DAYS days.
GENERATE = """
INSERT INTO audit.records (seq, canonical_version, event_id, occurred_at, service, action, outcome, reason,
    actor, consumer_dept, consumer_client_id, provider_dept, resource_code, purpose, subject_type,
    subject_hash, subject_key_id, fields, answer_sha256, disclosed_fields, bundle_id, batch_id, query_id, request_id,
    prev_hash, hash, leaf_index, month)
SELECT $1 + g, 1, md5('e' || ($1 + g)), $3::timestamptz - (random() * $4::int * interval '1 day'), 'exchange',
    'exchange.query', CASE WHEN g % 20 = 0 THEN 'denied' ELSE 'completed' END, '', 'client-' || g % 50,
    '11110100000' || lpad((g % $5::int)::text, 6, '0') || 'X', 'client-' || g % 50,
    '111101000000198608', '101010/000001', 'ZDSHBZ-SP', 'id_card',
    encode(sha256(convert_to('s' || (g::bigint * 7919) % $6::int, 'UTF8')), 'hex'), 'k1',
    ARRAY['姓名', '出生日期'], '', '{}', '', '', md5('q' || g), '', repeat('0', 64), md5('h' || g) || md5('i' || g), $1 + g,
    date_trunc('month', $3::timestamptz AT TIME ZONE 'UTC')::date  -- all recorded now: this month's partition
FROM generate_series(1, $2) AS g
"""


async def load_records(conn: Any, records: int, now: dt.datetime, first_seq: int = 0) -> None:
    """Generate ``records`` synthetic records inside PostgreSQL (seq and leaf index from
    ``first_seq`` + 1, the last ``DAYS`` days before ``now``), the search indexes built once after
    the load (as a restore would), not row by row. Also bench/console.py's audit events."""
    chunk = 1_000_000
    indexes = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'audit' AND tablename = 'records' "
        "AND indexdef NOT LIKE 'CREATE UNIQUE%'"
    )
    for index in indexes:
        await conn.execute(f'DROP INDEX audit."{index["indexname"]}"')
    for first in range(0, records, chunk):
        await conn.execute(GENERATE, first_seq + first, min(chunk, records - first), now, DAYS, CONSUMERS, SUBJECTS)
        say(f"audit records: {min(first + chunk, records):,}")
    for index in indexes:
        # A partitioned table's index is listed "ON ONLY" the parent: made again on every partition.
        await conn.execute(index["indexdef"].replace(" ON ONLY ", " ON "))
    say(f"audit records: {len(indexes)} search indexes built")
    await conn.execute("ANALYZE audit.records")


async def queries(url: str) -> dict[str, Any]:
    dsn, _ = asyncpg_dsn(url)
    conn = await asyncpg.connect(dsn)
    now = dt.datetime.now(dt.UTC)
    say(f"queries: generating {RECORDS:,} records in PostgreSQL")
    began = time.perf_counter()
    try:
        await conn.execute("TRUNCATE audit.records, audit.tree_hashes, audit.checkpoints, audit.chain_head CASCADE")
        await conn.execute("DROP TABLE IF EXISTS public.raw_records, public.raw_records_flat")
        await load_records(conn, RECORDS, now)
    finally:
        await conn.close()
    loaded = time.perf_counter() - began
    say(f"queries: loaded in {loaded:.0f} s")

    engine = create_engine(url, pool_size=2)
    sessions = session_factory(engine)
    cursors = Cursors("bench-cursor-key")
    zone = ZoneInfo("Asia/Shanghai")
    rng = random.Random(11)

    def by_subject() -> RecordFilter:
        s = rng.randrange(SUBJECTS)
        return RecordFilter(subject_hashes=(hashlib.sha256(f"s{s}".encode()).hexdigest(),))

    def by_consumer_day() -> RecordFilter:
        day = (now - dt.timedelta(days=rng.randrange(1, DAYS))).astimezone(zone).replace(hour=0, minute=0, second=0)
        return RecordFilter(
            consumer=f"11110100000{rng.randrange(CONSUMERS):06d}X", start=day, end=day + dt.timedelta(days=1)
        )

    def by_time_range() -> RecordFilter:
        start = now - dt.timedelta(hours=rng.randrange(1, DAYS * 24))
        return RecordFilter(start=start, end=start + dt.timedelta(hours=1))

    kinds: dict[str, Callable[[], RecordFilter]] = {
        "subject": by_subject,
        "consumer_day": by_consumer_day,
        "time_range_1h": by_time_range,
    }
    results: dict[str, Any] = {}
    for name, make in kinds.items():
        times: list[float] = []
        found: list[int] = []
        for _ in range(QUERIES):
            f = make()
            t0 = time.perf_counter()
            async with sessions() as session:
                rows, _ = await search(session, f, Order.DESC, 100, None, cursors)
            times.append((time.perf_counter() - t0) * 1000)
            found.append(len(rows))
        results[name] = {
            "p50_ms": round(percentile(times, 50), 2),
            "p95_ms": round(percentile(times, 95), 2),
            "mean_rows": round(sum(found) / len(found), 1),
        }
        say(f"query by {name}: p50 {results[name]['p50_ms']} ms, p95 {results[name]['p95_ms']} ms")
    await engine.dispose()
    return {
        "records": RECORDS,
        "load_seconds": round(loaded, 1),
        "page": 100,
        "queries_per_kind": QUERIES,
        "by": results,
        "met": all(r["p95_ms"] <= TARGET_P95_MS for r in results.values()),
    }


PHASES = ("ingest", "inclusion_proofs", "queries")


async def main(only: list[str] | None = None) -> int:
    started = dt.datetime.now().astimezone()
    suffix = "" if not only else "-" + "-".join(p for p in PHASES if p in only)
    out = RESULTS_DIR / f"{started:%Y-%m-%d}-audit{suffix}.json"
    results: dict[str, Any] = {
        "benchmark": "audit",
        "timestamp": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "targets": {
            "ingest_events_per_s_min": TARGET_RATE,
            "ratio_to_raw_copy_min": TARGET_RATIO,
            "proof_bytes_max": TARGET_PROOF_BYTES,
            "verify_ms_max": TARGET_VERIFY_MS,
            "query_p95_ms_max": TARGET_P95_MS,
            "query_records_target": 10_000_000,
        },
    }

    def write() -> None:  # after each phase: a run stopped midway keeps what it measured
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        results["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n")

    url = await create_database(infra_env()["TONGBAN_DATABASE_URL"], "benchaudit")
    try:
        engine = create_engine(url, pool_size=1)
        await migrate(engine, "audit", MIGRATIONS)
        async with engine.connect() as c:
            results["postgresql_version"] = (await c.execute(text("SHOW server_version"))).scalar_one()
        await engine.dispose()
        phases: dict[str, Callable[[str], Awaitable[dict[str, Any]]]] = {
            "ingest": ingest,
            "inclusion_proofs": big_tree,
            "queries": queries,
        }
        for name, phase in phases.items():
            if only and name not in only:
                continue
            began = time.perf_counter()
            results[name] = await phase(url)
            say(f"{name}: {time.perf_counter() - began:.0f} s")
            write()
    finally:
        await drop_database(url)
    print(f"\nresults written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.audit", description="Audit benchmark: ingest vs raw COPY, inclusion proofs, queries."
    )
    parser.add_argument("--only", action="append", choices=PHASES, help="run only this phase (repeatable)")
    raise SystemExit(asyncio.run(main(parser.parse_args().only)))
