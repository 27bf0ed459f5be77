"""statuses are checked by the database (ck_<table>_status)

Revision ID: 9d2e61c0b7a4
Revises: 32eb76cd2f6a
Create Date: 2026-11-27 01:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "9d2e61c0b7a4"
down_revision: str | None = "32eb76cd2f6a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECKS = {
    "resources": ("draft", "published", "deprecated"),
    "applications": ("pending", "approved", "rejected", "refused"),
    "grants": ("active", "revoked"),
}


def upgrade() -> None:
    for table, values in CHECKS.items():
        allowed = ", ".join(f"'{v}'" for v in values)
        op.create_check_constraint("status", table, f"status IN ({allowed})", schema="registry")


def downgrade() -> None:
    for table in CHECKS:
        op.drop_constraint(op.f(f"ck_{table}_status"), table, type_="check", schema="registry")
