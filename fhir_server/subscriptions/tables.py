"""Delivery state of Subscriptions: one row per notification owed to a subscriber, and a lease per subscriber."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from fhir_server.storage.tables import PK, metadata

deliveries = Table(
    "subscription_deliveries",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True, comment="delivery order within a subscription"),
    Column("subscription_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False, comment="the outbox event notified"),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("method", String(8), nullable=False),
    Column("channel", String(16), nullable=False, comment="rest-hook or websocket"),
    Column("status", String(12), nullable=False, comment="pending, delivered, failed or skipped"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", BigInteger, nullable=False, comment="microseconds since the epoch"),
    Column("created_at", BigInteger, nullable=False),
    Column("delivered_at", BigInteger, nullable=True),
    Column("last_error", Text, nullable=True),
    Index("ix_deliveries_queue", "subscription_id", "status", "id"),
    Index("ix_deliveries_due", "status", "next_attempt_at"),
)

leases = Table(
    "subscription_leases",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("owner", String(64), nullable=True),
    Column("lease_until", BigInteger, nullable=False, default=0, comment="microseconds since the epoch"),
)
