"""audit: the append-only, hash-chained audit log

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TABLES = ("audit_log", "audit_patients")

_PG_FUNCTION = """
CREATE FUNCTION hie_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False, comment="position in the chain"),
        sa.Column("recorded", sa.BigInteger(), nullable=False, comment="microseconds since the Unix epoch (UTC)"),
        sa.Column("client_id", sa.String(length=128), nullable=True),
        sa.Column("organization", sa.String(length=128), nullable=True),
        sa.Column("action", sa.String(length=1), nullable=False, comment="C, R, U, D or E"),
        sa.Column("outcome", sa.String(length=2), nullable=False, comment="0, 4, 8 or 12"),
        sa.Column("event", sa.Text(), nullable=False, comment="the AuditEvent as canonical JSON (sorted keys)"),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False, comment="SHA-256 of prev_hash and event"),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_audit_log_recorded", "audit_log", ["recorded"])
    op.create_table(
        "audit_patients",
        sa.Column("patient", sa.String(length=80), nullable=False, comment="Patient/{id}"),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("patient", "seq", name="pk_audit_patients"),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        for table in _TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION hie_audit_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION hie_audit_append_only()"
            )
    else:
        for table in _TABLES:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: {verb} on {table} refused'); END"
                )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table in _TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS hie_audit_append_only()")
    else:
        for table in _TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    op.drop_table("audit_patients")
    op.drop_index("ix_audit_log_recorded", table_name="audit_log")
    op.drop_table("audit_log")
