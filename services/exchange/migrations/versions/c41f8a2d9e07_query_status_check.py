"""a query's status is checked by the database (ck_queries_status)

Revision ID: c41f8a2d9e07
Revises: 3b6f0d2a9c41
Create Date: 2026-11-27 01:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "c41f8a2d9e07"
down_revision: str | None = "3b6f0d2a9c41"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_check_constraint(
        "status",
        "queries",
        "status IN ('pending', 'completed', 'not_found', 'timeout', 'provider_error', 'late_reply')",
        schema="exchange",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_queries_status"), "queries", type_="check", schema="exchange")
