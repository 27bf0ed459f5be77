"""Async SQLAlchemy: one engine per service, one schema per service, one unit of work per request.

A route takes its unit of work as a dependency (``UnitOfWorkDep``, :mod:`services.common.uow`), so
the commit happens before the response is sent; domain code never calls ``commit()``.
"""

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import CheckConstraint, MetaData, event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.util import greenlet_spawn

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Alembic keeps its running context in module globals (alembic.context), so two services of the
# embedded process must not migrate at the same time. Replicas in other processes are serialised
# by the advisory lock in migrate().
_ALEMBIC_GLOBALS = asyncio.Lock()


def schema_metadata(schema: str) -> MetaData:
    """Metadata whose tables all live in ``schema`` (one schema per service), with named constraints."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def one_of(column: str, values: type[StrEnum]) -> CheckConstraint:
    """A CHECK that ``column`` holds a member of ``values`` (named ``ck_<table>_<column>``): the
    database refuses a status the code does not know, whoever writes it."""
    return CheckConstraint(f"{column} IN ({', '.join(repr(v.value) for v in values)})", name=column)


def subset_of(column: str, values: Iterable[str]) -> CheckConstraint:
    """A CHECK that the array ``column`` holds only ``values`` (named ``ck_<table>_<column>``)."""
    allowed = ", ".join(repr(str(v)) for v in sorted(values))
    return CheckConstraint(f"{column} <@ ARRAY[{allowed}]::varchar[]", name=column)


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    # No overflow: under load requests wait for a pooled connection rather than open and close
    # short-lived ones (connection churn costs PostgreSQL more CPU than the wait costs us).
    # No pre-ping round trip per checkout; instead a free check: asyncpg marks a connection closed
    # as soon as the server drops it (restart, crash), and the pool then opens a new one.
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=30, pool_recycle=1800)
    event.listen(engine.sync_engine, "checkout", _replace_if_closed)
    return engine


def _replace_if_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("closed by the server; the pool opens a new connection")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[Any]:
    """The pooled asyncpg connection itself, for the few hot paths where SQLAlchemy's cost per
    statement shows (the exchange's query path). It runs in autocommit: make each change a single
    statement (CTEs) so that it is atomic. JSON and JSONB parameters are passed as ``str``.

    SQLAlchemy does not see errors raised here, so a connection that fails because the database
    went away is invalidated here, not handed to the next caller.

    The pool's connection is taken without a SQLAlchemy ``Connection`` around it: a checkout and
    check-in cost 121 µs of CPU with one, 56 µs without, and the exchange takes two per query
    (bench/results/2026-11-27-cpu-profile.md). The pool's checkout event and reset on return apply.
    """
    fairy = await engine.raw_connection()
    try:
        yield fairy.driver_connection
    except Exception as exc:
        if database_unavailable(exc):
            await greenlet_spawn(fairy.invalidate)
        raise
    finally:
        # Checking in may call the driver (a reset on return): SQLAlchemy runs that in a greenlet.
        await greenlet_spawn(fairy.close)


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the database cannot be reached right now: the
    server is down, restarting, or dropped the connection. Such errors are worth a retry."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(
            seen,
            asyncpg.PostgresConnectionError | asyncpg.exceptions.OperatorInterventionError | ConnectionError,
        ):
            return True
        if isinstance(seen, asyncpg.InterfaceError) and "closed" in str(seen):
            return True
        if isinstance(seen, FileNotFoundError) and seen.filename is None:  # its Unix socket is gone
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def alembic_config(connection: object, schema: str, migrations: Path) -> Any:
    """The Alembic configuration of one service's history, run on ``connection`` (a sync
    connection, inside ``run_sync``) against its own ``schema`` (see ``alembic_env.run``)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations))
    cfg.attributes["connection"] = connection
    cfg.attributes["schema"] = schema
    return cfg


async def migrate(engine: AsyncEngine, schema: str, migrations: Path) -> None:
    """Bring ``schema`` to the head of its own Alembic history.

    Serialised by a PostgreSQL advisory lock so that replicas starting together take turns.
    """
    from alembic import command

    def upgrade(connection: object) -> None:
        command.upgrade(alembic_config(connection, schema, migrations), "head")

    lock_key = {"s": f"tongban-migrate-{schema}"}
    async with _ALEMBIC_GLOBALS, engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(hashtext(:s))"), lock_key)
        await conn.commit()
        try:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await conn.run_sync(upgrade)
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(hashtext(:s))"), lock_key)
            await conn.commit()
