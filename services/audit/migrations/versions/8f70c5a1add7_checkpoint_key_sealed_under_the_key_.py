"""checkpoint key sealed under the key-encryption key

Revision ID: 8f70c5a1add7
Revises: 5c2b1fe100e7
Create Date: 2026-11-27 09:42:56.453745
"""

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from services.common.keywrap import KeyWrap

revision: str = "8f70c5a1add7"
down_revision: str | None = "5c2b1fe100e7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEK_VARIABLE = "TONGBAN_KEY_ENCRYPTION_KEY"


def upgrade() -> None:
    # The audit service seals the existing key (and clears it) at its next start: the
    # key-encryption key is not the migration's to know (the migrations Job runs without it).
    op.add_column("signing_keys", sa.Column("sealed_private_key", sa.LargeBinary(), nullable=True), schema="audit")
    op.alter_column("signing_keys", "private_key", existing_type=postgresql.BYTEA(), nullable=True, schema="audit")


def downgrade() -> None:
    # The log's one checkpoint key cannot be dropped and made again, as the connector's can: the
    # checkpoints signed with it would no longer verify against the key kept here. A sealed key is
    # put back in clear with the KEK of the environment, and the downgrade refuses without it.
    bind = op.get_bind()
    sealed = bind.execute(
        sa.text("SELECT id, sealed_private_key FROM audit.signing_keys WHERE private_key IS NULL")
    ).all()
    if sealed:
        kek = os.environ.get(KEK_VARIABLE)
        if not kek:
            raise RuntimeError(
                f"{KEK_VARIABLE} is not set: the audit checkpoint key is sealed under it, and the older "
                "version keeps it in clear. Run the downgrade with the KEK in the environment."
            )
        wrap = KeyWrap(kek)
        for key_id, value in sealed:
            clear = wrap.open(value, f"tongban.audit.signing_keys:{key_id}")
            bind.execute(
                sa.text("UPDATE audit.signing_keys SET private_key = :clear WHERE id = :id"),
                {"clear": clear, "id": key_id},
            )
    op.alter_column("signing_keys", "private_key", existing_type=postgresql.BYTEA(), nullable=False, schema="audit")
    op.drop_column("signing_keys", "sealed_private_key", schema="audit")
