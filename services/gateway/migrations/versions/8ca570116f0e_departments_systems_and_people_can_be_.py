"""departments, systems and people can be disabled (status active | disabled, checked)

Revision ID: 8ca570116f0e
Revises: aca2ce457883
Create Date: 2026-11-27 01:26:46.554626
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8ca570116f0e"
down_revision: str | None = "aca2ce457883"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("departments", "systems", "users")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(
            table,
            sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
            schema="gateway",
        )
        op.create_check_constraint("status", table, "status IN ('active', 'disabled')", schema="gateway")


def downgrade() -> None:
    for table in TABLES:
        op.drop_constraint(op.f(f"ck_{table}_status"), table, type_="check", schema="gateway")
        op.drop_column(table, "status", schema="gateway")
