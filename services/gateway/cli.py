"""Operator commands of the gateway: ``python -m services.gateway keys rotate``.

Rotates the token-signing keys (签名密钥轮换) in the database every replica reads: each running
gateway picks the new ring up within ``TONGBAN_KEY_REFRESH_S``. Needs the gateway's database
(``TONGBAN_DATABASE_URL``) and key-encryption key (``TONGBAN_KEY_ENCRYPTION_KEY``).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Sequence
from pathlib import Path

from services.common.contracts.audit import AuditAction, AuditContext
from services.common.db import create_engine, migrate, session_factory
from services.common.errors import Problem
from services.gateway import audit, keys
from services.gateway.app import key_wrap
from services.gateway.config import GatewaySettings

MIGRATIONS = Path(__file__).parent / "migrations"


def operator_name() -> str:
    """The account running the command (a container may have no name for its user)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m services.gateway", description="Tongban gateway (no command: serve)."
    )
    commands = root.add_subparsers(dest="command", required=True)
    signing = commands.add_parser("keys", help="the token-signing keys")
    actions = signing.add_subparsers(dest="action", required=True)
    actions.add_parser("rotate", help="next key becomes current, current previous; a new next key is made")
    return root


async def rotate(settings: GatewaySettings) -> int:
    wrap = key_wrap(settings)
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        await migrate(engine, "gateway", MIGRATIONS)
        async with session_factory(engine).begin() as session:
            await keys.prepare_ring(session, wrap)  # a fresh database gets its first keys
            try:
                ring = await keys.rotate(session, wrap, settings.token_ttl_s)
            except Problem as problem:
                print(f"not rotated: {problem.detail}", file=sys.stderr)
                return 1
            # Audited like the admin endpoint; the operator is named by the account running the command.
            operator = AuditContext(
                actor=f"cli:{operator_name()}",
                consumer_dept=settings.platform_dept_code,
                resource=ring.current.kid or "",
                purpose="keys.rotate",
            )
            session.add(
                audit.unclaimed_row(audit.event(settings, AuditAction.KEY_ROTATED, operator, outcome=audit.COMPLETED))
            )
    finally:
        await engine.dispose()
    for kid, state in ring.states.items():
        print(f"{state.value:<8} {kid}")
    return 0


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if args.command == "keys" and args.action == "rotate":
        return asyncio.run(rotate(GatewaySettings()))
    return 2  # argparse refuses anything else before this
