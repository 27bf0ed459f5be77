"""Batch benchmark (issue 10 §5, 批量查询): subjects per second through ``POST
/v1/exchange/queries:batch``, next to single sync queries on the same platform.

    python -m bench.batch        (``make bench-batch`` runs it with var/infra.env loaded)

The platform in distributed mode (tests/stack.py: five service processes), seeded with the demo,
the benchmark system's rate limit lifted (bench/skeleton.py). Then, each a closed loop for a fixed
time: batches of ``BATCH_SIZE`` subjects (the default limit, ``TONGBAN_EXCHANGE_BATCH_MAX_SUBJECTS``)
with ``BATCH_CONCURRENCY`` batches in flight; and single queries at ``SINGLE_CONCURRENCY`` (as the
skeleton's phase B). A subject counts when its outcome is 200 ``completed``; anything else is an
error. Results go to bench/results/<YYYY-MM-DD>-batch.json.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import sys
import time
from typing import Any

import aiohttp

from bench.skeleton import lift_rate_limit, machine, percentile, say
from services.connector.service import synthetic_residents
from services.demo import DemoCredentials
from tests.stack import ROOT, DistributedStack, create_database, drop_database, infra_env

RESULTS_DIR = ROOT / "bench" / "results"
BATCH_SIZE = 100
BATCH_CONCURRENCY = 2
SINGLE_CONCURRENCY = 32
SECONDS = 20.0
WARMUP_BATCHES = 2
REQUEST_TIMEOUT_S = 60.0


async def closed_loop(op: Any, concurrency: int, seconds: float) -> tuple[list[float], int, int, float]:
    """Run ``op`` (returning (ok, errors)) in ``concurrency`` loops for ``seconds``: latencies (ms),
    ok count, error count, elapsed seconds."""
    latencies: list[float] = []
    totals = [0, 0]
    began = time.monotonic()
    stop = began + seconds

    async def loop() -> None:
        while time.monotonic() < stop:
            t = time.monotonic()
            ok, errors = await op()
            latencies.append((time.monotonic() - t) * 1000)
            totals[0] += ok
            totals[1] += errors

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return latencies, totals[0], totals[1], time.monotonic() - began


async def measure(creds: DemoCredentials) -> dict[str, Any]:
    if not creds.gateway.startswith("http://127.0.0.1:"):
        raise RuntimeError(f"refusing to benchmark a non-local gateway: {creds.gateway}")
    subjects = [{"type": "id_card", "value": r.id_number} for r in synthetic_residents(BATCH_SIZE)]
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    errors_seen: list[str] = []
    async with aiohttp.ClientSession(creds.gateway, connector=aiohttp.TCPConnector(limit=64), timeout=timeout) as c:
        basic = base64.b64encode(f"{creds.client_id}:{creds.client_secret}".encode()).decode()
        grant = {"grant_type": "client_credentials"}
        async with c.post("/oauth2/token", data=grant, headers={"authorization": f"Basic {basic}"}) as token:
            token.raise_for_status()
            headers = {"authorization": f"Bearer {(await token.json())['access_token']}"}
        batch = {"resource": creds.resource, "purpose": creds.purpose, "subjects": subjects}
        single = {"resource": creds.resource, "purpose": creds.purpose, "subject": subjects[0]}

        async def one_batch() -> tuple[int, int]:
            async with c.post("/v1/exchange/queries:batch", json=batch, headers=headers) as answer:
                content = await answer.read()
            if answer.status != 200:
                errors_seen.append(f"HTTP {answer.status}: {content[:160].decode(errors='replace')}")
                return 0, BATCH_SIZE
            outcomes = json.loads(content)["outcomes"]
            ok = sum(1 for o in outcomes if o["status"] == 200 and o["answer"]["status"] == "completed")
            if ok < len(outcomes):
                errors_seen.extend(str(o.get("problem", o))[:160] for o in outcomes if o["status"] != 200)
            return ok, len(outcomes) - ok

        async def one_query() -> tuple[int, int]:
            async with c.post("/v1/exchange/queries", json=single, headers=headers) as answer:
                content = await answer.read()
            if answer.status != 200:
                errors_seen.append(f"HTTP {answer.status}: {content[:160].decode(errors='replace')}")
                return 0, 1
            return 1, 0

        say(f"warm-up: {WARMUP_BATCHES} batches of {BATCH_SIZE}")
        for _ in range(WARMUP_BATCHES):
            await one_batch()
        errors_seen.clear()
        say(f"batches of {BATCH_SIZE} subjects, {BATCH_CONCURRENCY} in flight, for {SECONDS:.0f} s")
        b_lat, b_ok, b_err, b_s = await closed_loop(one_batch, BATCH_CONCURRENCY, SECONDS)
        say(f"  {b_ok / b_s:.0f} subjects/s, {b_err} errors; batch p50 {percentile(b_lat, 50):.0f} ms")
        say(f"single sync queries at concurrency {SINGLE_CONCURRENCY} for {SECONDS:.0f} s")
        s_lat, s_ok, s_err, s_s = await closed_loop(one_query, SINGLE_CONCURRENCY, SECONDS)
        say(f"  {s_ok / s_s:.0f} queries/s, {s_err} errors; p50 {percentile(s_lat, 50):.0f} ms")
    return {
        "batch": {
            "batch_size": BATCH_SIZE,
            "batches_in_flight": BATCH_CONCURRENCY,
            "seconds": round(b_s, 1),
            "batches": len(b_lat),
            "subjects_ok": b_ok,
            "errors": b_err,
            "subjects_per_s": round(b_ok / b_s, 1),
            "batch_latency_ms": {"p50": round(percentile(b_lat, 50), 1), "p99": round(percentile(b_lat, 99), 1)},
        },
        "single": {
            "concurrency": SINGLE_CONCURRENCY,
            "seconds": round(s_s, 1),
            "queries_ok": s_ok,
            "errors": s_err,
            "queries_per_s": round(s_ok / s_s, 1),
            "latency_ms": {"p50": round(percentile(s_lat, 50), 1), "p99": round(percentile(s_lat, 99), 1)},
        },
        "error_examples": errors_seen[:5],
    }


async def main() -> int:
    env = infra_env()
    started = dt.datetime.now().astimezone()
    url = await create_database(env["TONGBAN_DATABASE_URL"])
    stack = DistributedStack(database_url=url)
    try:
        say("starting the platform in distributed mode (5 service processes) and seeding the demo")
        creds = await stack.start()
        await lift_rate_limit(creds, stack.admin_password)
        load_before = os.getloadavg()
        figures = await measure(creds)
        load_after = os.getloadavg()
    finally:
        stack.stop_all()
        with contextlib.suppress(Exception):
            await drop_database(url)
    results = {
        "benchmark": "batch",
        "timestamp": started.isoformat(timespec="seconds"),
        "machine": machine(),
        # The machine is shared: the load average says how much else ran beside the benchmark.
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        **figures,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{started:%Y-%m-%d}-batch.json"
    out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n")
    print(f"results written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
