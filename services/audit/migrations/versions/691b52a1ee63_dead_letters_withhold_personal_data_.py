"""dead letters withhold personal data, retention

Revision ID: 691b52a1ee63
Revises: b6a2ea781a3f
Create Date: 2026-11-27 05:59:56.477608
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "691b52a1ee63"
down_revision: str | None = "b6a2ea781a3f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# What services.audit.service.ID_SHAPED finds, in SQL (no left guard: over encode(…, 'escape'),
# an octal escape may stand before the digits; a wider match only withholds more).
ID_SHAPED = "[1-8][0-9]{5}(19|20)[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])[0-9]{3}"
PERSONAL = "the exchange's data-plane messages carry personal data in clear (个人信息): not kept by audit"
ID_LIKE = "the message holds what looks like a resident identity number in clear: not kept by audit"


def upgrade() -> None:
    op.add_column("dead_letters", sa.Column("withheld", sa.Text(), nullable=True), schema="audit")
    op.alter_column("dead_letters", "value", existing_type=postgresql.BYTEA(), nullable=True, schema="audit")
    # Dead letters kept before: the same rule as new ones (service.withheld_because), so that no
    # subject identifier kept in clear survives the upgrade.
    op.execute(
        sa.text(
            "UPDATE audit.dead_letters SET value = NULL, withheld = :personal "
            "WHERE source_topic ~ '(^|\\.)exchange\\.(requests\\.|replies$)'"
        ).bindparams(personal=PERSONAL)
    )
    op.execute(
        sa.text(
            "UPDATE audit.dead_letters SET value = NULL, withheld = :id_like "
            "WHERE withheld IS NULL AND (encode(value, 'escape') ~ :pattern "
            "OR encode(coalesce(key, ''::bytea), 'escape') ~ :pattern OR headers::text ~ :pattern)"
        ).bindparams(pattern=ID_SHAPED, id_like=ID_LIKE)
    )
    op.execute(
        sa.text("UPDATE audit.dead_letters SET key = NULL WHERE encode(key, 'escape') ~ :pattern").bindparams(
            pattern=ID_SHAPED
        )
    )
    op.execute(
        sa.text(
            "UPDATE audit.dead_letters SET headers = (SELECT coalesce(jsonb_object_agg(k, CASE WHEN v ~ :pattern "
            "THEN '…withheld' ELSE v END), '{}'::jsonb) FROM jsonb_each_text(headers) AS e(k, v)) "
            "WHERE headers::text ~ :pattern"
        ).bindparams(pattern=ID_SHAPED)
    )


def downgrade() -> None:
    op.execute("UPDATE audit.dead_letters SET value = ''::bytea WHERE value IS NULL")  # withheld stays withheld
    op.alter_column("dead_letters", "value", existing_type=postgresql.BYTEA(), nullable=False, schema="audit")
    op.drop_column("dead_letters", "withheld", schema="audit")
