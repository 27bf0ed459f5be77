"""index pending queries by deadline, for the sweep of abandoned queries

Revision ID: 3b6f0d2a9c41
Revises: 7256979d2808
Create Date: 2026-11-26 19:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3b6f0d2a9c41"
down_revision: str | None = "7256979d2808"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_queries_pending",
        "queries",
        ["deadline"],
        unique=False,
        schema="exchange",
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_queries_pending", table_name="queries", schema="exchange", postgresql_where=sa.text("status = 'pending'")
    )
