"""witness cosignatures, subject key ids

Witnesses' cosignatures of checkpoints (C2SP tlog-cosignature), and the id of the subject key
each record's subject_hash was made with. Records written before keep "" (canonical versions 1
and 2 do not hash the column, so they keep verifying); new ones are canonical version 3.

Revision ID: 2010a667ffed
Revises: 035aa1bb64d4
Create Date: 2026-11-27 03:10:20.093023
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2010a667ffed"
down_revision: str | None = "035aa1bb64d4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cosignatures",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("checkpoint_id", sa.BigInteger(), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("witness", sa.String(length=255), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"], ["audit.checkpoints.id"], name=op.f("fk_cosignatures_checkpoint_id_checkpoints")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cosignatures")),
        sa.UniqueConstraint("checkpoint_id", "witness", name=op.f("uq_cosignatures_checkpoint_id")),
        schema="audit",
    )
    op.create_index(
        "ix_cosignatures_witness_tree_size", "cosignatures", ["witness", "tree_size"], unique=False, schema="audit"
    )
    op.add_column(
        "records",
        sa.Column("subject_key_id", sa.String(length=32), server_default="", nullable=False),
        schema="audit",
    )
    op.alter_column("records", "subject_key_id", server_default=None, schema="audit")


def downgrade() -> None:
    op.drop_column("records", "subject_key_id", schema="audit")
    op.drop_index("ix_cosignatures_witness_tree_size", table_name="cosignatures", schema="audit")
    op.drop_table("cosignatures", schema="audit")
