"""The hash chain of the audit log: append events in one linear order, and verify it.

Each row's ``hash`` is SHA-256 over the previous row's hash (hex, ASCII) followed by the row's AuditEvent as
canonical JSON (UTF-8, sorted keys, ``id`` = the row's ``seq``); the first row follows 64 zeros. Appends are
serialised across processes (``pg_advisory_xact_lock`` on PostgreSQL, the ``BEGIN IMMEDIATE`` write transaction
on SQLite) and read the last hash inside that lock, so several workers keep one chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, func, select, text

from fhir_server.audit.events import CLIENT_SYSTEM
from fhir_server.repository import instant
from fhir_server.storage.engine import is_postgres
from fhir_server.storage.tables import audit_log, audit_patients

GENESIS = "0" * 64
ADVISORY_LOCK = 0x4849455F41554454
"""``pg_advisory_xact_lock`` key of the audit chain ("HIE_AUDT")."""


@dataclass(frozen=True)
class Entry:
    """An event waiting for its place in the chain."""

    recorded: int
    """Microseconds since the Unix epoch (UTC), the event's ``recorded``."""
    event: dict[str, Any] | None
    """The AuditEvent without ``id``: ``append`` sets it (in place: the dict is the entry's own). None when
    ``parts`` hold it already serialised."""
    columns: tuple[str | None, str | None, str, str] | None = None
    """``client_id``, ``organization``, ``action``, ``outcome`` when the caller knows them (as ``event_columns``
    would derive them); derived from the event otherwise."""
    patients: list[str] | None = None
    """The event's residents when the caller knows them (as ``event_patients`` would list them)."""
    parts: tuple[bytes, bytes] | None = None
    """The event's canonical JSON around its ``id`` (``events.canonical_parts``), with ``columns`` and
    ``patients``: then ``event`` is not serialised again."""


@dataclass(frozen=True)
class BrokenLink:
    """The first row of the chain that does not check out."""

    seq: int
    problem: str
    expected: str
    found: str


def canonical(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: str, body: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + body).hexdigest()


def event_columns(event: dict[str, Any]) -> dict[str, Any]:
    """The indexed columns of a row, all derived from its event (so ``verify`` can check them too)."""
    client = organization = None
    for agent in event.get("agent", ()):
        who = agent.get("who", {})
        identifier = who.get("identifier", {})
        if client is None and agent.get("requestor") and identifier.get("system") == CLIENT_SYSTEM:
            client = identifier.get("value")
        if organization is None and str(who.get("reference", "")).startswith("Organization/"):
            organization = who["reference"]
    return {
        "client_id": client,
        "organization": organization,
        "action": event.get("action", "E"),
        "outcome": event.get("outcome", "0"),
    }


def event_patients(event: dict[str, Any]) -> list[str]:
    """The residents an event is about: its entities in role 1 (Patient)."""
    found: list[str] = []
    for entity in event.get("entity", ()):
        reference = entity.get("what", {}).get("reference")
        if entity.get("role", {}).get("code") == "1" and reference and reference not in found:
            found.append(reference)
    return found


_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


def lock_chain(conn: Connection) -> None:
    """Take the chain's writer lock for the rest of the transaction."""
    if is_postgres(conn):
        conn.execute(_LOCK, {"key": ADVISORY_LOCK})


_TABLES = {audit_log.name: audit_log, audit_patients.name: audit_patients}
_INSERT_COLUMNS = ("seq", "recorded", "client_id", "organization", "action", "outcome", "event", "prev_hash", "hash")
_INSERT_TYPES = ("bigint", "bigint", "text", "text", "text", "text", "text", "text", "text")


def _insert(
    conn: Connection, table: str, columns: tuple[str, ...], types: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    """Insert plain tuples without per-row SQLAlchemy processing: SQLite's C ``executemany``; on PostgreSQL one
    ``INSERT … SELECT FROM unnest(arrays)`` (one statement and round trip per batch, one parameter per column)."""
    names = ", ".join(columns)
    if conn.dialect.paramstyle == "qmark":
        marks = ", ".join("?" for _ in columns)
        conn.exec_driver_sql(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
        return
    if conn.dialect.driver != "psycopg":  # another driver: the portable executemany
        conn.execute(_TABLES[table].insert(), [dict(zip(columns, row, strict=True)) for row in rows])
        return
    arrays = ", ".join(f"%b::{kind}[]" for kind in types)  # binary: no text escaping of the JSON
    conn.exec_driver_sql(
        f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays})",
        tuple(list(column) for column in zip(*rows, strict=True)),
    )


_LAST = select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
"""The chain's last row, built once (its SQL and cache key are then computed once, not per batch)."""


def append(conn: Connection, entries: list[Entry]) -> list[int]:
    """Give each entry the next ``seq`` and its chained hash, and insert them (one statement per table and
    batch); the ``seq`` values, in order."""
    if not entries:
        return []
    lock_chain(conn)
    last = conn.execute(_LAST).first()
    seq, prev = (last.seq, last.hash) if last is not None else (0, GENESIS)
    first = seq + 1
    rows: list[tuple[Any, ...]] = []
    patient_rows: list[tuple[str, int]] = []
    sha256 = hashlib.sha256
    dumps, sort_keys = orjson.dumps, orjson.OPT_SORT_KEYS
    for entry in entries:
        seq += 1
        columns, patients = entry.columns, entry.patients
        if entry.parts is not None and columns is not None and patients is not None:
            head, tail = entry.parts
            body = b'%s"id":"%d",%s' % (head, seq, tail)
        else:
            event = entry.event
            assert event is not None, "an entry holds its event or its serialised parts"
            event["id"] = str(seq)
            body = dumps(event, option=sort_keys)
            if columns is None:
                derived = event_columns(event)
                columns = (derived["client_id"], derived["organization"], derived["action"], derived["outcome"])
            if patients is None:
                patients = event_patients(event)
        digest = sha256(prev.encode("ascii") + body).hexdigest()
        rows.append((seq, entry.recorded, *columns, body.decode(), prev, digest))
        patient_rows.extend((patient, seq) for patient in patients)
        prev = digest
    _insert(conn, audit_log.name, _INSERT_COLUMNS, _INSERT_TYPES, rows)
    if patient_rows:
        _insert(conn, audit_patients.name, ("patient", "seq"), ("text", "bigint"), patient_rows)
    return list(range(first, seq + 1))


def verify(
    engine: Engine, *, batch: int = 2000, progress: Callable[[int, int], None] | None = None
) -> tuple[int, str, BrokenLink | None]:
    """Walk the chain from the first row: (rows checked, the last good hash, the first broken link or None)."""
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(audit_log)).scalar_one()
        prev, expected_seq, checked = GENESIS, 1, 0
        while True:
            rows = conn.execute(
                select(audit_log).where(audit_log.c.seq >= expected_seq).order_by(audit_log.c.seq).limit(batch)
            ).all()
            if not rows:
                break
            patients: dict[int, set[str]] = {}
            listed = select(audit_patients).where(audit_patients.c.seq.between(rows[0].seq, rows[-1].seq))
            for patient_row in conn.execute(listed):
                patients.setdefault(patient_row.seq, set()).add(patient_row.patient)
            for row in rows:
                broken = _check(row, prev, expected_seq, patients.get(row.seq, set()))
                if broken is not None:
                    return checked, prev, broken
                prev, expected_seq, checked = row.hash, expected_seq + 1, checked + 1
            if progress is not None:
                progress(checked, total)
            conn.rollback()  # a fresh snapshot per batch: no long-running read transaction
        return checked, prev, None


def _check(row: Any, prev: str, expected_seq: int, patients: set[str]) -> BrokenLink | None:
    if row.seq != expected_seq:
        return BrokenLink(expected_seq, "rows are missing before seq " + str(row.seq), str(expected_seq), str(row.seq))
    if row.prev_hash != prev:
        return BrokenLink(row.seq, "prev_hash is not the hash of the row before", prev, row.prev_hash)
    body = row.event.encode()
    digest = chain_hash(prev, body)
    if digest != row.hash:
        return BrokenLink(row.seq, "the event does not match its hash", digest, row.hash)
    event = orjson.loads(body)
    if event.get("id") != str(row.seq):
        return BrokenLink(row.seq, "the event id is not its seq", str(row.seq), str(event.get("id")))
    derived = {**event_columns(event), "recorded": event.get("recorded")}
    stored = {name: getattr(row, name) for name in ("client_id", "organization", "action", "outcome")}
    stored["recorded"] = instant(row.recorded)
    for name, value in derived.items():
        if stored[name] != value:
            return BrokenLink(row.seq, f"column {name} does not match the event", str(value), str(stored[name]))
    expected_patients = set(event_patients(event))
    if patients != expected_patients:
        return BrokenLink(
            row.seq,
            "the residents listed for the event do not match it",
            ", ".join(sorted(expected_patients)),
            ", ".join(sorted(patients)),
        )
    return None
