"""resource lifecycle: the submitted state, and every version of an entry kept

Revision ID: 21ade0d6f577
Revises: 9d2e61c0b7a4
Create Date: 2026-11-27 01:25:36.435220
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "21ade0d6f577"
down_revision: str | None = "9d2e61c0b7a4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "status IN ('draft', 'published', 'deprecated')"
NEW = "status IN ('draft', 'submitted', 'published', 'deprecated')"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_resources_status"), "resources", type_="check", schema="registry")
    op.create_check_constraint("status", "resources", NEW, schema="registry")
    op.create_table(
        "resource_versions",
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("published_on", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('draft', 'submitted', 'published', 'superseded', 'deprecated')",
            name=op.f("ck_resource_versions_status"),
        ),
        sa.PrimaryKeyConstraint("code", "version", name=op.f("pk_resource_versions")),
        schema="registry",
    )
    # Entries created before versions were kept: their current content is their only version.
    op.execute(
        """
        INSERT INTO registry.resource_versions (code, version, content, status, author, published_on,
                                                created_at, updated_at)
        SELECT code, version,
               jsonb_build_object(
                   'name', name, 'summary', summary, 'category', category, 'classification', classification,
                   'format', format, 'items', items, 'share', share, 'open', open, 'update_cycle', update_cycle,
                   'related_codes', to_jsonb(related_codes), 'subject_types', to_jsonb(subject_types)),
               status, '', published_on, created_at, updated_at
        FROM registry.resources
        """
    )


def downgrade() -> None:
    op.drop_table("resource_versions", schema="registry")
    # A submitted entry goes back to draft: the old schema has no such state.
    op.execute("UPDATE registry.resources SET status = 'draft' WHERE status = 'submitted'")
    op.drop_constraint(op.f("ck_resources_status"), "resources", type_="check", schema="registry")
    op.create_check_constraint("status", "resources", OLD, schema="registry")
