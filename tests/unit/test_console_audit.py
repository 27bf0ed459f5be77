"""The auditor's pages' own reading of a checkpoint (the browser tests' stack has no witness):
the log's signature and each witness's cosignature with its time, from a real signed note."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit import notes
from services.console.api.audit import DENIAL_REASONS, read_checkpoint
from services.exchange.problems import DENIALS

ZONE = ZoneInfo("Asia/Shanghai")


def test_a_checkpoint_with_two_witnesses_is_read_with_their_times() -> None:
    log = Ed25519PrivateKey.generate()
    note = notes.sign_checkpoint(log, "tongban.example/audit", "tongban.example/audit", 42, b"\x01" * 32)
    body, _ = notes.split_note(note)
    at = int(datetime(2026, 3, 2, 2, 0, 5, tzinfo=UTC).timestamp())
    first = notes.cosign(Ed25519PrivateKey.generate(), "witness.one", body, at)
    second = notes.cosign(Ed25519PrivateKey.generate(), "witness.two", body, at + 60)
    served = note + first + "\n" + second + "\n"

    seen = read_checkpoint(served, "tongban.example/audit", ZONE)

    assert (seen.origin, seen.tree_size, seen.root) == (
        "tongban.example/audit",
        "42",
        base64.b64encode(b"\x01" * 32).decode(),
    )
    assert [s.name for s in seen.log] == ["tongban.example/audit"]
    assert [(w.name, w.signed_at) for w in seen.witnesses] == [
        ("witness.one", "2026-03-02 10:00:05"),  # Beijing time
        ("witness.two", "2026-03-02 10:01:05"),
    ]


def test_a_line_that_is_no_cosignature_is_listed_without_a_time() -> None:
    note = notes.sign_checkpoint(Ed25519PrivateKey.generate(), "log", "log", 1, b"\x00" * 32)
    served = note + "\u2014 stranger bm90IGJhc2U2NA\n" + "not a signature line\n"
    seen = read_checkpoint(served, "log", ZONE)
    assert [(w.name, w.signed_at) for w in seen.witnesses] == [("stranger", None)]
    assert read_checkpoint("", "log", ZONE).witnesses == []


def test_every_denial_of_the_exchange_is_said_in_words() -> None:
    """The auditor's pages name each denial's reason; a denial added to the exchange needs its words."""
    assert {problem.value for problem in DENIALS} == set(DENIAL_REASONS)
