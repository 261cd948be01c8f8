"""initial schema: resources, versions, search indexes

Revision ID: 0001
Revises:
Create Date: 2026-11-28 11:09:18.351509
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column("res_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "ts", sa.BigInteger(), nullable=False, comment="last update, microseconds since the Unix epoch (UTC)"
        ),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("res_pk"),
        sa.UniqueConstraint("res_type", "res_id", name="uq_resources_type_id"),
    )
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.create_index("ix_resources_type_ts", ["res_type", "ts"], unique=False)

    op.create_table(
        "idx_date",
        sa.Column("res_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("low", sa.BigInteger(), nullable=False, comment="microseconds since the epoch, inclusive"),
        sa.Column("high", sa.BigInteger(), nullable=False, comment="microseconds since the epoch, inclusive"),
        sa.ForeignKeyConstraint(["res_pk"], ["resources.res_pk"], ondelete="CASCADE"),
    )
    with op.batch_alter_table("idx_date", schema=None) as batch_op:
        batch_op.create_index("ix_date_high", ["res_type", "param", "high"], unique=False)
        batch_op.create_index("ix_date_low", ["res_type", "param", "low"], unique=False)
        batch_op.create_index("ix_date_res", ["res_pk"], unique=False)

    op.create_table(
        "idx_number",
        sa.Column("res_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["res_pk"], ["resources.res_pk"], ondelete="CASCADE"),
    )
    with op.batch_alter_table("idx_number", schema=None) as batch_op:
        batch_op.create_index("ix_number_lookup", ["res_type", "param", "low"], unique=False)
        batch_op.create_index("ix_number_res", ["res_pk"], unique=False)

    op.create_table(
        "idx_quantity",
        sa.Column("res_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["res_pk"], ["resources.res_pk"], ondelete="CASCADE"),
    )
    with op.batch_alter_table("idx_quantity", schema=None) as batch_op:
        batch_op.create_index("ix_quantity_lookup", ["res_type", "param", "code", "low"], unique=False)
        batch_op.create_index("ix_quantity_res", ["res_pk"], unique=False)

    op.create_table(
        "idx_reference",
        sa.Column("res_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("target_type", sa.String(length=64), nullable=True),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column("url", sa.Text(), nullable=True, comment="absolute or canonical reference that is not local"),
        sa.ForeignKeyConstraint(["res_pk"], ["resources.res_pk"], ondelete="CASCADE"),
    )
    with op.batch_alter_table("idx_reference", schema=None) as batch_op:
        batch_op.create_index("ix_reference_lookup", ["res_type", "param", "target_id"], unique=False)
        batch_op.create_index("ix_reference_res", ["res_pk"], unique=False)
        batch_op.create_index("ix_reference_target", ["target_type", "target_id", "param", "res_type"], unique=False)

    op.create_table(
        "idx_string",
        sa.Column("res_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("norm", sa.Text(), nullable=False, comment="case- and accent-folded value for prefix match"),
        sa.Column("exact", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["res_pk"], ["resources.res_pk"], ondelete="CASCADE"),
    )
    with op.batch_alter_table("idx_string", schema=None) as batch_op:
        batch_op.create_index("ix_string_lookup", ["res_type", "param", "norm"], unique=False)
        batch_op.create_index("ix_string_res", ["res_pk"], unique=False)

    op.create_table(
        "idx_token",
        sa.Column("res_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["res_pk"], ["resources.res_pk"], ondelete="CASCADE"),
    )
    with op.batch_alter_table("idx_token", schema=None) as batch_op:
        batch_op.create_index("ix_token_lookup", ["res_type", "param", "code", "system"], unique=False)
        batch_op.create_index("ix_token_res", ["res_pk"], unique=False)

    op.create_table(
        "idx_uri",
        sa.Column("res_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["res_pk"], ["resources.res_pk"], ondelete="CASCADE"),
    )
    with op.batch_alter_table("idx_uri", schema=None) as batch_op:
        batch_op.create_index("ix_uri_lookup", ["res_type", "param", "uri"], unique=False)
        batch_op.create_index("ix_uri_res", ["res_pk"], unique=False)

    op.create_table(
        "resource_versions",
        sa.Column("res_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False, comment="POST, PUT, PATCH or DELETE"),
        sa.Column("body", sa.LargeBinary(), nullable=True, comment="canonical JSON; NULL for a delete tombstone"),
        sa.ForeignKeyConstraint(["res_pk"], ["resources.res_pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("res_pk", "version", name="pk_resource_versions"),
    )
    with op.batch_alter_table("resource_versions", schema=None) as batch_op:
        batch_op.create_index("ix_versions_ts", ["ts"], unique=False)
        batch_op.create_index("ix_versions_type_ts", ["res_type", "ts"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("resource_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_versions_type_ts")
        batch_op.drop_index("ix_versions_ts")

    op.drop_table("resource_versions")
    with op.batch_alter_table("idx_uri", schema=None) as batch_op:
        batch_op.drop_index("ix_uri_res")
        batch_op.drop_index("ix_uri_lookup")

    op.drop_table("idx_uri")
    with op.batch_alter_table("idx_token", schema=None) as batch_op:
        batch_op.drop_index("ix_token_res")
        batch_op.drop_index("ix_token_lookup")

    op.drop_table("idx_token")
    with op.batch_alter_table("idx_string", schema=None) as batch_op:
        batch_op.drop_index("ix_string_res")
        batch_op.drop_index("ix_string_lookup")

    op.drop_table("idx_string")
    with op.batch_alter_table("idx_reference", schema=None) as batch_op:
        batch_op.drop_index("ix_reference_target")
        batch_op.drop_index("ix_reference_res")
        batch_op.drop_index("ix_reference_lookup")

    op.drop_table("idx_reference")
    with op.batch_alter_table("idx_quantity", schema=None) as batch_op:
        batch_op.drop_index("ix_quantity_res")
        batch_op.drop_index("ix_quantity_lookup")

    op.drop_table("idx_quantity")
    with op.batch_alter_table("idx_number", schema=None) as batch_op:
        batch_op.drop_index("ix_number_res")
        batch_op.drop_index("ix_number_lookup")

    op.drop_table("idx_number")
    with op.batch_alter_table("idx_date", schema=None) as batch_op:
        batch_op.drop_index("ix_date_res")
        batch_op.drop_index("ix_date_low")
        batch_op.drop_index("ix_date_high")

    op.drop_table("idx_date")
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.drop_index("ix_resources_type_ts")

    op.drop_table("resources")
