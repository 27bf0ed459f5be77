"""answer retention: purge marker and a BRIN index by age

Revision ID: e884f64b2759
Revises: 6616725cbb63
Create Date: 2026-11-27 03:42:55.513564
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e884f64b2759"
down_revision: str | None = "6616725cbb63"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "queries", sa.Column("answer_purged_at", sa.DateTime(timezone=True), nullable=True), schema="exchange"
    )
    op.create_index(
        op.f("ix_queries_created_brin"),
        "queries",
        ["created_at"],
        unique=False,
        schema="exchange",
        postgresql_using="brin",
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_queries_created_brin"), table_name="queries", schema="exchange", postgresql_using="brin")
    op.drop_column("queries", "answer_purged_at", schema="exchange")
