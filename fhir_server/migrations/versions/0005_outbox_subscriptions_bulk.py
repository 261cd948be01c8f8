"""events: the outbox, subscription deliveries and leases, bulk export jobs and files, import progress

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-29 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("seq", _PK, autoincrement=True, nullable=False),
        sa.Column("res_pk", sa.BigInteger(), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False, comment="POST, PUT, PATCH or DELETE"),
        sa.Column(
            "ts", sa.BigInteger(), nullable=False, comment="the version's lastUpdated, microseconds since the epoch"
        ),
        sa.Column("matched", sa.Boolean(), nullable=False, comment="seen by the subscription matcher"),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index(
        "ix_outbox_unmatched",
        "outbox",
        ["seq"],
        postgresql_where=sa.text("NOT matched"),
        sqlite_where=sa.text("NOT matched"),
    )
    op.create_index("ix_outbox_ts", "outbox", ["ts"])

    op.create_table(
        "subscription_deliveries",
        sa.Column("id", _PK, autoincrement=True, nullable=False, comment="delivery order within a subscription"),
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False, comment="the outbox event notified"),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False, comment="rest-hook or websocket"),
        sa.Column("status", sa.String(length=12), nullable=False, comment="pending, delivered, failed or skipped"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False, comment="microseconds since the epoch"),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_deliveries_queue", "subscription_deliveries", ["subscription_id", "status", "id"])
    op.create_index("ix_deliveries_due", "subscription_deliveries", ["status", "next_attempt_at"])

    op.create_table(
        "subscription_leases",
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.BigInteger(), nullable=False, comment="microseconds since the epoch"),
        sa.PrimaryKeyConstraint("subscription_id"),
    )

    op.create_index("ix_resources_type_pk", "resources", ["res_type", "res_pk"])

    op.create_table(
        "export_jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column(
            "status",
            sa.String(length=12),
            nullable=False,
            comment="queued, running, complete, error, cancelled or expired",
        ),
        sa.Column("level", sa.String(length=8), nullable=False, comment="system, patient or group"),
        sa.Column("group_id", sa.String(length=64), nullable=True),
        sa.Column("types", sa.Text(), nullable=True, comment="JSON array of _type, NULL for every type"),
        sa.Column("since", sa.BigInteger(), nullable=True, comment="_since, microseconds since the epoch"),
        sa.Column("type_filters", sa.Text(), nullable=True, comment="JSON array of _typeFilter queries"),
        sa.Column("request_url", sa.Text(), nullable=False),
        sa.Column("transaction_time", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("completed_at", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("progress", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True, comment="the worker running the job"),
        sa.Column("lease_until", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_export_jobs_status", "export_jobs", ["status", "lease_until"])

    op.create_table(
        "export_files",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("last_pk", sa.BigInteger(), nullable=False, comment="the file holds resources up to this res_pk"),
        sa.ForeignKeyConstraint(["job_id"], ["export_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "name", name="pk_export_files"),
    )

    op.create_table(
        "import_sources",
        sa.Column("source", sa.String(length=1024), nullable=False, comment="absolute path of an imported file"),
        sa.Column(
            "fingerprint", sa.String(length=64), nullable=False, comment="size and modification time at the start"
        ),
        sa.Column("done_bytes", sa.BigInteger(), nullable=False, comment="bytes of the file done"),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("source"),
    )

    op.create_table(
        "import_rejects",
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column(
            "record", sa.Integer(), nullable=False, comment="line of an NDJSON file, entry of a Bundle (1-based)"
        ),
        sa.Column("res_type", sa.String(length=64), nullable=True),
        sa.Column("res_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("source", "record", name="pk_import_rejects"),
    )


def downgrade() -> None:
    op.drop_table("import_rejects")
    op.drop_table("import_sources")
    op.drop_table("export_files")
    op.drop_index("ix_export_jobs_status", table_name="export_jobs")
    op.drop_table("export_jobs")
    op.drop_index("ix_resources_type_pk", table_name="resources")
    op.drop_table("subscription_leases")
    op.drop_index("ix_deliveries_due", table_name="subscription_deliveries")
    op.drop_index("ix_deliveries_queue", table_name="subscription_deliveries")
    op.drop_table("subscription_deliveries")
    op.drop_index("ix_outbox_ts", table_name="outbox")
    op.drop_index("ix_outbox_unmatched", table_name="outbox")
    op.drop_table("outbox")
