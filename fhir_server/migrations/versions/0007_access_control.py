"""access control: resource ownership by institution and consent lookups

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Existing rows keep NULL: owned by the exchange itself, readable by institutions under consent.
    op.add_column(
        "resources",
        sa.Column(
            "owner_org",
            sa.String(length=128),
            nullable=True,
            comment="Organization/{id} that created it; NULL: the exchange",
        ),
    )
    op.create_index("ix_resources_owner", "resources", ["owner_org", "res_type"])
    op.create_table(
        "consent_grants",
        sa.Column("consent_pk", _PK, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False, comment="id of the Patient the Consent is about"),
        sa.Column("effect", sa.String(length=8), nullable=False, comment="permit or deny"),
        sa.Column(
            "depth", sa.Integer(), nullable=False, comment="-1 opt-in base, 0 root provision, 1+ nested provisions"
        ),
        sa.Column(
            "org",
            sa.String(length=128),
            nullable=True,
            comment="Organization/{id} the rule is for; NULL: every institution",
        ),
        sa.Column(
            "res_type", sa.String(length=64), nullable=True, comment="resource type (provision.class); NULL: every type"
        ),
        sa.Column("label_system", sa.Text(), nullable=True),
        sa.Column(
            "label_code", sa.Text(), nullable=True, comment="security label (provision.securityLabel); NULL: any"
        ),
        sa.Column("code_system", sa.Text(), nullable=True),
        sa.Column("code", sa.Text(), nullable=True, comment="clinical code (provision.code); NULL: any"),
        sa.Column(
            "purpose", sa.String(length=64), nullable=True, comment="PurposeOfUse code (provision.purpose); NULL: any"
        ),
        sa.Column("low", sa.BigInteger(), nullable=True, comment="provision.period start, microseconds; NULL: open"),
        sa.Column("high", sa.BigInteger(), nullable=True, comment="provision.period end, microseconds; NULL: open"),
        sa.ForeignKeyConstraint(["consent_pk"], ["resources.res_pk"], ondelete="CASCADE"),
    )
    op.create_index("ix_consent_grants_patient", "consent_grants", ["patient_id", "effect"])
    op.create_index("ix_consent_grants_consent", "consent_grants", ["consent_pk"])
    op.add_column(
        "export_jobs",
        sa.Column(
            "requester", sa.Text(), nullable=True, comment="access of the requesting client as JSON; NULL: unrestricted"
        ),
    )


def downgrade() -> None:
    with op.batch_alter_table("export_jobs") as batch:
        batch.drop_column("requester")
    op.drop_index("ix_consent_grants_consent", table_name="consent_grants")
    op.drop_index("ix_consent_grants_patient", table_name="consent_grants")
    op.drop_table("consent_grants")
    op.drop_index("ix_resources_owner", table_name="resources")
    with op.batch_alter_table("resources") as batch:
        batch.drop_column("owner_org")
