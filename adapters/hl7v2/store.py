"""Received HL7 v2 messages: the idempotency key (MSH-4, MSH-10: v2.5.1 §2.15.9) and dead letters with raw bytes.

One row per message key: `applied` once its transaction committed, `dead` while it cannot be applied. Every
function takes the unit-of-work connection; the caller commits (DESIGN.md rule 4).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    select,
    update,
)

from adapters.hl7v2.message import MessageHeader
from fhir_server.search.values import from_micros
from fhir_server.storage.tables import PK, metadata

__all__ = [
    "APPLIED",
    "DEAD",
    "MessageKey",
    "ReceivedMessage",
    "StaleDeadLetterError",
    "dead_letters",
    "find_message",
    "get_message",
    "hl7_messages",
    "mark_replayed",
    "record_applied",
    "record_dead",
]

APPLIED = "applied"
DEAD = "dead"
_KEY_LENGTH = 255
_TYPE_LENGTH = 32
_LOCATION_LENGTH = 64

hl7_messages = Table(
    "hl7_messages",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column(
        "sending_facility",
        String(_KEY_LENGTH),
        nullable=True,
        comment="MSH-4 as received (else MSH-3); NULL if unreadable",
    ),
    Column("control_id", String(_KEY_LENGTH), nullable=True, comment="MSH-10; NULL when unreadable"),
    Column("message_type", String(_TYPE_LENGTH), nullable=True, comment="MSH-9 as TYPE^EVENT"),
    Column("received_at", BigInteger, nullable=False, comment="first receipt, microseconds since the Unix epoch (UTC)"),
    Column("status", String(16), nullable=False, comment="applied or dead"),
    Column("raw", LargeBinary, nullable=False, comment="the message bytes exactly as framed"),
    Column("charset", String(32), nullable=True, comment="Python codec of the raw bytes (from MSH-18)"),
    Column("digest", String(64), nullable=True, comment="SHA-256 of the message without MSH-7, to tell resends"),
    Column("reason", Text, nullable=True, comment="why it could not be applied (the last failure)"),
    Column("ack_code", String(2), nullable=False, comment="MSA-1 of the last ACK sent"),
    Column("error_location", String(_LOCATION_LENGTH), nullable=True, comment="ERR-2 of the last failure, e.g. PID-8"),
    Column("response", Text, nullable=True, comment="transaction-response summary: JSON [{status, location}]"),
    Column("applied_at", BigInteger, nullable=True, comment="commit of its transaction, microseconds (UTC)"),
    Column("attempts", Integer, nullable=False, comment="receipts and replays so far"),
    UniqueConstraint("sending_facility", "control_id", name="uq_hl7_messages_key"),
    Index("ix_hl7_messages_status", "status", "received_at"),
)


@dataclass(frozen=True)
class ReceivedMessage:
    """One row of `hl7_messages`."""

    id: int
    sending_facility: str | None
    control_id: str | None
    message_type: str | None
    received_at: int
    status: str
    raw: bytes
    charset: str | None
    digest: str | None
    reason: str | None
    ack_code: str
    error_location: str | None
    response: str | None
    applied_at: int | None
    attempts: int

    @property
    def received(self) -> datetime:
        return from_micros(self.received_at)

    @property
    def applied(self) -> datetime | None:
        return None if self.applied_at is None else from_micros(self.applied_at)

    def text(self) -> str:
        """The raw message decoded as received (undecodable bytes shown as U+FFFD)."""
        return self.raw.decode(self.charset or "utf-8", errors="replace")


@dataclass(frozen=True)
class MessageKey:
    """What identifies and describes a message before it is stored; facility and control id may be unknown."""

    sending_facility: str | None
    control_id: str | None
    message_type: str | None
    charset: str | None
    digest: str | None

    @classmethod
    def for_header(cls, header: MessageHeader | None, digest: str | None) -> MessageKey:
        """The key of a parsed (or partly readable) message; values cut to the column sizes."""
        if header is None:
            return cls(None, None, None, None, digest)
        return cls(
            _text(header.sending_facility or header.sending_application)[:_KEY_LENGTH],
            _text(header.control_id)[:_KEY_LENGTH],
            _text(header.message_code)[:_TYPE_LENGTH],
            header.codec,
            digest,
        )


def _now_micros() -> int:
    return time.time_ns() // 1000


def find_message(conn: Connection, *, sending_facility: str, control_id: str) -> ReceivedMessage | None:
    """The message stored under an idempotency key (MSH-4, MSH-10), applied or dead."""
    m = hl7_messages.c
    row = conn.execute(
        select(hl7_messages).where(m.sending_facility == sending_facility, m.control_id == control_id)
    ).first()
    return None if row is None else ReceivedMessage(**row._mapping)


def get_message(conn: Connection, message_id: int) -> ReceivedMessage | None:
    row = conn.execute(select(hl7_messages).where(hl7_messages.c.id == message_id)).first()
    return None if row is None else ReceivedMessage(**row._mapping)


def dead_letters(conn: Connection, *, limit: int = 100) -> list[ReceivedMessage]:
    """Messages that could not be applied, oldest first."""
    m = hl7_messages.c
    query = select(hl7_messages).where(m.status == DEAD).order_by(m.received_at, m.id).limit(limit)
    return [ReceivedMessage(**row._mapping) for row in conn.execute(query)]


def record_applied(
    conn: Connection, key: MessageKey, raw: bytes, *, response: str, previous: ReceivedMessage | None = None
) -> int:
    """Store a message whose transaction runs in this unit of work; a dead `previous` row becomes applied.

    A concurrent writer of the same key makes the insert fail (unique key) or the update miss; the caller's unit
    of work then rolls back and a retry finds the message applied.
    """
    now = _now_micros()
    if previous is not None:
        return mark_replayed(conn, previous.id, raw=raw, digest=key.digest, response=response, now=now)
    values = _key_values(key) | {
        "received_at": now,
        "status": APPLIED,
        "raw": raw,
        "ack_code": "AA",
        "response": response,
        "applied_at": now,
        "attempts": 1,
    }
    return conn.execute(insert(hl7_messages).values(**values).returning(hl7_messages.c.id)).scalar_one()


def mark_replayed(
    conn: Connection, message_id: int, *, raw: bytes, digest: str | None, response: str, now: int | None = None
) -> int:
    """A dead letter applied at last (a resend or `hie hl7 replay`); raise StaleDeadLetterError if it is not dead."""
    m = hl7_messages.c
    now = now or _now_micros()
    result = conn.execute(
        update(hl7_messages)
        .where(m.id == message_id, m.status == DEAD)
        .values(
            status=APPLIED,
            raw=raw,
            digest=digest,
            ack_code="AA",
            error_location=None,
            response=response,
            applied_at=now,
            attempts=m.attempts + 1,
        )
    )
    if result.rowcount != 1:
        raise StaleDeadLetterError(f"HL7 message {message_id} is no longer a dead letter")
    return message_id


def record_dead(
    conn: Connection,
    key: MessageKey,
    raw: bytes,
    *,
    reason: str,
    ack_code: str,
    error_location: str,
    previous: ReceivedMessage | None = None,
) -> int:
    """Keep a message that could not be applied, or update the dead letter it repeats (`previous`)."""
    failure = {
        "reason": _text(reason),
        "ack_code": ack_code,
        "error_location": _text(error_location)[:_LOCATION_LENGTH] or None,
    }
    if previous is not None:
        m = hl7_messages.c
        result = conn.execute(
            update(hl7_messages)
            .where(m.id == previous.id, m.status == DEAD)
            .values(raw=raw, digest=key.digest, attempts=m.attempts + 1, **failure)
        )
        if result.rowcount != 1:
            raise StaleDeadLetterError(f"HL7 message {previous.id} is no longer a dead letter")
        return previous.id
    values = _key_values(key) | failure | {"received_at": _now_micros(), "status": DEAD, "raw": raw, "attempts": 1}
    return conn.execute(insert(hl7_messages).values(**values).returning(hl7_messages.c.id)).scalar_one()


class StaleDeadLetterError(Exception):
    """The dead letter was applied (or changed) by a concurrent writer since it was read."""


def _text(value: str) -> str:
    """Text PostgreSQL can store: NUL characters written as an escape."""
    return value.replace("\x00", "\\x00")


def _key_values(key: MessageKey) -> dict[str, str | None]:
    return {
        "sending_facility": key.sending_facility,
        "control_id": key.control_id,
        "message_type": key.message_type,
        "charset": key.charset,
        "digest": key.digest,
    }
