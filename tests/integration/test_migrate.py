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


async def test_every_migration_downgrades_and_upgrades_again() -> None:
    """Each history runs down to nothing and back up: a downgrade that names a constraint wrongly
    (Alembic applies the naming convention to it again) fails here, not during an operator's rollback."""
    from alembic import command
    from sqlalchemy import text

    from services.common.db import alembic_config, create_engine
    from services.common.migrate import PACKAGES

    url = await create_database(infra_env()["TONGBAN_DATABASE_URL"])
    engine = create_engine(url, pool_size=1)
    try:
        await migrate_all(url)
        for schema in SERVICES:

            def run(connection: object, step: str, revision: str, schema: str = schema) -> None:
                getattr(command, step)(alembic_config(connection, schema, PACKAGES / schema / "migrations"), revision)

            async with engine.begin() as conn:
                await conn.run_sync(run, "downgrade", "base")
                tables = await conn.scalar(
                    text("SELECT count(*) FROM pg_tables WHERE schemaname = :s AND tablename <> 'alembic_version'"),
                    {"s": schema},
                )
                assert tables == 0, f"{schema}: {tables} tables left after downgrade to base"
                await conn.run_sync(run, "upgrade", "head")
        heads = await alembic_heads(url)
        assert all(heads.values()), heads
    finally:
        await engine.dispose()
        await drop_database(url)
