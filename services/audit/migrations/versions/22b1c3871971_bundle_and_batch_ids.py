"""bundle and batch ids: the evidence bundle or batch an exchange query was part of (canonical
version 5), each with an index for an auditor's look-up; records from before get "" (no row is
rewritten: a column default, dropped after).

Revision ID: 22b1c3871971
Revises: 691b52a1ee63
Create Date: 2026-11-27 09:03:48.590457
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "22b1c3871971"
down_revision: str | None = "691b52a1ee63"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for column in ("bundle_id", "batch_id"):
        op.add_column(
            "records", sa.Column(column, sa.String(length=40), server_default="", nullable=False), schema="audit"
        )
        op.alter_column("records", column, server_default=None, schema="audit")
        op.create_index(
            op.f(f"ix_records_{column}"),
            "records",
            [column],
            unique=False,
            schema="audit",
            postgresql_where=sa.text(f"{column} <> ''"),
        )


def downgrade() -> None:
    for column in ("batch_id", "bundle_id"):
        op.drop_index(op.f(f"ix_records_{column}"), table_name="records", schema="audit")
        op.drop_column("records", column, schema="audit")
