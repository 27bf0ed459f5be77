"""catalogue search: each entry's character unigrams and bigrams, GIN-indexed

Revision ID: c4f1a7d2e9b3
Revises: 7a5f865b8390
Create Date: 2026-11-27 03:00:00.000000

No extension is needed (the embedded PostgreSQL has no contrib, so no pg_trgm or zhparser): the
registry computes the terms (catalogue/terms.py) on every write; existing entries get theirs here.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from services.registry.catalogue.terms import entry_terms, terms

revision: str = "c4f1a7d2e9b3"
down_revision: str | None = "7a5f865b8390"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000


def upgrade() -> None:
    for column in ("search_terms", "search_name"):
        op.add_column(
            "resources",
            sa.Column(column, postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
            schema="registry",
        )
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT code, name, summary, items FROM registry.resources")).all()
    update = sa.text("UPDATE registry.resources SET search_terms = :t, search_name = :n WHERE code = :c")
    for start in range(0, len(rows), BATCH):
        bind.execute(
            update,
            [
                {"c": code, "t": entry_terms(name, summary, items), "n": terms(name)}
                for code, name, summary, items in rows[start : start + BATCH]
            ],
        )
    for column in ("search_terms", "search_name"):
        op.create_index(
            op.f(f"ix_resources_{column}"), "resources", [column], schema="registry", postgresql_using="gin"
        )


def downgrade() -> None:
    for column in ("search_name", "search_terms"):
        op.drop_index(op.f(f"ix_resources_{column}"), table_name="resources", schema="registry", postgresql_using="gin")
        op.drop_column("resources", column, schema="registry")
