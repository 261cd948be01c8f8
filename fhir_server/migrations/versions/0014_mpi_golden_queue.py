"""master patient index: goldens to rebuild after commit

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-28 16:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "mpi_golden_queue",
        sa.Column("id", _PK, autoincrement=True, nullable=False),
        sa.Column("golden_id", sa.String(64), nullable=False, comment="golden Patient whose records changed"),
        sa.Column("queued_at", sa.BigInteger(), nullable=False, comment="microseconds since the Unix epoch (UTC)"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_mpi_golden_queue_golden", "mpi_golden_queue", ["golden_id"])


def downgrade() -> None:
    op.drop_index("ix_mpi_golden_queue_golden", table_name="mpi_golden_queue")
    op.drop_table("mpi_golden_queue")
