"""roles are checked by the database (ck_systems_roles, ck_users_roles)

Revision ID: e7a2c9b41d53
Revises: 5222d4bdaee8
Create Date: 2026-11-27 01:45:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "e7a2c9b41d53"
down_revision: str | None = "5222d4bdaee8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES = {
    "systems": ("consumer", "provider"),
    "users": ("platform_admin", "data_admin", "approver", "auditor"),
}


def upgrade() -> None:
    for table, roles in ROLES.items():
        allowed = ", ".join(f"'{r}'" for r in roles)
        op.create_check_constraint("roles", table, f"roles <@ ARRAY[{allowed}]::varchar[]", schema="gateway")


def downgrade() -> None:
    for table in ROLES:
        op.drop_constraint(op.f(f"ck_{table}_roles"), table, type_="check", schema="gateway")
