"""master patient index: golden records, links and blocking keys

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "mpi_goldens",
        sa.Column("golden_id", sa.String(64), nullable=False, comment="id of the golden (master) Patient"),
        sa.Column(
            "active", sa.Boolean(), nullable=False, comment="False once merged into another golden or left empty"
        ),
        sa.PrimaryKeyConstraint("golden_id"),
    )
    op.create_table(
        "mpi_records",
        sa.Column("source_id", sa.String(64), nullable=False, comment="id of an institution's (source) Patient"),
        sa.Column("golden_id", sa.String(64), nullable=False),
        sa.Column("link_kind", sa.String(16), nullable=False, comment="auto, new, review, manual or merged"),
        sa.Column(
            "active", sa.Boolean(), nullable=False, comment="False when merged away (no longer a match candidate)"
        ),
        sa.Column(
            "demographics", sa.Text(), nullable=False, comment="JSON: the Patient's identity elements, for scoring"
        ),
        sa.Column("updated_at", sa.BigInteger(), nullable=False, comment="microseconds since the Unix epoch (UTC)"),
        sa.PrimaryKeyConstraint("source_id"),
    )
    op.create_index("ix_mpi_records_golden", "mpi_records", ["golden_id"])
    op.create_table(
        "mpi_blocking_keys",
        sa.Column(
            "key_hash", sa.BigInteger(), nullable=False, comment="64-bit hash of a blocking key (rid:…, tel:…, …)"
        ),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("key_hash", "source_id", name="pk_mpi_blocking_keys"),
    )
    op.create_index("ix_mpi_blocking_keys_source", "mpi_blocking_keys", ["source_id"])
    op.create_table(
        "mpi_distinct",
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("golden_id", sa.String(64), nullable=False),
        sa.Column("decided_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("source_id", "golden_id", name="pk_mpi_distinct"),
    )
    op.create_table(
        "mpi_merges",
        sa.Column("id", _PK, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False, comment="source (two records) or golden (two goldens)"),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("target_id", sa.String(64), nullable=False),
        sa.Column("state", sa.Text(), nullable=False, comment="JSON: versions before the merge and what it moved"),
        sa.Column("merged_at", sa.BigInteger(), nullable=False),
        sa.Column("undone_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_mpi_merges_source", "mpi_merges", ["source_id"])


def downgrade() -> None:
    op.drop_index("ix_mpi_merges_source", table_name="mpi_merges")
    op.drop_table("mpi_merges")
    op.drop_table("mpi_distinct")
    op.drop_index("ix_mpi_blocking_keys_source", table_name="mpi_blocking_keys")
    op.drop_table("mpi_blocking_keys")
    op.drop_index("ix_mpi_records_golden", table_name="mpi_records")
    op.drop_table("mpi_records")
    op.drop_table("mpi_goldens")
