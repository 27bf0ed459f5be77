"""private_key_jwt clients, signing key rotation sealed at rest, audit outbox

Revision ID: 332ae1568486
Revises: 3f1c0a7d9e42
Create Date: 2026-11-27 02:51:12.589101
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "332ae1568486"
down_revision: str | None = "3f1c0a7d9e42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "client_assertions",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("jti", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti", name=op.f("pk_client_assertions")),
        schema="gateway",
    )
    op.create_index(
        op.f("ix_gateway_client_assertions_expires_at"), "client_assertions", ["expires_at"], schema="gateway"
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("headers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("claimed_by", sa.String(length=80), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        schema="gateway",
    )
    op.create_index(op.f("ix_gateway_outbox_created_at"), "outbox", ["created_at"], schema="gateway")

    # Signing keys: a rotation state and the public half of each; the newest existing key is the
    # current one, older ones previous. Their private halves are sealed by the gateway at its next
    # start (the key-encryption key is not the migration's to know).
    op.add_column("signing_keys", sa.Column("state", sa.String(length=16), nullable=True), schema="gateway")
    op.add_column(
        "signing_keys",
        sa.Column("public_jwk", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        schema="gateway",
    )
    op.add_column("signing_keys", sa.Column("sealed_private_jwk", sa.LargeBinary(), nullable=True), schema="gateway")
    op.add_column(
        "signing_keys",
        sa.Column("state_since", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        schema="gateway",
    )
    op.execute(
        """
        UPDATE gateway.signing_keys k
           SET public_jwk = k.private_jwk - 'd',
               state = CASE WHEN k.kid = (SELECT kid FROM gateway.signing_keys ORDER BY created_at DESC, kid LIMIT 1)
                            THEN 'current' ELSE 'previous' END
        """
    )
    op.alter_column("signing_keys", "state", nullable=False, schema="gateway")
    op.alter_column("signing_keys", "public_jwk", nullable=False, schema="gateway")
    op.alter_column(
        "signing_keys",
        "private_jwk",
        existing_type=postgresql.JSONB(astext_type=sa.Text()),
        nullable=True,
        schema="gateway",
    )
    op.create_check_constraint("state", "signing_keys", "state IN ('next', 'current', 'previous')", schema="gateway")
    op.create_index(
        "uq_signing_keys_state",
        "signing_keys",
        ["state"],
        unique=True,
        schema="gateway",
        postgresql_where=sa.text("state IN ('current', 'next')"),
    )

    op.add_column(
        "systems", sa.Column("jwks", postgresql.JSONB(astext_type=sa.Text()), nullable=True), schema="gateway"
    )
    op.add_column("systems", sa.Column("jwks_uri", sa.String(length=2048), nullable=True), schema="gateway")
    op.create_check_constraint(
        "auth_method",
        "systems",
        "auth_method IN ('client_secret_basic', 'private_key_jwt')",
        schema="gateway",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_systems_auth_method"), "systems", type_="check", schema="gateway")
    op.drop_column("systems", "jwks_uri", schema="gateway")
    op.drop_column("systems", "jwks", schema="gateway")
    op.drop_index(
        "uq_signing_keys_state",
        table_name="signing_keys",
        schema="gateway",
        postgresql_where=sa.text("state IN ('current', 'next')"),
    )
    op.drop_constraint(op.f("ck_signing_keys_state"), "signing_keys", type_="check", schema="gateway")
    # Sealed keys cannot be unsealed here: they are dropped, and the gateway makes a new key at its next start.
    op.execute("DELETE FROM gateway.signing_keys WHERE private_jwk IS NULL")
    op.alter_column(
        "signing_keys",
        "private_jwk",
        existing_type=postgresql.JSONB(astext_type=sa.Text()),
        nullable=False,
        schema="gateway",
    )
    op.drop_column("signing_keys", "state_since", schema="gateway")
    op.drop_column("signing_keys", "sealed_private_jwk", schema="gateway")
    op.drop_column("signing_keys", "public_jwk", schema="gateway")
    op.drop_column("signing_keys", "state", schema="gateway")
    op.drop_index(op.f("ix_gateway_outbox_created_at"), table_name="outbox", schema="gateway")
    op.drop_table("outbox", schema="gateway")
    op.drop_index(op.f("ix_gateway_client_assertions_expires_at"), table_name="client_assertions", schema="gateway")
    op.drop_table("client_assertions", schema="gateway")
