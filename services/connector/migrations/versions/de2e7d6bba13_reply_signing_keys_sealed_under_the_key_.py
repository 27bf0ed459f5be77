"""reply-signing keys sealed under the key-encryption key

Revision ID: de2e7d6bba13
Revises: 405c3dda9a1d
Create Date: 2026-11-27 03:33:13.864323
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "de2e7d6bba13"
down_revision: str | None = "405c3dda9a1d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The connector seals existing keys (and clears them) at its next start: the key-encryption
    # key is not the migration's to know.
    op.add_column("signing_keys", sa.Column("sealed_private_key", sa.LargeBinary(), nullable=True), schema="connector")
    op.alter_column("signing_keys", "private_key", existing_type=postgresql.BYTEA(), nullable=True, schema="connector")


def downgrade() -> None:
    # Sealed keys cannot be unsealed here: they are dropped, and the connector makes a new key at its next start.
    op.execute("DELETE FROM connector.signing_keys WHERE private_key IS NULL")
    op.alter_column("signing_keys", "private_key", existing_type=postgresql.BYTEA(), nullable=False, schema="connector")
    op.drop_column("signing_keys", "sealed_private_key", schema="connector")
