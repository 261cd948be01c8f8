"""authentication: registered clients and their keys

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_clients",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("organization", sa.String(length=128), nullable=True, comment="Organization/{id} of the institution"),
        sa.Column("scopes", sa.Text(), nullable=False, comment="the SMART scopes it may be granted, space separated"),
        sa.Column(
            "secret_hash", sa.Text(), nullable=True, comment="scrypt of the client_secret_basic secret, with its salt"
        ),
        sa.Column("jwks", sa.Text(), nullable=True, comment="the registered JSON Web Key Set for private_key_jwt"),
        sa.Column("jwks_url", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column(
            "exchange", sa.Boolean(), nullable=False, comment="acts for the exchange itself: no institution filter"
        ),
        sa.Column("created_at", sa.BigInteger(), nullable=False, comment="microseconds since the Unix epoch (UTC)"),
        sa.PrimaryKeyConstraint("client_id"),
    )
    op.create_table(
        "auth_assertion_jtis",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("jti", sa.String(length=255), nullable=False),
        sa.Column(
            "expires_at", sa.BigInteger(), nullable=False, comment="the assertion's exp, seconds since the epoch"
        ),
        sa.PrimaryKeyConstraint("client_id", "jti", name="pk_auth_assertion_jtis"),
    )
    op.create_index("ix_auth_assertion_jtis_expires", "auth_assertion_jtis", ["expires_at"])
    op.create_table(
        "auth_signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("alg", sa.String(length=16), nullable=False),
        sa.Column("private_pem", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("kid"),
    )


def downgrade() -> None:
    op.drop_table("auth_signing_keys")
    op.drop_index("ix_auth_assertion_jtis_expires", table_name="auth_assertion_jtis")
    op.drop_table("auth_assertion_jtis")
    op.drop_table("auth_clients")
