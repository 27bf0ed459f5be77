"""resources.share_type: the sharing class as a column, indexed with status and code

Revision ID: 5281043e7efd
Revises: 68ec3589cb58
Create Date: 2026-11-27 07:10:27.351269

共享类型 lives in the ``share`` JSON, which no index orders by code, so a search or list filtered
by it read every entry. PostgreSQL computes the column from ``share`` (a stored generated column:
existing entries get theirs when it is added, every later write keeps it), with a CHECK like the
other enumerations and a b-tree on (share_type, status, code) for the filtered walk.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5281043e7efd"
down_revision: str | None = "68ec3589cb58"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHARE_TYPES = ("unconditional", "conditional", "none")  # models.SHARE_TYPES when this was written


def upgrade() -> None:
    op.add_column(
        "resources",
        sa.Column("share_type", sa.String(length=16), sa.Computed("share ->> 'type'", persisted=True), nullable=False),
        schema="registry",
    )
    allowed = ", ".join(f"'{v}'" for v in SHARE_TYPES)
    op.create_check_constraint("share_type", "resources", f"share_type IN ({allowed})", schema="registry")
    op.create_index(
        op.f("ix_resources_share_type_status_code"), "resources", ["share_type", "status", "code"], schema="registry"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_resources_share_type_status_code"), table_name="resources", schema="registry")
    op.drop_constraint(op.f("ck_resources_share_type"), "resources", type_="check", schema="registry")
    op.drop_column("resources", "share_type", schema="registry")
