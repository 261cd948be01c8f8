"""search: date rows read by resource and parameter from the index alone

``ix_date_res_param (res_pk, param, low, high)`` replaces ``ix_date_res (res_pk)``: a date criterion tested on
each match of a leading criterion (``code=…&date=ge…&date=lt…``) reads its range from the index instead of
every date row of the resource, and deletes by ``res_pk`` use the same index.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28 16:45:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_date_res_param", "idx_date", ["res_pk", "param", "low", "high"])
    op.drop_index("ix_date_res", table_name="idx_date")


def downgrade() -> None:
    op.create_index("ix_date_res", "idx_date", ["res_pk"])
    op.drop_index("ix_date_res_param", table_name="idx_date")
