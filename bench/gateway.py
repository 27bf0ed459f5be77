"""Gateway benchmark (issue 9, "Benchmark"): authenticated pass-through against bare uvicorn, and
the token endpoint per client authentication method.

    python -m bench.gateway          (``make bench-gateway`` runs it with var/infra.env loaded)

In one run, on 127.0.0.1 and the PostgreSQL of ``make infra-up``:

1. A trivial upstream (:func:`upstream`, a bare ASGI endpoint) under uvicorn, and the gateway
   (``python -m services.gateway``, memory bus, a fresh database) routing ``/v1/registry/…`` to it.
   Both servers are pinned to CPU 0; this process, the load generator, to CPU 1 (PostgreSQL is
   not pinned: it shares the machine, as it would in production).
2. Peak throughput: a closed loop at concurrency ``PEAK_CONCURRENCY`` for ``PEAK_SECONDS``,
   straight to the upstream ("bare"), then through the gateway with a system's bearer token.
   Target: gateway/bare ≥ 0.5 (Kong keeps 76 % with key-auth and rate limiting).
   Each server's CPU time per request in both phases is recorded too (/proc): what a request
   costs, which the shared machine's load disturbs far less than the rates.
3. Latency at 30 % of the gateway's peak: an open loop at that rate against both; the added p99
   is the gateway's p99 minus bare uvicorn's. Target ≤ 3 ms.
4. Token endpoint: a closed loop of client_credentials grants with client_secret_basic (argon2id)
   and with private_key_jwt (ES256 assertions, each with its own jti, signed before the clock starts).

The per-system rate limit is set far above what the run reaches, so that every proxied request
is counted but none is refused: each replica takes leases of the PostgreSQL token bucket (one
statement per lease of up to TONGBAN_RATE_LIMIT_LEASE_MAX tokens, ratelimit.py) and spends them in
memory. Results go to bench/results/<YYYY-MM-DD>-gateway.json.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from joserfc import jwt
from joserfc.jwk import ECKey
from prometheus_client import CollectorRegistry

from services.common.db import create_engine
from services.common.keywrap import new_kek
from services.gateway.config import GatewaySettings
from services.gateway.ratelimit import Bucket, RateLimiter
from tests.factories import DepartmentCreateFactory
from tests.stack import ROOT, create_database, drop_database, free_port, infra_env

RESULTS_DIR = ROOT / "bench" / "results"
SERVER_CPU = 0
LOADGEN_CPU = 1
PEAK_CONCURRENCY = 32
PEAK_SECONDS = 10.0
LATENCY_SECONDS = 10.0
LOAD_FRACTION = 0.3
TOKEN_CONCURRENCY = 8
TOKEN_SECONDS = 8.0
WARMUP_REQUESTS = 500
TARGET_RATIO = 0.5
TARGET_ADDED_P99_MS = 3.0
ADMIN_PASSWORD = "Bench-Gateway-2026"
PATH = "/v1/registry/ping"
ANSWER = b'{"ok":true}'

_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[bench +{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


async def upstream(
    scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
) -> None:
    """The trivial endpoint both sides serve: a small JSON answer, nothing else."""
    if scope["type"] != "http":
        return
    # With its length, as a FastAPI endpoint answers (the gateway streams answers of unknown length).
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def closed_loop(request: Callable[[], Awaitable[int]], concurrency: int, seconds: float) -> dict[str, Any]:
    """As many requests as ``concurrency`` workers get answered in ``seconds``; non-200s are errors."""
    done = errors = 0
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done, errors
        while time.monotonic() < deadline:
            status = await request()
            done += 1
            errors += status != 200
            statuses[status] += 1

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - start
    answers = {str(k): v for k, v in sorted(statuses.items())}
    return {
        "requests": done,
        "errors": errors,
        "seconds": round(elapsed, 2),
        "per_s": round(done / elapsed, 1),
        "statuses": answers,
    }


async def open_loop(request: Callable[[], Awaitable[int]], rate: float, seconds: float) -> dict[str, float]:
    """Requests sent at a fixed ``rate`` whatever the answers do (no coordinated omission: each
    latency is counted from the moment its request was due)."""
    latencies: list[float] = []
    errors = 0
    start = time.monotonic()
    total = int(rate * seconds)

    async def one(due: float) -> None:
        nonlocal errors
        status = await request()
        latencies.append(time.monotonic() - due)
        errors += status != 200

    tasks = []
    for i in range(total):
        due = start + i / rate
        if (wait := due - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    ms = [x * 1000 for x in latencies]
    return {
        "rate_per_s": round(rate, 1),
        "requests": total,
        "errors": errors,
        "p50_ms": round(pct(ms, 0.50), 3),
        "p99_ms": round(pct(ms, 0.99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def profiler(pid: int) -> subprocess.Popen[bytes] | None:
    """With TONGBAN_BENCH_PROFILE=1, py-spy (installed by hand; not a dependency) samples the
    gateway during its peak phase into var/bench-gateway.folded (collapsed stacks)."""
    if os.environ.get("TONGBAN_BENCH_PROFILE") != "1":
        return None
    out = ROOT / "var" / "bench-gateway.folded"
    argv = ["py-spy", "record", "--pid", str(pid), "--duration", str(int(PEAK_SECONDS) - 1), "--format", "raw"]
    return subprocess.Popen([*argv, "--rate", "200", "--nonblocking", "-o", str(out)], cwd=ROOT)


# Where the gateway's time goes, by function (share of py-spy samples that include it).
PROFILED = {
    "request handling (uvicorn → route)": "run_asgi (",
    "proxy()": "proxy (",
    "rate limit check (lease, PostgreSQL token bucket)": "check_api (",
    "asyncpg round trips": "Connection.fetch (",
    "upstream send (aiohttp)": "Upstreams.send (",
    "token verification": "TokenVerifier.verify (",
}


def profile_shares(folded: Path) -> dict[str, float]:
    total, counts = 0, dict.fromkeys(PROFILED, 0)
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        total += int(n)
        for name, marker in PROFILED.items():
            counts[name] += int(n) if marker in stack else 0
    return {name: round(100 * count / max(total, 1), 1) for name, count in counts.items()} | {"samples": total}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux ``/proc/<pid>/stat``, fields 14-15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_per_request(
    pids: dict[str, int], loop: Callable[[], Awaitable[dict[str, Any]]]
) -> tuple[dict[str, Any], dict[str, float]]:
    """``loop``'s figures, and the CPU milliseconds each process of ``pids`` spent per request
    answered in it: what a request costs, whatever share of the CPU the shared machine left us."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    figures = await loop()
    used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    return figures, {name: round(1000 * spent / max(figures["requests"], 1), 4) for name, spent in used.items()}


def pinned(cpu: int, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(ROOT / "var" / "log" / f"bench-{argv[-1].replace('/', '_')}.log", "wb")  # noqa: SIM115 - lives with the process
    return subprocess.Popen(["taskset", "-c", str(cpu), *argv], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


async def wait_up(http: aiohttp.ClientSession, url: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            async with http.get(url) as response:
                if response.status < 500:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up")
        await asyncio.sleep(0.2)


async def call(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    async with http.request(method, url, **kwargs) as response:
        body: dict[str, Any] = await response.json(content_type=None)
        if response.status >= 300:
            raise RuntimeError(f"{method} {url}: {response.status} {body}")
        return body


async def run() -> dict[str, Any]:
    os.sched_setaffinity(0, {LOADGEN_CPU})
    env = {**os.environ, **infra_env()}
    database = await create_database(env["TONGBAN_DATABASE_URL"])
    up_port, gw_port = free_port(), free_port()
    gateway_url, bare_url = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{up_port}"
    gw_env = {
        **env,
        "TONGBAN_DATABASE_URL": database,
        "TONGBAN_BUS": "memory",
        "TONGBAN_GATEWAY_PORT": str(gw_port),
        "TONGBAN_GATEWAY_PUBLIC_URL": gateway_url,
        "TONGBAN_REGISTRY_URL": bare_url,
        "TONGBAN_KEY_ENCRYPTION_KEY": new_kek(),
        "TONGBAN_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "TONGBAN_RATE_LIMIT_PER_S": "1000000",
        "TONGBAN_RATE_LIMIT_BURST": "10000000",
        "TONGBAN_TOKEN_RATE_LIMIT_PER_S": "1000000",
        "TONGBAN_TOKEN_RATE_LIMIT_BURST": "10000000",
        "TONGBAN_SOURCE_RATE_LIMIT_PER_S": "1000000",
        "TONGBAN_SOURCE_RATE_LIMIT_BURST": "10000000",
        "TONGBAN_LOG_LEVEL": "WARNING",
    }
    uvicorn = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(up_port)]
    uvicorn += [
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        "bench.gateway:upstream",
    ]
    processes = [
        pinned(SERVER_CPU, uvicorn, env),
        pinned(SERVER_CPU, [sys.executable, "-m", "services.gateway"], gw_env),
    ]
    connector = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            await wait_up(http, bare_url + PATH)
            await wait_up(http, gateway_url + "/healthz")
            return await measure(http, gateway_url, bare_url, processes[0].pid, processes[1].pid, database)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)
        await drop_database(database)


async def register(http: aiohttp.ClientSession, gateway_url: str) -> tuple[str, str, str, ECKey]:
    """A department, a client_secret_basic system and a private_key_jwt system (with its key)."""
    login = await call(
        http, "POST", f"{gateway_url}/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    admin = {"authorization": f"Bearer {login['access_token']}"}
    department = DepartmentCreateFactory.build().model_dump(mode="json")
    code = department["code"]
    await call(http, "POST", f"{gateway_url}/v1/departments", json=department, headers=admin)
    basic = await call(
        http,
        "POST",
        f"{gateway_url}/v1/departments/{code}/systems",
        json={"name": "压测系统", "roles": ["consumer"]},
        headers=admin,
    )
    key = ECKey.generate_key("P-256", parameters={"kid": "bench-1"}, private=True)
    pkjwt = await call(
        http,
        "POST",
        f"{gateway_url}/v1/departments/{code}/systems",
        json={
            "name": "压测系统二",
            "roles": ["consumer"],
            "auth_method": "private_key_jwt",
            "jwks": {"keys": [key.as_dict(private=False)]},
        },
        headers=admin,
    )
    return basic["client_id"], basic["client_secret"], pkjwt["client_id"], key


async def rate_limit_round_trip(database: str, rate: float) -> dict[str, float]:
    """One token-bucket statement (RateLimiter.take), issued from here at the latency phase's rate:
    what a proxied request that takes a new lease waits for (most spend a lease and wait for none)."""
    engine = create_engine(database)
    limiter = RateLimiter(engine, GatewaySettings(database_url=database), CollectorRegistry())
    bucket = Bucket("api", "api:bench-round-trip", 1e6, 10**7)

    async def take() -> int:
        await limiter.take([bucket])
        return 200

    try:
        return await open_loop(take, rate, LATENCY_SECONDS / 2)
    finally:
        await engine.dispose()


async def measure(
    http: aiohttp.ClientSession, gateway_url: str, bare_url: str, upstream_pid: int, gateway_pid: int, database: str
) -> dict[str, Any]:
    basic_id, basic_secret, jwt_id, key = await register(http, gateway_url)
    basic_auth = "Basic " + base64.b64encode(f"{basic_id}:{basic_secret}".encode()).decode()
    form_headers = {"content-type": "application/x-www-form-urlencoded"}
    token = await call(
        http,
        "POST",
        f"{gateway_url}/oauth2/token",
        data="grant_type=client_credentials",
        headers={**form_headers, "authorization": basic_auth},
    )
    bearer = {"authorization": f"Bearer {token['access_token']}"}

    async def get(url: str, headers: dict[str, str]) -> int:
        try:
            async with http.get(url, headers=headers) as response:
                await response.read()
                return response.status
        except aiohttp.ClientError:
            return 0

    async def bare() -> int:
        return await get(bare_url + PATH, {})

    async def through() -> int:
        return await get(gateway_url + PATH, bearer)

    for op in (bare, through):  # warm-up: connections, the verifier's cache, the JIT-less caches
        for _ in range(WARMUP_REQUESTS // 10):
            await asyncio.gather(*(op() for _ in range(10)))
    say("peak throughput: bare uvicorn")
    pids = {"upstream": upstream_pid, "gateway": gateway_pid}
    peak_bare, cpu_bare = await cpu_per_request(pids, lambda: closed_loop(bare, PEAK_CONCURRENCY, PEAK_SECONDS))
    say(f"  {peak_bare} CPU ms per request {cpu_bare}")
    say("peak throughput: through the gateway")
    profile = profiler(gateway_pid)
    peak_gw, cpu_gw = await cpu_per_request(pids, lambda: closed_loop(through, PEAK_CONCURRENCY, PEAK_SECONDS))
    shares = None
    if profile is not None:
        await asyncio.to_thread(profile.wait)
        shares = profile_shares(ROOT / "var" / "bench-gateway.folded")
    say(f"  {peak_gw} CPU ms per request {cpu_gw}")
    rate = peak_gw["per_s"] * LOAD_FRACTION
    say(f"latency at {rate:.0f}/s (30 % of the gateway's peak)")
    latency_bare = await open_loop(bare, rate, LATENCY_SECONDS)
    latency_gw = await open_loop(through, rate, LATENCY_SECONDS)
    say(f"  bare {latency_bare}\n  gateway {latency_gw}")
    bucket_round_trip = await rate_limit_round_trip(database, rate)
    say(f"  the rate limit's PostgreSQL round trip alone: {bucket_round_trip}")

    refusals: Counter[str] = Counter()  # problem types of the token endpoint's refusals

    async def basic_grant() -> int:
        try:
            async with http.post(
                f"{gateway_url}/oauth2/token",
                data="grant_type=client_credentials",
                headers={**form_headers, "authorization": basic_auth},
            ) as response:
                body = await response.read()
                if response.status != 200:
                    refusals[str(json.loads(body).get("type", response.status))] += 1
                return response.status
        except aiohttp.ClientError:
            return 0

    say("token endpoint: client_secret_basic")
    tokens_basic = await closed_loop(basic_grant, TOKEN_CONCURRENCY, TOKEN_SECONDS) | {"refusals": dict(refusals)}
    say(f"  {tokens_basic}")

    now = int(time.time())
    assertions = [
        jwt.encode(
            {"alg": "ES256", "kid": key.kid},
            {
                "iss": jwt_id,
                "sub": jwt_id,
                "aud": f"{gateway_url}/oauth2/token",
                "iat": now,
                "exp": now + 300,
                "jti": secrets.token_hex(16),
            },
            key,
        )
        for _ in range(8000)
    ]

    async def jwt_grant() -> int:
        if not assertions:
            return 0
        form = (
            "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
            f"&client_assertion={assertions.pop()}"
        )
        try:
            async with http.post(f"{gateway_url}/oauth2/token", data=form, headers=form_headers) as response:
                await response.read()
                return response.status
        except aiohttp.ClientError:
            return 0

    say("token endpoint: private_key_jwt")
    tokens_jwt = await closed_loop(jwt_grant, TOKEN_CONCURRENCY, TOKEN_SECONDS)
    say(f"  {tokens_jwt}")

    ratio = peak_gw["per_s"] / peak_bare["per_s"]
    added = latency_gw["p99_ms"] - latency_bare["p99_ms"]
    return {
        "pass_through": {
            "peak_bare": peak_bare,
            "peak_gateway": peak_gw,
            "throughput_ratio": round(ratio, 3),
            "cpu_ms_per_request_bare": cpu_bare,
            "cpu_ms_per_request_through_gateway": cpu_gw,
            "latency_at_30pct_bare": latency_bare,
            "latency_at_30pct_gateway": latency_gw,
            "added_p99_ms": round(added, 3),
            "rate_limit_round_trip_at_30pct": bucket_round_trip,
        },
        "profile_peak_gateway": shares,
        "token_endpoint": {"client_secret_basic": tokens_basic, "private_key_jwt": tokens_jwt},
        "targets": {
            "throughput_ratio": {"target": f">= {TARGET_RATIO}", "met": ratio >= TARGET_RATIO},
            "added_p99_ms": {"target": f"<= {TARGET_ADDED_P99_MS}", "met": added <= TARGET_ADDED_P99_MS},
        },
    }


def main() -> None:
    # The machine is shared: its load says how far the figures are from a quiet machine's.
    load_before = os.getloadavg()
    figures = asyncio.run(run())
    result = {
        "benchmark": "gateway",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "setup": {
            "servers_cpu": SERVER_CPU,
            "load_generator_cpu": LOADGEN_CPU,
            "peak_concurrency": PEAK_CONCURRENCY,
            "peak_seconds": PEAK_SECONDS,
            "latency_seconds": LATENCY_SECONDS,
            "token_concurrency": TOKEN_CONCURRENCY,
        },
        **figures,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{dt.date.today().isoformat()}-gateway.json"
    out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    say(f"results: {out.relative_to(ROOT)}")
    print(json.dumps(result, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
