"""indexes for the auditors' queries (filter + time order), the anomaly alerts table

Revision ID: 035aa1bb64d4
Revises: 272ce9e18502
Create Date: 2026-11-27 02:53:15.202132
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "035aa1bb64d4"
down_revision: str | None = "272ce9e18502"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("consumer_dept", sa.String(length=18), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("subject_hash", sa.String(length=64), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("observed", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=128), nullable=True),
        sa.CheckConstraint(
            "rule IN ('volume', 'off_hours', 'denials', 'subject_spread', 'rare_purpose')", name=op.f("ck_alerts_rule")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_alerts_dedupe_key")),
        schema="audit",
    )
    op.create_index(op.f("ix_alerts_open"), "alerts", ["acknowledged_at", "id"], unique=False, schema="audit")
    op.drop_index(op.f("ix_records_consumer"), table_name="records", schema="audit")
    op.drop_index(op.f("ix_records_occurred"), table_name="records", schema="audit")
    op.drop_index(op.f("ix_records_subject"), table_name="records", schema="audit")
    op.create_index(
        op.f("ix_records_consumer_time"),
        "records",
        ["consumer_dept", "occurred_at", "seq"],
        unique=False,
        schema="audit",
    )
    op.create_index(
        op.f("ix_records_provider_time"),
        "records",
        ["provider_dept", "occurred_at", "seq"],
        unique=False,
        schema="audit",
    )
    op.create_index(
        op.f("ix_records_subject_time"), "records", ["subject_hash", "occurred_at", "seq"], unique=False, schema="audit"
    )
    op.create_index(op.f("ix_records_time"), "records", ["occurred_at", "seq"], unique=False, schema="audit")


def downgrade() -> None:

    op.drop_index(op.f("ix_records_time"), table_name="records", schema="audit")
    op.drop_index(op.f("ix_records_subject_time"), table_name="records", schema="audit")
    op.drop_index(op.f("ix_records_provider_time"), table_name="records", schema="audit")
    op.drop_index(op.f("ix_records_consumer_time"), table_name="records", schema="audit")
    op.create_index(op.f("ix_records_subject"), "records", ["subject_hash", "seq"], unique=False, schema="audit")
    op.create_index(op.f("ix_records_occurred"), "records", ["occurred_at"], unique=False, schema="audit")
    op.create_index(op.f("ix_records_consumer"), "records", ["consumer_dept", "seq"], unique=False, schema="audit")
    op.drop_index(op.f("ix_alerts_open"), table_name="alerts", schema="audit")
    op.drop_table("alerts", schema="audit")
