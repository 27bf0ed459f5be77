"""Helpers of the integration tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def unique(name: str) -> str:
    """A topic or group name no other test (or earlier run) uses."""
    return f"it-{name}-{uuid.uuid4().hex[:8]}"


async def eventually(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        await asyncio.sleep(0.1)


def written_env() -> dict[str, str]:
    """The addresses infra.py wrote last (they change only if a restart had to take a new port)."""
    lines = (ROOT / "var" / "infra.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)
