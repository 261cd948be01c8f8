"""hl7v2: received messages keyed by (MSH-4, MSH-10) for idempotency, dead letters with their raw bytes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hl7_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column(
            "sending_facility",
            sa.String(length=255),
            nullable=True,
            comment="MSH-4 as received (else MSH-3); NULL if unreadable",
        ),
        sa.Column("control_id", sa.String(length=255), nullable=True, comment="MSH-10; NULL when unreadable"),
        sa.Column("message_type", sa.String(length=32), nullable=True, comment="MSH-9 as TYPE^EVENT"),
        sa.Column(
            "received_at",
            sa.BigInteger(),
            nullable=False,
            comment="first receipt, microseconds since the Unix epoch (UTC)",
        ),
        sa.Column("status", sa.String(length=16), nullable=False, comment="applied or dead"),
        sa.Column("raw", sa.LargeBinary(), nullable=False, comment="the message bytes exactly as framed"),
        sa.Column(
            "charset", sa.String(length=32), nullable=True, comment="Python codec of the raw bytes (from MSH-18)"
        ),
        sa.Column(
            "digest",
            sa.String(length=64),
            nullable=True,
            comment="SHA-256 of the message without MSH-7, to tell resends",
        ),
        sa.Column("reason", sa.Text(), nullable=True, comment="why it could not be applied (the last failure)"),
        sa.Column("ack_code", sa.String(length=2), nullable=False, comment="MSA-1 of the last ACK sent"),
        sa.Column(
            "error_location", sa.String(length=64), nullable=True, comment="ERR-2 of the last failure, e.g. PID-8"
        ),
        sa.Column(
            "response", sa.Text(), nullable=True, comment="transaction-response summary: JSON [{status, location}]"
        ),
        sa.Column(
            "applied_at", sa.BigInteger(), nullable=True, comment="commit of its transaction, microseconds (UTC)"
        ),
        sa.Column("attempts", sa.Integer(), nullable=False, comment="receipts and replays so far"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sending_facility", "control_id", name="uq_hl7_messages_key"),
    )
    with op.batch_alter_table("hl7_messages", schema=None) as batch_op:
        batch_op.create_index("ix_hl7_messages_status", ["status", "received_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("hl7_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_hl7_messages_status")
    op.drop_table("hl7_messages")
