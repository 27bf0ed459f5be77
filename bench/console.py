"""Console benchmark (`make bench-console`, issue 12 "Benchmark"): the server-side render time of
the console's pages with 100,000 catalogue entries and 1,000,000 audit events.

    python -m bench.console        (``make bench-console``, and part of ``make bench``)

1. A fresh database of the ``make infra-up`` PostgreSQL, migrated like a deployment, gets the
   registry benchmark's 100,000 entries (``bench.registry.seed``, by COPY) and the audit
   benchmark's synthetic records (``bench.audit.load_records``, generated inside PostgreSQL; their
   seq and leaf numbers far above the platform's own, which the running audit service appends).
2. The platform starts on it in distributed mode (``tests/stack.py``, the console included) and
   the demo is seeded; the demo consumer system files ``APPLICATIONS`` applications with 市公安局,
   so its approver's queue has pages to show.
3. Each page is asked for, one at a time, on the console's own port as a logged-in person (the
   session cookie, as a browser sends it): the time from request to the last byte of the page,
   which is the console's work — its API call through the gateway as the person, and the
   template — plus a localhost round trip. Interleaved with each page, the bare API call the page
   makes (the same path and query, through the gateway, with the person's token): the ratio
   page / API is the console's own share.
   - the catalogue list (``/console/catalogue``: 50 entries) and a catalogue search (``?q=``);
   - the approver's queue (``/console/applications``: 50 pending applications of 市公安局);
   - the auditor's search (``/console/audit``: one consumer on one day, and the last 24 hours;
     ``GET /v1/audit/events``, 50 a page).

Target: page p95 ≤ 100 ms for each. Results go to bench/results/<YYYY-MM-DD>-console.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import asyncpg  # type: ignore[import-untyped]
import httpx

from bench import audit as audit_bench
from bench import registry as registry_bench
from bench.skeleton import RESULTS_DIR, Sample, lift_rate_limit, machine, say
from services.audit.app import MIGRATIONS as AUDIT_MIGRATIONS
from services.common.db import create_engine, migrate
from services.console.session import COOKIE
from services.demo import POLICE, DemoCredentials
from tests.e2e.client import system_token
from tests.e2e.console.support import Person, new_person
from tests.stack import ROOT, DistributedStack, asyncpg_dsn, create_database, drop_database, infra_env

ENTRIES = registry_bench.ENTRIES  # 100,000
AUDIT_EVENTS = int(os.environ.get("BENCH_CONSOLE_AUDIT_EVENTS", "1000000"))
AUDIT_FIRST_SEQ = 10**9  # the synthetic records' numbers: far above the audit service's own (and an int4 for the SQL)
APPLICATIONS = 120
REQUESTS = int(os.environ.get("BENCH_CONSOLE_REQUESTS", "200"))  # per page (and as many bare API calls)
WARMUP = 20
TARGET_P95_MS = 100.0
SEED = registry_bench.SEED
ITEMS = ("姓名", "性别", "出生日期", "户籍地址")


class ConsoleVisitor:
    """A person logged in to the console, asking for pages on the console's own port with the
    session cookie a browser would send (it is ``Secure``, so httpx over http would not)."""

    def __init__(self, console: str) -> None:
        self.client = httpx.AsyncClient(base_url=console, timeout=30)
        self.cookie = ""

    def keep(self, answer: httpx.Response) -> None:
        for header in answer.headers.get_list("set-cookie"):
            if header.startswith(f"{COOKIE}="):
                self.cookie = header.split(";", 1)[0]

    async def get(self, path: str) -> httpx.Response:
        answer = await self.client.get(path, headers={"cookie": self.cookie})
        self.keep(answer)  # the renewed cookie: its idle time restarts, as in a browser
        return answer

    async def log_in(self, person: Person) -> None:
        form = await self.get("/console/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert csrf, "the login page has its CSRF field"
        fields = {"csrf_token": csrf.group(1), "username": person.username, "password": person.password}
        answer = await self.client.post("/console/login", data=fields, headers={"cookie": self.cookie})
        self.keep(answer)
        assert answer.status_code == 303 and answer.headers["location"] == "/console/catalogue", answer.text[:300]

    async def close(self) -> None:
        await self.client.aclose()


async def api_token(gateway: str, person: Person) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as api:
        login = await api.post("/v1/auth/login", json={"username": person.username, "password": person.password})
        login.raise_for_status()
        return {"authorization": f"Bearer {login.json()['access_token']}"}


# One request of a target: the console page's path and the API call it makes (path and query,
# exactly as the page sends them).
Ask = tuple[str, str, dict[str, str]]


async def timed(sample: Sample, call: Awaitable[httpx.Response], expect: str) -> None:
    """One request timed to its last byte; a refusal, a page without ``expect`` or one showing the
    API's refusal is an error (not timed)."""
    t0 = time.perf_counter()
    answer = await call
    took = (time.perf_counter() - t0) * 1000
    # A page showing the API's refusal (role="alert") answers 200 too: an error all the same.
    if answer.status_code != 200 or expect not in answer.text or 'role="alert"' in answer.text:
        sample.errors[str(answer.status_code)] += 1
        if len(sample.error_examples) < 3:
            sample.error_examples.append(answer.text[:300])
        return
    sample.latencies_ms.append(took)


async def measure(
    label: str, visitor: ConsoleVisitor, api: httpx.AsyncClient, ask: Callable[[], Ask], page_expects: str
) -> dict[str, Any]:
    """``REQUESTS`` pages, each followed by the bare API call it makes (the same minutes, the same
    load on the machine), after ``WARMUP`` of each."""
    page, bare = Sample(f"{label}: page", 1), Sample(f"{label}: API call", 1)
    for n in range(WARMUP + REQUESTS):
        if n == WARMUP:
            page, bare = Sample(page.label, 1), Sample(bare.label, 1)
        page_path, api_path, params = ask()
        await timed(page, visitor.get(page_path), page_expects)
        await timed(bare, api.get(api_path, params=params), '"items"')
    result: dict[str, Any] = {"api": bare.summary() | {"p95_ms": round(bare.p(95), 3)}}
    result["page"] = page.summary() | {"p95_ms": round(page.p(95), 3)}
    result["ratio_page_to_api"] = {"p50": round(page.p(50) / bare.p(50), 2), "p95": round(page.p(95) / bare.p(95), 2)}
    # What the console adds to its API call: the template, the session, one more local hop.
    result["console_own_ms_p50"] = round(page.p(50) - bare.p(50), 1)
    result["met"] = page.error_count == 0 and page.p(95) <= TARGET_P95_MS
    line = f"{label:<30} API p50 {bare.p(50):6.1f} p95 {bare.p(95):6.1f} ms"
    line += (
        f" · page p50 {page.p(50):6.1f} p95 {page.p(95):6.1f} ms · page/API p95 ×{result['ratio_page_to_api']['p95']}"
    )
    say(line + (f" · {page.error_count + bare.error_count} errors" if page.error_count + bare.error_count else ""))
    return result


def catalogue_list() -> Ask:
    return "/console/catalogue", "/v1/registry/resources", {"limit": "50"}


def catalogue_search(rng: random.Random) -> Callable[[], Ask]:
    def ask() -> Ask:
        q = rng.choice(registry_bench.QUERIES)
        return f"/console/catalogue?{urlencode({'q': q})}", "/v1/registry/resources", {"limit": "50", "q": q}

    return ask


def application_queue(department: str) -> Callable[[], Ask]:
    def ask() -> Ask:
        params = {"status": "pending", "provider": department, "limit": "50"}
        return "/console/applications", "/v1/registry/applications", params

    return ask


# The auditor's search page (services/console/api/audit.py: search) and, with the same filters, the
# API call it makes.
AUDIT_PAGE = "/console/audit"
AUDIT_PAGE_EXPECTS = "<table"
AUDIT_LIMIT = "50"


def audit_search(rng: random.Random, now: dt.datetime, kind: str) -> Callable[[], Ask]:
    """Searches as an auditor makes them: one consumer on one day (of the records' year), or the
    whole platform over the last 24 hours (the first page, newest first)."""

    def ask() -> Ask:
        if kind == "consumer_day":
            day = (now - dt.timedelta(days=rng.randrange(1, audit_bench.DAYS))).date()
            consumer = f"11110100000{rng.randrange(audit_bench.CONSUMERS):06d}X"
            filters = {
                "consumer": consumer,
                "from": f"{day.isoformat()}T00:00:00+08:00",
                "to": f"{(day + dt.timedelta(days=1)).isoformat()}T00:00:00+08:00",
            }
        else:
            filters = {"from": (now - dt.timedelta(days=1)).isoformat(timespec="seconds"), "to": now.isoformat()}
        return (
            f"{AUDIT_PAGE}?{urlencode(filters)}",
            "/v1/audit/events",
            filters | {"limit": AUDIT_LIMIT},
        )

    return ask


async def seed_database(url: str, rng: random.Random) -> dict[str, Any]:
    """The registry's and the audit service's schemas, migrated as the services do at start, with
    the two benchmarks' seeds: 100,000 entries and ``AUDIT_EVENTS`` records."""
    engine = create_engine(url, pool_size=1)
    try:
        await migrate(engine, "registry", ROOT / "services" / "registry" / "migrations")
        await migrate(engine, "audit", AUDIT_MIGRATIONS)
    finally:
        await engine.dispose()
    say(f"seeding {ENTRIES:,} catalogue entries")
    entries = await registry_bench.seed(url, rng)
    say(f"seeded: {entries}; generating {AUDIT_EVENTS:,} audit records")
    began = time.perf_counter()
    conn = await asyncpg.connect(asyncpg_dsn(url)[0])
    try:
        await audit_bench.load_records(conn, AUDIT_EVENTS, dt.datetime.now(dt.UTC), AUDIT_FIRST_SEQ)
    finally:
        await conn.close()
    return {"entries": entries, "audit_records": AUDIT_EVENTS, "audit_load_s": round(time.perf_counter() - began, 1)}


async def file_applications(creds: DemoCredentials) -> None:
    """The demo consumer system applies ``APPLICATIONS`` times to 市公安局's demo entry (conditional:
    each waits for an approver)."""
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as api:
        token = await system_token(api, creds)
        for n in range(APPLICATIONS):
            body = {
                "resource": creds.resource,
                "client_id": creds.client_id,
                "items": list(ITEMS[: 1 + n % len(ITEMS)]),
                "purpose": {"service_item": creds.purpose},
            }
            filed = await api.post("/v1/registry/applications", json=body, headers=token)
            assert filed.status_code == 201 and filed.json()["status"] == "pending", filed.text


async def run(stack: DistributedStack, creds: DemoCredentials, rng: random.Random) -> dict[str, Any]:
    await lift_rate_limit(creds, stack.admin_password)
    say(f"filing {APPLICATIONS} applications with 市公安局")
    await file_applications(creds)
    approver = await new_person(stack, creds, POLICE["code"], "approver")
    auditor = await new_person(stack, creds, POLICE["code"], "auditor")
    console = f"http://127.0.0.1:{stack.ports['console']}"
    now = dt.datetime.now(dt.UTC)
    results: dict[str, Any] = {}
    # Each person's phases stay well inside the token's lifetime (15 minutes by default).
    for person, targets in (
        (
            approver,
            {
                "catalogue_list": (lambda: catalogue_list(), "<table"),
                "catalogue_search": (catalogue_search(rng), 'id="results"'),  # a query may find nothing
                "application_queue": (application_queue(POLICE["code"]), "<table"),
            },
        ),
        (
            auditor,
            {
                f"audit_search_{kind}": (audit_search(rng, now, kind), AUDIT_PAGE_EXPECTS)
                for kind in ("consumer_day", "last_24h")
            },
        ),
    ):
        visitor = ConsoleVisitor(console)
        try:
            await visitor.log_in(person)
            async with httpx.AsyncClient(
                base_url=creds.gateway, timeout=30, headers=await api_token(creds.gateway, person)
            ) as api:
                for label, (ask, expects) in targets.items():
                    results[label] = await measure(label, visitor, api, ask, expects)
        finally:
            await visitor.close()
    return results


async def main() -> int:
    started = dt.datetime.now().astimezone()
    rng = random.Random(SEED)
    url = await create_database(infra_env()["TONGBAN_DATABASE_URL"], tag="benchcon")
    stack = DistributedStack(database_url=url)
    try:
        seeded = await seed_database(url, rng)
        say("starting the platform in distributed mode (the console included) and seeding the demo")
        t = time.monotonic()
        creds = await stack.start()
        say(f"platform up in {time.monotonic() - t:.0f} s; logs var/log/{stack.prefix}*.log")
        measured = await run(stack, creds, rng)
    finally:
        say("stopping the platform")
        stack.stop_all()
        with contextlib.suppress(Exception):
            await drop_database(url)

    pages = {k: v for k, v in measured.items() if v.get("page")}
    worst = max(v["page"]["p95_ms"] for v in pages.values())
    met = all(v["met"] for v in pages.values())
    print(
        f"\npage p95, worst of {len(pages)}: {worst:.1f} ms (target ≤ {TARGET_P95_MS:.0f} ms): {'MET' if met else 'NOT MET'}"
    )
    results = {
        "benchmark": "console",
        "timestamp": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        # other work on the machine during the run (1, 5, 15 min): the figures scale with it
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "method": "each page on the console's own port as a logged-in person, one at a time, timed to its "
        "last byte (the console's API call through the gateway and its template, plus a localhost round trip); "
        "each followed by the bare API call the page makes, through the gateway with the person's token",
        "settings": {
            "entries": ENTRIES,
            "audit_records": AUDIT_EVENTS,
            "pending_applications_filed": APPLICATIONS,
            "requests_per_target": REQUESTS,
            "warmup": WARMUP,
            "page_size": 50,
            "seed": SEED,
        },
        "seed": seeded,
        "targets_measured": measured,
        "targets": {"page_p95_ms_max": TARGET_P95_MS, "page_p95_ms_worst": round(worst, 3), "met": met},
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{started:%Y-%m-%d}-console.json"
    out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n")
    print(f"results written to {out.relative_to(ROOT)}")
    return 0 if all(v["page"] is None or v["page"]["errors"] == 0 for v in measured.values()) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
