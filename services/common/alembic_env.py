"""The body of every service's ``migrations/env.py``: online migrations on the connection
handed over by :func:`services.common.db.migrate`, versioned in the service's own schema."""

from alembic import context
from sqlalchemy import MetaData


def run(metadata: MetaData) -> None:
    config = context.config
    connection = config.attributes["connection"]
    schema = config.attributes["schema"]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        # Compare against this service's schema only (autogenerate must not see the others').
        include_schemas=True,
        include_name=lambda name, type_, _parent: type_ != "schema" or name == schema,
    )
    with context.begin_transaction():
        context.run_migrations()
