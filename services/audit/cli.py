"""Operator commands of the audit service: ``python -m services.audit dead-letters replay``.

Replay sends dead letters (死信) back to the topic they came from, with their key and headers,
once the cause is fixed; each is marked replayed, so running the command twice sends nothing twice.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from services.audit.config import AuditSettings
from services.audit.service import replay_dead_letters
from services.common.db import create_engine, migrate, session_factory
from services.common.runtime import make_bus

MIGRATIONS = Path(__file__).parent / "migrations"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m services.audit", description="Tongban audit (no command: serve).")
    commands = root.add_subparsers(dest="command", required=True)
    letters = commands.add_parser("dead-letters", help="the platform's dead letters")
    actions = letters.add_subparsers(dest="action", required=True)
    replay = actions.add_parser("replay", help="send dead letters back to their source topic")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="ids", type=int, action="append", metavar="ID", help="a dead letter (repeatable)")
    which.add_argument("--all", action="store_true", help="every dead letter not yet replayed")
    return root


async def replay(settings: AuditSettings, ids: Sequence[int] | None) -> int:
    if settings.bus != "kafka":
        print("replay needs Kafka: the embedded mode's in-process bus lives inside its own process", file=sys.stderr)
        return 2
    engine = create_engine(settings.database_url, pool_size=2)
    bus = make_bus(settings, "tongban-audit-replay")
    try:
        await migrate(engine, "audit", MIGRATIONS)
        await bus.start()
        replayed, missing = await replay_dead_letters(
            session_factory(engine), bus, ids, lambda line: print(line, flush=True)
        )
    finally:
        await bus.stop()
        await engine.dispose()
    print(f"replayed {replayed} dead letter(s)", flush=True)
    return 1 if missing else 0


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if args.command == "dead-letters" and args.action == "replay":
        return asyncio.run(replay(AuditSettings(), None if args.all else args.ids))
    return 2  # argparse refuses anything else before this
