"""catalogue search: character unigrams and bigrams of each entry, generated and GIN-indexed

Revision ID: c4f1a7d2e9b3
Revises: 8e1b1fb62fb5
Create Date: 2026-11-27 03:00:00.000000

No extension is needed (the embedded PostgreSQL has no contrib, so no pg_trgm or zhparser): three
SQL functions split text into terms, and two generated columns keep them (catalogue/search.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c4f1a7d2e9b3"
down_revision: str | None = "8e1b1fb62fb5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FULL_WIDTH = "０１２３４５６７８９ＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＸＹＺａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒｓｔｕｖｗｘｙｚ"
HALF_WIDTH = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

FUNCTIONS = [
    # Text → words: full-width letters and digits made ASCII, lower case, and every run of anything
    # but a letter, digit or CJK ideograph (punctuation, spaces, symbols) one space.
    f"""
    CREATE FUNCTION registry.search_normal(t text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
      SELECT btrim(regexp_replace(lower(translate(t, '{FULL_WIDTH}', '{HALF_WIDTH}')),
                                  '[^0-9a-z\\u3400-\\u4dbf\\u4e00-\\u9fff\\uf900-\\ufaff\\U00020000-\\U0002ebef]+', ' ', 'g'))
    $$
    """,
    # A document's terms: every character of every word, and every two adjacent characters.
    """
    CREATE FUNCTION registry.search_terms(t text) RETURNS text[]
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
      SELECT coalesce(array_agg(DISTINCT g.term), '{}'::text[])
      FROM unnest(string_to_array(registry.search_normal(t), ' ')) AS w(word)
      CROSS JOIN LATERAL generate_series(1, length(w.word)) AS s(i)
      CROSS JOIN LATERAL (VALUES (substr(w.word, s.i, 1)),
                                 (CASE WHEN s.i < length(w.word) THEN substr(w.word, s.i, 2) END)) AS g(term)
      WHERE g.term IS NOT NULL
    $$
    """,
    # A query's terms: the bigrams of each word, or the word itself when it is one character.
    """
    CREATE FUNCTION registry.search_query(q text) RETURNS text[]
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
      SELECT coalesce(array_agg(DISTINCT substr(w.word, s.i, least(length(w.word), 2))), '{}'::text[])
      FROM unnest(string_to_array(registry.search_normal(q), ' ')) AS w(word)
      CROSS JOIN LATERAL generate_series(1, greatest(length(w.word) - 1, 1)) AS s(i)
    $$
    """,
    # An entry's terms: its name, summary and the names of its 信息项, as separate words.
    """
    CREATE FUNCTION registry.resource_terms(name text, summary text, items jsonb) RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
      SELECT registry.search_terms(concat_ws(' ', name, summary,
        (SELECT string_agg(i ->> 'name', ' ') FROM jsonb_array_elements(items) AS i)))
    $$
    """,
]
DROP = ["resource_terms(text, text, jsonb)", "search_query(text)", "search_terms(text)", "search_normal(text)"]


def upgrade() -> None:
    for sql in FUNCTIONS:
        op.execute(sql)
    op.add_column(
        "resources",
        sa.Column(
            "search_terms",
            postgresql.ARRAY(sa.Text()),
            sa.Computed("registry.resource_terms(name, summary, items)", persisted=True),
            nullable=True,
        ),
        schema="registry",
    )
    op.add_column(
        "resources",
        sa.Column(
            "search_name", postgresql.ARRAY(sa.Text()), sa.Computed("registry.search_terms(name)", persisted=True)
        ),
        schema="registry",
    )
    op.create_index(
        op.f("ix_resources_search_terms"), "resources", ["search_terms"], schema="registry", postgresql_using="gin"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_resources_search_terms"), table_name="resources", schema="registry", postgresql_using="gin")
    op.drop_column("resources", "search_name", schema="registry")
    op.drop_column("resources", "search_terms", schema="registry")
    for signature in DROP:
        op.execute(f"DROP FUNCTION registry.{signature}")
