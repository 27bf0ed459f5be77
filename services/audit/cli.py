"""Operator commands of the audit service: ``python -m services.audit dead-letters replay``;
``retention run`` (retention.py: archive, verify, then drop months past the policy; it signs the
archive's checkpoint, so it needs ``TONGBAN_KEY_ENCRYPTION_KEY``, as the service does); the
auditor's ``verify <export>`` (export.py, no database); the witness's ``witness keygen|cosign``
(witness.py).

Replay sends dead letters (死信) back to the topic they came from, with their key and headers,
once the cause is fixed; each is marked replayed, so running the command twice sends nothing twice.
A withheld letter (its message is personal data, never kept) is replayed by ``--id`` only: its
message is re-read from the source topic at the recorded partition and offset, checked, and sent
back — while that topic still retains it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx

from services.audit import notes, retention, witness
from services.audit.config import AuditSettings
from services.audit.export import verify_export
from services.audit.service import replay_dead_letters, signing_key
from services.common import keywrap
from services.common.bus import KafkaBus
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
    which.add_argument(
        "--id",
        dest="ids",
        type=int,
        action="append",
        metavar="ID",
        help="a dead letter (repeatable); a withheld one is re-read from its source topic by offset",
    )
    which.add_argument("--all", action="store_true", help="every dead letter not yet replayed, except withheld ones")
    witnessing = commands.add_parser("witness", help="cosign another platform's audit checkpoints (见证)")
    steps = witnessing.add_subparsers(dest="action", required=True)
    keygen = steps.add_parser("keygen", help="make a witness key; prints its verifier key")
    keygen.add_argument("--name", required=True, help="the witness's name, e.g. province.example/audit-witness")
    keygen.add_argument("--key", required=True, type=Path, help="file to write the private key to (new)")
    cosign = steps.add_parser("cosign", help="check the log's latest checkpoint against the last cosigned, cosign it")
    cosign.add_argument("--log", required=True, help="the audit service's base URL")
    cosign.add_argument("--log-key", required=True, help="the log's verifier key (GET /v1/audit/checkpoint/key)")
    cosign.add_argument("--key", required=True, type=Path, help="the witness's private key file")
    cosign.add_argument("--state", required=True, type=Path, help="the witness's state file (made on first use)")
    keeping = commands.add_parser("retention", help="archive and drop months past the retention policy (保留期)")
    runs = keeping.add_subparsers(dest="action", required=True)
    run = runs.add_parser("run", help="archive (signed, verified) then drop each month due, oldest first")
    run.add_argument("--dry-run", action="store_true", help="only list the months due")
    check = commands.add_parser("verify", help="verify an export offline (no database): chain, tree, checkpoint")
    check.add_argument("export", type=Path, help="a file from GET /v1/audit/export")
    check.add_argument("--key", required=True, help="the log's verifier key, as you kept it")
    check.add_argument(
        "--witness", action="append", default=[], metavar="KEY", help="a witness's verifier key that must have cosigned"
    )
    return root


def verify_offline(path: Path, key: str, witnesses: Sequence[str]) -> int:
    """0: the export verifies; 1: it does not (the first bad record is named); 2: unusable input."""
    try:
        log = notes.parse_verifier_key(key, notes.ED25519)
        cosigners = [notes.parse_verifier_key(w, notes.COSIGNATURE_V1) for w in witnesses]
    except notes.BadNote as err:
        print(f"verify: {err}", file=sys.stderr)
        return 2
    try:
        with path.open("rb") as lines:
            report = verify_export(lines, log, cosigners)
    except OSError as err:
        print(f"verify: {err}", file=sys.stderr)
        return 2
    if report["ok"]:
        print(
            f"ok: {report['checked']} record(s) verified against the checkpoint of {report['tree_size']} records "
            f"signed by {log.name}" + "".join(f", cosigned by {w.name}" for w in cosigners),
            flush=True,
        )
        return 0
    where = ""
    if report["first_bad_leaf"] is not None:
        where = f" at leaf {report['first_bad_leaf']}"
    if report["first_bad_event_id"] is not None:
        where += f" (seq {report['first_bad_seq']}, event {report['first_bad_event_id']})"
    print(f"BAD{where}: {report['detail']} — {report['checked']} record(s) verified before", flush=True)
    return 1


# Read from the environment, never from the command line (which other users can see): a bearer
# token of the log's platform that may read consistency proofs (an auditor's).
WITNESS_TOKEN = "TONGBAN_WITNESS_TOKEN"


def witness_keygen(name: str, path: Path) -> int:
    private, verifier = witness.keygen(name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never overwrite a key
    except FileExistsError:
        print(f"{path} exists: a witness key is never overwritten", file=sys.stderr)
        return 2
    with os.fdopen(fd, "w") as out:
        out.write(private + "\n")
    print(verifier, flush=True)
    return 0


async def witness_cosign(log: str, log_key: str, key_text: str, state: Path) -> int:
    token = os.environ.get(WITNESS_TOKEN)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=log, headers=headers, timeout=30) as client:
        try:
            done = await witness.cosign_latest(client, log_key, key_text, state, datetime.now(UTC))
        except witness.SplitView as err:
            print(f"REFUSED (不一致): {err}; nothing was cosigned; state kept in {state}", file=sys.stderr)
            return 1
        except witness.WitnessError as err:
            print(f"witness: {err}", file=sys.stderr)
            return 2
    print(f"cosigned tree size {done.size} (previously {done.previous})", flush=True)
    return 0


async def replay(settings: AuditSettings, ids: Sequence[int] | None) -> int:
    if settings.bus != "kafka":
        print("replay needs Kafka: the embedded mode's in-process bus lives inside its own process", file=sys.stderr)
        return 2
    engine = create_engine(settings.database_url, pool_size=2)
    bus = make_bus(settings, "tongban-audit-replay")
    try:
        await migrate(engine, "audit", MIGRATIONS)
        await bus.start()
        reread = bus.read_at if isinstance(bus, KafkaBus) else None  # always: settings.bus is "kafka"
        done = await replay_dead_letters(
            session_factory(engine), bus, ids, lambda line: print(line, flush=True), reread=reread
        )
    finally:
        await bus.stop()
        await engine.dispose()
    print(f"replayed {done.count} dead letter(s)", flush=True)
    return 1 if done.missing or done.refused else 0


async def retention_run(settings: AuditSettings, dry_run: bool) -> int:
    """0: every month due was archived and dropped (or none was due); 1: a month could not be;
    2: no usable key-encryption key (an archive's checkpoint is signed with the log's key)."""
    try:
        wrap = None if dry_run else keywrap.required(settings.key_encryption_key, "audit service")
    except (RuntimeError, keywrap.KeyWrapError) as err:
        print(f"retention: {err}", file=sys.stderr)
        return 2
    engine = create_engine(settings.database_url, pool_size=2)
    try:
        await migrate(engine, "audit", MIGRATIONS)
        sessions = session_factory(engine)
        signer = None
        if wrap is not None:
            async with sessions.begin() as session:
                signer = await signing_key(session, settings.log_origin, wrap)
        done = await retention.run(
            sessions,
            retention_months=settings.retention_months,
            directory=settings.archive_dir,
            origin=settings.log_origin,
            signer=signer,
            now=datetime.now(UTC),
            dry_run=dry_run,
            say=lambda line: print(line, flush=True),
        )
    except retention.RetentionError as err:
        print(f"retention: {err}", file=sys.stderr)
        return 1
    except keywrap.KeyWrapError as err:
        print(f"retention: {err}", file=sys.stderr)
        return 2
    finally:
        await engine.dispose()
    print(f"archived {sum(a.archive is not None for a in done)} month(s) into {settings.archive_dir}", flush=True)
    return 0


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if args.command == "retention" and args.action == "run":
        return asyncio.run(retention_run(AuditSettings(), args.dry_run))
    if args.command == "dead-letters" and args.action == "replay":
        return asyncio.run(replay(AuditSettings(), None if args.all else args.ids))
    if args.command == "verify":
        return verify_offline(args.export, args.key, args.witness)
    if args.command == "witness" and args.action == "keygen":
        return witness_keygen(args.name, args.key)
    if args.command == "witness" and args.action == "cosign":
        try:
            key_text = args.key.read_text()
        except OSError as err:
            print(f"witness key: {err}", file=sys.stderr)
            return 2
        return asyncio.run(witness_cosign(args.log, args.log_key, key_text, args.state))
    return 2  # argparse refuses anything else before this
