"""The migrations Job's entry point: every service's schema reaches its Alembic head, twice over."""

from __future__ import annotations

import asyncpg

from services.common.migrate import SERVICES, migrate_all
from tests.stack import asyncpg_dsn, create_database, drop_database, infra_env


async def alembic_heads(url: str) -> dict[str, str | None]:
    conn = await asyncpg.connect(asyncpg_dsn(url)[0])
    try:
        # Schema names are the fixed service names, not input.
        return {s: await conn.fetchval(f'SELECT version_num FROM "{s}".alembic_version') for s in SERVICES}  # noqa: S608
    finally:
        await conn.close()


async def test_migrate_all_brings_every_schema_to_its_head_and_is_idempotent() -> None:
    url = await create_database(infra_env()["TONGBAN_DATABASE_URL"])
    try:
        assert await migrate_all(url) == list(SERVICES)
        heads = await alembic_heads(url)
        assert all(heads.values()), heads
        # A second run (the Job re-run, or a pod starting after it) finds nothing to do.
        await migrate_all(url)
        assert await alembic_heads(url) == heads
    finally:
        await drop_database(url)
