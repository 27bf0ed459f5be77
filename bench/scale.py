"""Throughput scaling: exchange queries per second with one and with two exchange replicas.

    python -m bench.scale        (``make bench-scale`` runs it with var/infra.env loaded)

The platform runs in distributed mode (tests/stack.py) on the broker and PostgreSQL of
``make infra-up``, plus a second exchange replica and two more gateways, each with both exchange
replicas as upstreams. Three configurations, each a closed loop of the skeleton benchmark's
queries (bench/skeleton.py: same body, same concurrency, any non-200 an error):

* ``1 exchange``: the first gateway, whose only upstream is exchange A; exchange B is stopped (a
  replica reads every reply, so an idle one would still cost CPU).
* ``2 exchanges``: one gateway in front of exchanges A and B.
* ``2 gateways, 2 exchanges``: the load generator alternates between two such gateways.

The configurations are run in turn, ROUNDS times, so that a change in what the rest of the machine
does (other people's processes share its cores) falls on each of them alike. For each run the load
average and the CPU used by this run's processes and by everything else are recorded. The
scaling factor is the median rate with two exchanges over the median with one.
Results go to bench/results/<YYYY-MM-DD>-scale.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import statistics
import sys
from typing import Any

import aiohttp

from bench.skeleton import (
    REQUEST_TIMEOUT_S,
    RESULTS_DIR,
    THROUGHPUT_CONCURRENCY,
    THROUGHPUT_MAX_REQUESTS,
    Sample,
    base_meter,
    format_cpu,
    kafka_version,
    lift_rate_limit,
    machine,
    run_count,
    run_for,
    say,
)
from tests.stack import ROOT, DistributedStack, create_database, drop_database, free_port, infra_env

SECONDS = 20.0
ROUNDS = 2
WARMUP = 100
CONFIGURATIONS = {
    "1 exchange": ("gateway",),
    "2 exchanges": ("gateway-b",),
    "2 gateways, 2 exchanges": ("gateway-b", "gateway-c"),
}


class ScaleStack(DistributedStack):
    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start_replica(self, name: str) -> None:
        """``exchange-b``, ``gateway-b``…: another process of the service, on a port of its own."""
        kind = name.partition("-")[0]
        self.ports.setdefault(name, free_port())
        extra = {f"TONGBAN_{kind.upper()}_PORT": str(self.ports[name])}
        if kind == "gateway":
            extra["TONGBAN_EXCHANGE_URL"] = f"{self.url('exchange')},{self.url('exchange-b')}"
        self.spawn(name, f"services.{kind}", extra)


async def closed_loop(gateways: list[str], token: str, body: dict[str, Any]) -> Sample:
    """The skeleton's phase B against ``gateways``, taken in turn request by request."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    headers = {"authorization": f"Bearer {token}"}
    sessions = [
        aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=64), timeout=timeout) for url in gateways
    ]
    turn = itertools.cycle(sessions)
    try:

        async def query() -> str | None:
            async with next(turn).post("/v1/exchange/queries", json=body, headers=headers) as response:
                content = await response.read()
            if response.status != 200:
                return f"HTTP {response.status}: {content[:160].decode(errors='replace')}"
            return None

        await run_count("warm-up", query, WARMUP, THROUGHPUT_CONCURRENCY)
        return await run_for("exchange query", query, SECONDS, THROUGHPUT_CONCURRENCY, THROUGHPUT_MAX_REQUESTS)
    finally:
        for session in sessions:
            await session.close()


async def token_of(gateway: str, client_id: str, secret: str) -> str:
    async with aiohttp.ClientSession(gateway) as client:
        auth = aiohttp.BasicAuth(client_id, secret)
        async with client.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=auth) as answer:
            answer.raise_for_status()
            return str((await answer.json())["access_token"])


async def main() -> int:
    env = infra_env()
    started = dt.datetime.now().astimezone()
    say(f"Kafka {kafka_version()}; {machine()['nproc']} CPUs; load average {os.getloadavg()}")
    url = await create_database(env["TONGBAN_DATABASE_URL"])
    stack = ScaleStack(database_url=url)
    runs: list[dict[str, Any]] = []
    try:
        creds = await stack.start()
        for name in ("exchange-b", "gateway-b", "gateway-c"):
            stack.start_replica(name)
        for name in ("exchange-b", "gateway-b", "gateway-c"):
            await stack.wait_ready(name, 180)
        await lift_rate_limit(creds, stack.admin_password)
        token = await token_of(creds.gateway, creds.client_id, creds.client_secret)
        body = {
            "resource": creds.resource,
            "purpose": creds.purpose,
            "subject": {"type": "id_card", "value": creds.subject},
        }
        for round_ in range(1, ROUNDS + 1):
            for label, gateways in CONFIGURATIONS.items():
                exchanges = 1 if label == "1 exchange" else 2
                running = "exchange-b" in stack.processes
                if exchanges == 1 and running:
                    stack.stop("exchange-b")
                elif exchanges == 2 and not running:
                    stack.start_replica("exchange-b")
                    await stack.wait_ready("exchange-b", 180)
                    await asyncio.sleep(5.0)  # its consumers have joined, the gateways' cool-off has passed
                meter = base_meter()
                for name, process in stack.processes.items():
                    meter.pids[f"service {name}"] = [process.pid]
                say(f"round {round_}: {label} (via {', '.join(gateways)}), {SECONDS:.0f} s")
                load_before = os.getloadavg()
                meter.start()
                sample = await closed_loop([stack.url(g) for g in gateways], token, body)
                cpu = meter.stop()
                load_after = os.getloadavg()
                say(
                    f"  {sample.rate:.0f} queries/s, {sample.error_count} errors, p99 {sample.p(99):.0f} ms; "
                    f"load average {load_before[0]:.1f} → {load_after[0]:.1f}"
                )
                say(f"  CPU (% of one core): {format_cpu(cpu)}")
                runs.append(
                    {
                        "round": round_,
                        "configuration": label,
                        "exchange_replicas": exchanges,
                        "gateways": len(gateways),
                        "load_average_before": [round(v, 2) for v in load_before],
                        "load_average_after": [round(v, 2) for v in load_after],
                        "cpu_percent": cpu,
                        **sample.summary(),
                    }
                )
    finally:
        say("stopping the platform")
        stack.stop_all()
        with contextlib.suppress(Exception):
            await drop_database(url)

    medians = {
        label: statistics.median(r["per_second"] for r in runs if r["configuration"] == label)
        for label in CONFIGURATIONS
    }
    factors = {label: round(rate / medians["1 exchange"], 2) for label, rate in medians.items()}
    print()
    for label, rate in medians.items():
        print(f"{label:<26} median {rate:6.1f} queries/s  ×{factors[label]:.2f}")
    results = {
        "benchmark": "scale",
        "timestamp": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "kafka_version": kafka_version(),
        "settings": {
            "seconds": SECONDS,
            "rounds": ROUNDS,
            "warmup": WARMUP,
            "concurrency": THROUGHPUT_CONCURRENCY,
            "configurations": {label: list(g) for label, g in CONFIGURATIONS.items()},
        },
        "median_per_second": medians,
        "scaling_factor_vs_1_exchange": factors,
        "errors": sum(r["errors"] for r in runs),
        "runs": runs,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{started:%Y-%m-%d}-scale.json"
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
