"""Evidence bundle benchmark (issue 10 §6): the latency of ``POST /v1/exchange/evidence`` for a
service item with five government-issued materials, each mapped to its own resource and granted,
through the gateway of the distributed platform (every service its own process), next to a single
query's at the same concurrency on the same run.

    make bench-evidence        # writes bench/results/<date>-evidence.json
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import sys
import time
from typing import Any

import aiohttp
import httpx

from bench.skeleton import RESULTS_DIR, Sample, lift_rate_limit, machine, run_count, say
from services.demo import DemoCredentials
from tests.e2e.client import apply_for, person_token, publish_unconditional_resource, system_token
from tests.stack import DistributedStack, create_database, drop_database, infra_env

MATERIALS = 5
WARMUP = 20
LEVELS = ((1, 200), (4, 200))  # (concurrency, bundles)
REQUEST_TIMEOUT_S = 30.0


async def seed(creds: DemoCredentials) -> str:
    """Five published resources, a service item whose five materials map to them, and the demo
    consumer's grant on each for that item; the item's code, once the exchange serves it."""
    item = f"BENCH-{secrets.token_hex(4).upper()}"
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client:
        codes = [
            await publish_unconditional_resource(client, f"基准材料{n}", "101030", "姓名", 50) for n in range(MATERIALS)
        ]
        civil = await person_token(client, "mzj_admin")
        materials = [
            {"name": f"材料{n}", "source": "government", "resource": code, "items": ["姓名"]}
            for n, code in enumerate(codes)
        ]
        created = await client.post(
            "/v1/registry/service-items", json={"code": item, "name": "基准事项", "materials": materials}, headers=civil
        )
        created.raise_for_status()
        system = await system_token(client, creds)
        for code in codes:
            await apply_for(client, system, creds, code, "姓名", purpose=item, daily_quota=1_000_000)
        body = {"service_item": item, "subject": {"type": "id_card", "value": creds.subject}}
        deadline = time.monotonic() + 60
        while True:  # the service item and the grants reach the exchange as registry events
            answer = await client.post("/v1/exchange/evidence", json=body, headers=system)
            if answer.status_code == 200 and answer.json()["exempt"] == MATERIALS:
                return item
            if time.monotonic() > deadline:
                raise RuntimeError(f"the exchange never served the bundle: {answer.text[:300]}")
            await asyncio.sleep(0.5)


async def measure(creds: DemoCredentials, item: str) -> dict[str, dict[int, Sample]]:
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(creds.gateway, connector=connector, timeout=timeout) as client:
        auth = aiohttp.BasicAuth(creds.client_id, creds.client_secret)
        async with client.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=auth) as token:
            token.raise_for_status()
            headers = {"authorization": f"Bearer {(await token.json())['access_token']}"}
        subject = {"type": "id_card", "value": creds.subject}
        bundle_body = {"service_item": item, "subject": subject}
        query_body = {"resource": creds.resource, "purpose": creds.purpose, "subject": subject}

        async def bundle() -> str | None:
            async with client.post("/v1/exchange/evidence", json=bundle_body, headers=headers) as response:
                content = await response.read()
            if response.status != 200:
                return f"HTTP {response.status}: {content[:160].decode(errors='replace')}"
            if (exempt := json.loads(content)["exempt"]) != MATERIALS:
                return f"exempt {exempt}: not every material was fetched"
            return None

        async def query() -> str | None:
            async with client.post("/v1/exchange/queries", json=query_body, headers=headers) as response:
                content = await response.read()
            return None if response.status == 200 else f"HTTP {response.status}: {content[:160].decode()}"

        say(f"warm-up: {WARMUP} bundles")
        await run_count("warm-up", bundle, WARMUP, 1)
        samples: dict[str, dict[int, Sample]] = {"bundle": {}, "query": {}}
        for concurrency, n in LEVELS:
            for label, op in (("bundle", bundle), ("query", query)):
                say(f"{n} × {label} at concurrency {concurrency}")
                sample = samples[label][concurrency] = await run_count(label, op, n, concurrency)
                say(
                    f"  p50 {sample.p(50):.1f} ms, p99 {sample.p(99):.1f} ms, {sample.rate:.1f}/s, "
                    f"{sample.error_count} errors"
                )
        return samples


async def main() -> int:
    env = infra_env()
    started = dt.datetime.now().astimezone()
    url = await create_database(env["TONGBAN_DATABASE_URL"])
    stack = DistributedStack(database_url=url)
    try:
        say("starting the platform in distributed mode and seeding the demo")
        creds = await stack.start()
        await lift_rate_limit(creds, stack.admin_password)
        item = await seed(creds)
        samples = await measure(creds, item)
    finally:
        stack.stop_all()
        with contextlib.suppress(Exception):
            await drop_database(url)

    print()
    print(f"{'operation':<34}{'conc':>5}{'p50 ms':>9}{'p99 ms':>9}{'per s':>8}{'errors':>7}")
    for label, by_level in samples.items():
        for c, s in by_level.items():
            name = f"evidence bundle ({MATERIALS} materials)" if label == "bundle" else "single query"
            print(f"{name:<34}{c:>5}{s.p(50):>9.1f}{s.p(99):>9.1f}{s.rate:>8.1f}{s.error_count:>7}")
    results: dict[str, Any] = {
        "benchmark": "evidence",
        "timestamp": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_at_end": list(os.getloadavg()),  # the machine is shared: say how busy it was
        "settings": {"materials": MATERIALS, "warmup": WARMUP, "levels": [list(level) for level in LEVELS]},
        "evidence_bundle": {str(c): s.summary() for c, s in samples["bundle"].items()},
        "single_query": {str(c): s.summary() for c, s in samples["query"].items()},
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{started:%Y-%m-%d}-evidence.json"
    out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n")
    print(f"\nresults written to {out}")
    errors = sum(s.error_count for by_level in samples.values() for s in by_level.values())
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
