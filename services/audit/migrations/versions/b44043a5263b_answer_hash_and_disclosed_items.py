"""answer hash and disclosed items: a verifiable answer's SD-JWT hash and the items it disclosed
(canonical version 4); records from before get "" and {} (no row is rewritten: a column default).

Revision ID: b44043a5263b
Revises: b6a2ea781a3f
Create Date: 2026-11-27 03:57:24.129358
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b44043a5263b"
down_revision: str | None = "b6a2ea781a3f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "records", sa.Column("answer_sha256", sa.String(length=64), server_default="", nullable=False), schema="audit"
    )
    op.add_column(
        "records",
        sa.Column("disclosed_fields", sa.ARRAY(sa.String(length=50)), server_default="{}", nullable=False),
        schema="audit",
    )
    op.alter_column("records", "answer_sha256", server_default=None, schema="audit")
    op.alter_column("records", "disclosed_fields", server_default=None, schema="audit")


def downgrade() -> None:
    op.drop_column("records", "disclosed_fields", schema="audit")
    op.drop_column("records", "answer_sha256", schema="audit")
