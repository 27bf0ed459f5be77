"""deploy/local/infra.py: the parts of starting the local infrastructure that can go wrong by
chance rather than by configuration."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.stack import load_infra

ROOT = Path(__file__).resolve().parents[2]


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """One random id in 64 encodes to a leading "-", which Kafka's storage tool reads as an option
    (a CI run failed so); such a draw is discarded, as Kafka's own ``Uuid.randomUuid`` does."""
    infra = load_infra()
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(infra.uuid, "uuid4", lambda: next(draws))
    cluster_id = infra.new_cluster_id()
    assert cluster_id == "AQEBAQEBAQEBAQEBAQEBAQ"
