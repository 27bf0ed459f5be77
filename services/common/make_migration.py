"""Autogenerate a migration for one service against the database in TONGBAN_DATABASE_URL:

python -m services.common.make_migration <service> "<message>"   (make migration S=... M=...)
"""

import asyncio
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from services.common.db import create_engine, migrate
from services.common.settings import CommonSettings


async def main(service: str, message: str) -> None:
    migrations = Path(__file__).parents[1] / service / "migrations"
    engine = create_engine(CommonSettings().database_url)
    await migrate(engine, service, migrations)  # autogenerate diffs against head

    def revision(connection: object) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(migrations))
        cfg.attributes["connection"] = connection
        cfg.attributes["schema"] = service
        command.revision(cfg, message=message, autogenerate=True)

    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        await conn.run_sync(revision)
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
