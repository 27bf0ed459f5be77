"""``python -m services.common.migrate``: every service's schema to the head of its own Alembic history.

Each service already migrates its own schema when it starts (:func:`services.common.db.migrate`,
under an advisory lock); this runs the same before a rollout — the Kubernetes migrations Job —
so that a failing migration stops the deployment instead of crash-looping new pods.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from services.common.db import create_engine, migrate
from services.common.settings import CommonSettings

SERVICES = ("gateway", "registry", "exchange", "audit", "connector")
PACKAGES = Path(__file__).resolve().parents[1]


async def migrate_all(database_url: str) -> list[str]:
    """Migrate every service's schema on ``database_url``; returns the schemas, in order."""
    engine = create_engine(database_url, pool_size=1)
    try:
        for name in SERVICES:
            await migrate(engine, name, PACKAGES / name / "migrations")
    finally:
        await engine.dispose()
    return list(SERVICES)


def main() -> int:
    for schema in asyncio.run(migrate_all(CommonSettings().database_url)):
        print(f"migrated {schema}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
