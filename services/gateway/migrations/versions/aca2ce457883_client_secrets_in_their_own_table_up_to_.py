"""client secrets in their own table, up to two per system

Revision ID: aca2ce457883
Revises: e7a2c9b41d53
Create Date: 2026-11-27 01:24:07.712785
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "aca2ce457883"
down_revision: str | None = "e7a2c9b41d53"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "client_secrets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"], ["gateway.systems.client_id"], name=op.f("fk_client_secrets_client_id_systems")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client_secrets")),
        schema="gateway",
    )
    op.create_index(
        op.f("ix_gateway_client_secrets_client_id"), "client_secrets", ["client_id"], unique=False, schema="gateway"
    )
    # Each system's one secret moves over as it is (sha256$ or argon2id; the former is rehashed at
    # its next use), so no client has to change anything.
    op.execute(
        "INSERT INTO gateway.client_secrets (id, client_id, secret_hash, created_at) "
        "SELECT substr(md5(client_id || clock_timestamp()::text), 1, 16), client_id, secret_hash, created_at "
        "FROM gateway.systems WHERE secret_hash IS NOT NULL"
    )
    op.drop_column("systems", "secret_hash", schema="gateway")


def downgrade() -> None:
    op.add_column(
        "systems",
        sa.Column("secret_hash", sa.VARCHAR(length=128), autoincrement=False, nullable=True),
        schema="gateway",
    )
    # Back to one secret per system: the newest.
    op.execute(
        "UPDATE gateway.systems s SET secret_hash = ("
        "SELECT c.secret_hash FROM gateway.client_secrets c WHERE c.client_id = s.client_id "
        "ORDER BY c.created_at DESC LIMIT 1)"
    )
    op.drop_index(op.f("ix_gateway_client_secrets_client_id"), table_name="client_secrets", schema="gateway")
    op.drop_table("client_secrets", schema="gateway")
