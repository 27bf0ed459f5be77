"""systems may carry the citizen_portal role (ck_systems_roles widened)

Revision ID: 3f1c0a7d9e42
Revises: bb41658f6053
Create Date: 2026-11-27 03:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "3f1c0a7d9e42"
down_revision: str | None = "bb41658f6053"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _roles_check(*roles: str) -> None:
    op.drop_constraint(op.f("ck_systems_roles"), "systems", type_="check", schema="gateway")
    allowed = ", ".join(f"'{r}'" for r in roles)
    op.create_check_constraint("roles", "systems", f"roles <@ ARRAY[{allowed}]::varchar[]", schema="gateway")


def upgrade() -> None:
    _roles_check("citizen_portal", "consumer", "provider")


def downgrade() -> None:
    op.execute("UPDATE gateway.systems SET roles = array_remove(roles, 'citizen_portal')")
    _roles_check("consumer", "provider")
