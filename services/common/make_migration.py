"""Autogenerate a migration for one service against the database in TONGBAN_DATABASE_URL:

python -m services.common.make_migration <service> "<message>"   (make migration S=... M=...)
"""

import asyncio
import sys
from pathlib import Path

from alembic import command
from sqlalchemy import text

from services.common.db import alembic_config, create_engine, migrate
from services.common.settings import CommonSettings


async def main(service: str, message: str) -> None:
    migrations = Path(__file__).parents[1] / service / "migrations"
    engine = create_engine(CommonSettings().database_url)
    await migrate(engine, service, migrations)  # autogenerate diffs against head

    def revision(connection: object) -> None:
        command.revision(alembic_config(connection, service, migrations), message=message, autogenerate=True)

    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        await conn.run_sync(revision)
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
