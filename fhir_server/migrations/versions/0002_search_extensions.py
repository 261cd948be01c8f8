"""search: composite groups, coordinates for near, reference URLs, prefix indexes on PostgreSQL

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_GROUPED = ("idx_token", "idx_string", "idx_date", "idx_number", "idx_quantity", "idx_uri", "idx_reference")


def upgrade() -> None:
    for table in _GROUPED:
        op.add_column(
            table,
            sa.Column(
                "grp", sa.Integer(), nullable=True, comment="composite parameters: the element the row belongs to"
            ),
        )
    op.create_table(
        "idx_coords",
        sa.Column("res_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=False, comment="WGS84 degrees"),
        sa.Column("longitude", sa.Float(), nullable=False, comment="WGS84 degrees"),
        sa.ForeignKeyConstraint(["res_pk"], ["resources.res_pk"], ondelete="CASCADE"),
    )
    with op.batch_alter_table("idx_coords", schema=None) as batch_op:
        batch_op.create_index("ix_coords_lookup", ["res_type", "param", "latitude", "longitude"], unique=False)
        batch_op.create_index("ix_coords_res", ["res_pk"], unique=False)
    with op.batch_alter_table("idx_reference", schema=None) as batch_op:
        batch_op.create_index("ix_reference_url", ["res_type", "param", "url"], unique=False)
    # gt/ge/sa on numbers and quantities compare the upper bound (without a unit for quantities).
    with op.batch_alter_table("idx_number", schema=None) as batch_op:
        batch_op.create_index("ix_number_high", ["res_type", "param", "high"], unique=False)
    with op.batch_alter_table("idx_quantity", schema=None) as batch_op:
        batch_op.create_index("ix_quantity_high", ["res_type", "param", "high"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_string_prefix",
            "idx_string",
            ["res_type", "param", "norm"],
            postgresql_ops={"norm": "text_pattern_ops"},
        )
        op.create_index(
            "ix_uri_prefix", "idx_uri", ["res_type", "param", "uri"], postgresql_ops={"uri": "text_pattern_ops"}
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_uri_prefix", table_name="idx_uri")
        op.drop_index("ix_string_prefix", table_name="idx_string")
    op.drop_index("ix_quantity_high", table_name="idx_quantity")
    op.drop_index("ix_number_high", table_name="idx_number")
    op.drop_index("ix_reference_url", table_name="idx_reference")
    op.drop_table("idx_coords")
    for table in _GROUPED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("grp")
