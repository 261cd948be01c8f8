"""audit spool: how far each process's spool of audit events is written to the chain

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-28 16:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_spool",
        sa.Column("spool", sa.String(length=100), nullable=False, comment="a process's spool name"),
        sa.Column("segment", sa.Integer(), nullable=False, comment="the last segment whose events are in the chain"),
        sa.PrimaryKeyConstraint("spool"),
    )


def downgrade() -> None:
    op.drop_table("audit_spool")
