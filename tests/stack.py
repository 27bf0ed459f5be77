"""Start Tongban for tests and the benchmark, on the real PostgreSQL and Kafka of `make infra-up`.

Each stack gets its own database and its own topic prefix, so runs never see each other's data.
``DistributedStack`` runs every service as its own process (``python -m services.<name>``);
``EmbeddedStack`` runs ``python -m services.embedded`` (one process, in-process bus).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import asyncpg
import httpx

from services import demo
from services.common.keywrap import new_kek

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("gateway", "registry", "exchange", "audit", "connector")
# Processes of the platform without a schema of their own (not migrated, not in the tiers).
PAGES = ("console",)
INFRA = ROOT / "deploy" / "local" / "infra.py"


class InfraMissing(RuntimeError):
    pass


def infra_env() -> dict[str, str]:
    """The addresses `make infra-up` wrote. Missing infrastructure is an error, never a skip."""
    url, bootstrap = os.environ.get("TONGBAN_DATABASE_URL"), os.environ.get("TONGBAN_KAFKA_BOOTSTRAP")
    if not (url and bootstrap):
        raise InfraMissing("PostgreSQL and Kafka are not configured: run the tests with `make test` (it runs infra-up)")
    return {"TONGBAN_DATABASE_URL": url, "TONGBAN_KAFKA_BOOTSTRAP": bootstrap}


def free_port() -> int:
    """A free port below the kernel's ephemeral range (as deploy/local/infra.py picks the broker's):
    a service restarted by a test keeps its port, and no client's ephemeral source port can have
    taken it meanwhile."""
    for _ in range(1000):
        port = random.randrange(20000, 32768)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's listener does
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32767")


def asyncpg_dsn(url: str) -> tuple[str, str]:
    """(server dsn for asyncpg, database name) from our SQLAlchemy URL."""
    base, _, query = url.partition("?")
    dsn = base.replace("postgresql+asyncpg://", "postgresql://")
    return dsn + ("?" + query if query else ""), dsn.rsplit("/", 1)[1]


# Every database the tests create is named ``tongban_<pid>_<tag>`` after the process that created
# it, so a process can drop exactly its own at the end, and a later run can drop what a killed one
# left behind (its process is gone) without touching a run that is still going.
TEST_DATABASE = re.compile(r"tongban_(\d+)_[a-z0-9]+")
# Names of the form create_database() used before it tagged them with the pid.
LEGACY_TEST_DATABASE = re.compile(r"tongban_[0-9a-f]{8}")
MAINTENANCE_DATABASE = "postgres"


def database_url(url: str, name: str) -> str:
    """``url`` (a SQLAlchemy URL) pointed at database ``name`` on the same server."""
    base, _, query = url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


async def create_database(url: str, tag: str | None = None) -> str:
    """A fresh database on the same server, ``tongban_<pid>_<tag>`` (tag: random unless given);
    returns its SQLAlchemy URL. An existing database of that name (a crashed run's) is replaced."""
    dsn, _ = asyncpg_dsn(url)
    name = f"tongban_{os.getpid()}_{tag or secrets.token_hex(4)}"
    assert TEST_DATABASE.fullmatch(name), name
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url(url, name)


async def drop_database(url: str) -> None:
    """Drop the database of ``url``, closing any connection still open to it (stop its users first)."""
    _, name = asyncpg_dsn(url)
    # From the maintenance database: a session cannot drop the database it is connected to.
    await drop_databases(asyncpg_dsn(database_url(url, MAINTENANCE_DATABASE))[0], lambda candidate: candidate == name)


async def drop_test_databases(url: str, *, abandoned: bool = False) -> list[str]:
    """Drop this process's test databases on the server of ``url``, or with ``abandoned=True``
    those whose creating process is gone (and legacy-named ones). Returns the names dropped."""
    pid = os.getpid()

    def chosen(name: str) -> bool:
        if abandoned and LEGACY_TEST_DATABASE.fullmatch(name):
            return True
        match = TEST_DATABASE.fullmatch(name)
        if match is None:
            return False
        owner = int(match.group(1))
        return not process_alive(owner) if abandoned else owner == pid

    return await drop_databases(asyncpg_dsn(database_url(url, MAINTENANCE_DATABASE))[0], chosen)


async def drop_databases(dsn: str, chosen: Callable[[str], bool]) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        names = [
            r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'tongban%'")
        ]
        dropped = [name for name in names if chosen(name)]
        for name in dropped:
            # FORCE: a stopped service's pool may not have closed its connections yet.
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
    return dropped


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@dataclass
class Stack:
    database_url: str
    prefix: str = field(default_factory=lambda: f"t{secrets.token_hex(3)}.")
    ports: dict[str, int] = field(default_factory=lambda: {s: free_port() for s in (*SERVICES, *PAGES)})
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: Path = ROOT / "var" / "log"
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    key_encryption_key: str = field(default_factory=new_kek)

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")}
        env.update(infra_env())
        env.update(
            {
                "TONGBAN_DATABASE_URL": self.database_url,
                "TONGBAN_TOPIC_PREFIX": self.prefix,
                "TONGBAN_GATEWAY_URL": self.gateway,
                "TONGBAN_GATEWAY_PUBLIC_URL": self.gateway,  # the token endpoint a client assertion names
                "TONGBAN_BOOTSTRAP_ADMIN_PASSWORD": self.admin_password,
                "TONGBAN_KEY_ENCRYPTION_KEY": self.key_encryption_key,
                "TONGBAN_LOG_LEVEL": "INFO",
                **{f"TONGBAN_{s.upper()}_PORT": str(p) for s, p in self.ports.items()},
                **{
                    f"TONGBAN_{s.upper()}_URL": f"http://127.0.0.1:{p}" for s, p in self.ports.items() if s != "gateway"
                },
            }
        )
        return env

    def spawn(self, name: str, module: str, extra: dict[str, str] | None = None) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{self.prefix}{name}.log").open("ab") as log:  # the child keeps its own copy
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", module],
                cwd=ROOT,
                env={**self.env(), **(extra or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self, name: str, kill: bool = False) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    async def wait_ready(self, name: str, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.ports[name]}/readyz"
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                process = self.processes.get(name)
                if process is not None and process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {process.returncode}; see {self.logs}/{self.prefix}{name}.log"
                    )
                try:
                    if (await client.get(url)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError(f"{name} not ready after {timeout_s}s; see {self.logs}/{self.prefix}{name}.log")


class DistributedStack(Stack):
    def start_service(self, name: str) -> None:
        self.spawn(name, f"services.{name}")

    async def start(self) -> demo.DemoCredentials:
        self.start_service("gateway")
        await self.wait_ready("gateway")
        for name in SERVICES[1:]:
            self.start_service(name)
        for name in SERVICES[1:]:
            await self.wait_ready(name)
        for name in PAGES:
            self.start_service(name)
            await self.wait_ready(name)
        creds = await demo.seed(self.gateway, self.admin_password, f"http://127.0.0.1:{self.ports['connector']}")
        await demo.wait_until_queryable(creds)
        return creds


class EmbeddedStack(Stack):
    async def start(self) -> demo.DemoCredentials:
        credentials = self.logs.parent / f"{self.prefix}credentials.json"
        self.spawn("embedded", "services.embedded", {"TONGBAN_DEMO_CREDENTIALS": str(credentials)})
        self.processes["gateway"] = self.processes["embedded"]
        deadline = time.monotonic() + 90
        while not credentials.exists() or not json.loads(credentials.read_text() or "{}"):
            if self.processes["embedded"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded mode did not start; see {self.logs}/{self.prefix}embedded.log")
            await asyncio.sleep(0.3)
        creds = demo.load(credentials)
        assert creds is not None
        await demo.wait_until_queryable(creds)
        return creds


def load_infra() -> ModuleType:
    """`deploy/local/infra.py` as a module, for tests that start a broker of their own."""
    spec = importlib.util.spec_from_file_location("infra", INFRA)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def infra(*args: str) -> None:
    """Run `deploy/local/infra.py` (e.g. ``kafka-stop --kill``), as an operator would."""
    subprocess.run([sys.executable, str(INFRA), *args], check=True, timeout=180)
