"""authentication: clients registered for one resident (patient launch context)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28 16:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "auth_clients",
        sa.Column(
            "patient",
            sa.String(length=128),
            nullable=True,
            comment="Patient/{id} of the resident a resident app acts for",
        ),
    )


def downgrade() -> None:
    with op.batch_alter_table("auth_clients") as batch_op:
        batch_op.drop_column("patient")
