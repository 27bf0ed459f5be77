"""dead letters withhold personal data; records in monthly partitions; retention cuts

Records move to a table partitioned by ``month`` (the UTC month they were appended in, never
decreasing in leaf order), one partition per month, so that a month archived by the retention
command is dropped whole. A partitioned table's unique constraints must include the partition key:
seq, event_id and leaf_index are unique per month (the append, serialised on the chain head, is
what keeps event ids unique). Existing rows are copied; the downgrade copies them back.

Revision ID: 691b52a1ee63
Revises: b44043a5263b
Create Date: 2026-11-27 05:59:56.477608
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "691b52a1ee63"
down_revision: str | None = "b44043a5263b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# What services.audit.service.ID_SHAPED finds, in SQL (no left guard: over encode(…, 'escape'),
# an octal escape may stand before the digits; a wider match only withholds more).
ID_SHAPED = "[1-8][0-9]{5}(19|20)[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])[0-9]{3}"
PERSONAL = "the exchange's data-plane messages carry personal data in clear (个人信息): not kept by audit"
ID_LIKE = "the message holds what looks like a resident identity number in clear: not kept by audit"


INDEXES = (  # name, columns, predicate: those of the model, made again on the partitioned table
    ("ix_records_subject_time", "subject_hash, occurred_at, seq", ""),
    ("ix_records_consumer_time", "consumer_dept, occurred_at, seq", ""),
    ("ix_records_provider_time", "provider_dept, occurred_at, seq", ""),
    ("ix_records_time", "occurred_at, seq", ""),
    ("ix_records_query_id", "query_id", " WHERE query_id <> ''"),
)
CONSTRAINTS = ("pk_records", "uq_records_event_id", "uq_records_leaf_index")
COLUMNS = (
    "seq, canonical_version, event_id, occurred_at, occurred_unix_ms_raw, recorded_at, service, action, outcome, "
    "reason, actor, consumer_dept, consumer_client_id, provider_dept, resource_code, purpose, subject_type, "
    "subject_hash, subject_key_id, fields, query_id, request_id, prev_hash, hash, leaf_index, "
    "answer_sha256, disclosed_fields"
)


def _set_aside(table: str) -> None:
    """Rename audit.records to ``table`` and drop its constraints and indexes (their names are the
    new table's)."""
    op.execute(f"ALTER TABLE audit.records RENAME TO {table}")
    for name in CONSTRAINTS:
        op.execute(f"ALTER TABLE audit.{table} DROP CONSTRAINT {name}")
    for name, _, _ in INDEXES:
        op.execute(f"DROP INDEX audit.{name}")


def _indexes() -> None:
    for name, columns, where in INDEXES:
        op.execute(f"CREATE INDEX {name} ON audit.records ({columns}){where}")


def _move_identity() -> None:
    op.execute(
        "SELECT setval(pg_get_serial_sequence('audit.records', 'seq'), "
        "coalesce((SELECT max(seq) FROM audit.records), 0) + 1, false)"
    )


def upgrade() -> None:
    _set_aside("records_flat")
    op.execute(
        "CREATE TABLE audit.records (LIKE audit.records_flat INCLUDING DEFAULTS INCLUDING IDENTITY, "
        "month date NOT NULL) PARTITION BY RANGE (month)"
    )
    op.execute("ALTER TABLE audit.records ADD CONSTRAINT pk_records PRIMARY KEY (seq, month)")
    op.execute("ALTER TABLE audit.records ADD CONSTRAINT uq_records_event_id UNIQUE (event_id, month)")
    op.execute("ALTER TABLE audit.records ADD CONSTRAINT uq_records_leaf_index UNIQUE (leaf_index, month)")
    _indexes()
    # A record's month: the month it was recorded in, or a later one if a record before it was
    # recorded later (concurrent appends' transaction times): months never decrease in leaf order.
    op.execute(
        "CREATE TEMPORARY TABLE record_months ON COMMIT DROP AS SELECT leaf_index, "
        "max(date_trunc('month', recorded_at AT TIME ZONE 'UTC')::date) OVER (ORDER BY leaf_index) AS month "
        "FROM audit.records_flat"
    )
    op.execute(
        """
        DO $$
        DECLARE m date;
        BEGIN
            FOR m IN SELECT DISTINCT month FROM record_months
                     UNION SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date LOOP
                EXECUTE format(
                    'CREATE TABLE audit.%I PARTITION OF audit.records FOR VALUES FROM (%L) TO (%L)',
                    'records_' || to_char(m, 'YYYY_MM'), m, (m + interval '1 month')::date
                );
            END LOOP;
        END $$
        """
    )
    op.execute(
        f"INSERT INTO audit.records ({COLUMNS}, month) SELECT {', '.join('f.' + c.strip() for c in COLUMNS.split(','))}, "  # noqa: S608
        "m.month FROM audit.records_flat f JOIN record_months m USING (leaf_index)"
    )
    _move_identity()
    op.execute("DROP TABLE audit.records_flat")
    op.add_column("chain_head", sa.Column("month", sa.Date(), nullable=True), schema="audit")
    op.execute("UPDATE audit.chain_head SET month = (SELECT max(month) FROM audit.records)")
    op.create_table(
        "retention_cuts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("start_leaf", sa.BigInteger(), nullable=False),
        sa.Column("end_leaf", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("frontier", postgresql.ARRAY(sa.LargeBinary()), nullable=False),
        sa.Column("checkpoint_size", sa.BigInteger(), nullable=False),
        sa.Column("archive", sa.Text(), nullable=False),
        sa.Column("archive_sha256", sa.String(length=64), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_cuts")),
        sa.UniqueConstraint("month", name=op.f("uq_retention_cuts_month")),
        schema="audit",
    )
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
    op.drop_table("retention_cuts", schema="audit")
    op.drop_column("chain_head", "month", schema="audit")
    _set_aside("records_parted")
    op.execute("CREATE TABLE audit.records (LIKE audit.records_parted INCLUDING DEFAULTS INCLUDING IDENTITY)")
    op.execute("ALTER TABLE audit.records DROP COLUMN month")
    op.execute("ALTER TABLE audit.records ADD CONSTRAINT pk_records PRIMARY KEY (seq)")
    op.execute("ALTER TABLE audit.records ADD CONSTRAINT uq_records_event_id UNIQUE (event_id)")
    op.execute("ALTER TABLE audit.records ADD CONSTRAINT uq_records_leaf_index UNIQUE (leaf_index)")
    _indexes()
    op.execute(f"INSERT INTO audit.records ({COLUMNS}) SELECT {COLUMNS} FROM audit.records_parted")  # noqa: S608
    _move_identity()
    op.execute("DROP TABLE audit.records_parted")  # and its partitions
    op.execute("UPDATE audit.dead_letters SET value = ''::bytea WHERE value IS NULL")  # withheld stays withheld
    op.alter_column("dead_letters", "value", existing_type=postgresql.BYTEA(), nullable=False, schema="audit")
    op.drop_column("dead_letters", "withheld", schema="audit")
