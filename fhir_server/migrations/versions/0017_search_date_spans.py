"""search: the reach of each date parameter, so that a bounded date window can lead a search

``search_date_spans`` keeps per ``param_id`` how far a resource's date rows of the parameter reach (its greatest
bound less its least; resources with an open-ended row left out), the bound ``search.date_spans`` describes. The
upgrade fills it from the stored rows; later writes raise it in their own transactions. ``ix_date_low`` gains
``res_pk``, so that a window is read from the index alone.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-28 23:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fhir_server.search.date_spans import forget
from fhir_server.search.index import UNBOUNDED_HIGH, UNBOUNDED_LOW

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_BACKFILL = """
INSERT INTO search_date_spans (param_id, span)
SELECT param_id, MAX(reach) FROM (
    SELECT param_id,
           MAX(CASE WHEN low > high THEN low ELSE high END) - MIN(CASE WHEN low < high THEN low ELSE high END) AS reach
    FROM idx_date
    GROUP BY res_pk, param_id
    HAVING SUM(CASE WHEN low = :open_low OR high = :open_high THEN 1 ELSE 0 END) = 0
) resource_reach
GROUP BY param_id
"""


def upgrade() -> None:
    bind = op.get_bind()
    forget(bind)
    op.create_table(
        "search_date_spans",
        sa.Column("param_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("span", sa.BigInteger(), nullable=False),
    )
    bind.execute(sa.text(_BACKFILL), {"open_low": UNBOUNDED_LOW, "open_high": UNBOUNDED_HIGH})
    op.drop_index("ix_date_low", table_name="idx_date")
    op.create_index("ix_date_low", "idx_date", ["param_id", "low", "res_pk"])


def downgrade() -> None:
    forget(op.get_bind())
    op.drop_index("ix_date_low", table_name="idx_date")
    op.create_index("ix_date_low", "idx_date", ["param_id", "low"])
    op.drop_table("search_date_spans")
