"""The transactional outbox: one row per written version, inserted in the writer's own transaction.

Consumers (the subscription matcher today) read it after commit, so a side effect happens only for a write
that committed, and none is lost across a restart (DESIGN.md rule 7). Rows carry ids only, never bodies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    String,
    Table,
    delete,
    event,
    select,
    text,
    update,
)

from fhir_server.repository import Version
from fhir_server.storage.inserts import insert_rows
from fhir_server.storage.tables import PK, metadata

outbox = Table(
    "outbox",
    metadata,
    Column("seq", PK, primary_key=True, autoincrement=True),
    Column("res_pk", BigInteger, nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("method", String(8), nullable=False, comment="POST, PUT, PATCH or DELETE"),
    Column("ts", BigInteger, nullable=False, comment="the version's lastUpdated, microseconds since the epoch"),
    Column("matched", Boolean, nullable=False, default=False, comment="seen by the subscription matcher"),
    Index(
        "ix_outbox_unmatched",
        "seq",
        postgresql_where=text("NOT matched"),
        sqlite_where=text("NOT matched"),
    ),
    Index("ix_outbox_ts", "ts"),
)

_PENDING = "hie.outbox.pending"


@dataclass(frozen=True)
class Event:
    """One committed write, as the outbox holds it."""

    seq: int
    res_pk: int
    res_type: str
    res_id: str
    version: int
    method: str
    ts: int

    @property
    def deleted(self) -> bool:
        return self.method == "DELETE"


def record_writes(conn: Connection, versions: Sequence[Version]) -> None:
    """Repository write hook: an outbox row per new version, in the same transaction."""
    if not versions:
        return
    insert_rows(
        conn,
        outbox,
        [
            {
                "res_pk": v.res_pk,
                "res_type": v.res_type,
                "res_id": v.res_id,
                "version": v.version,
                "method": v.method,
                "ts": v.ts,
                "matched": False,
            }
            for v in versions
        ],
    )
    conn.info[_PENDING] = True


def _event(row) -> Event:  # type: ignore[no-untyped-def]
    return Event(row.seq, row.res_pk, row.res_type, row.res_id, row.version, row.method, row.ts)


def any_unmatched(conn: Connection) -> bool:
    return conn.execute(select(outbox.c.seq).where(outbox.c.matched.is_(False)).limit(1)).first() is not None


def unmatched(conn: Connection, *, limit: int) -> list[Event]:
    """Committed events the matcher has not seen, oldest first."""
    rows = conn.execute(select(outbox).where(outbox.c.matched.is_(False)).order_by(outbox.c.seq).limit(limit))
    return [_event(row) for row in rows]


def mark_matched(conn: Connection, seqs: Sequence[int]) -> None:
    if seqs:
        conn.execute(update(outbox).where(outbox.c.seq.in_(list(seqs))).values(matched=True))


def mark_all_matched(conn: Connection) -> int:
    """Nothing subscribes: every visible event is seen at once."""
    return conn.execute(update(outbox).where(outbox.c.matched.is_(False)).values(matched=True)).rowcount


def window(
    conn: Connection, *, since: int, until: int, res_type: str | None, after: int = 0, limit: int
) -> list[Event]:
    """Events with ``since <= ts <= until`` (of ``res_type``), in seq order after ``after``: for replays."""
    query = select(outbox).where(outbox.c.ts >= since, outbox.c.ts <= until, outbox.c.seq > after)
    if res_type is not None:
        query = query.where(outbox.c.res_type == res_type)
    return [_event(row) for row in conn.execute(query.order_by(outbox.c.seq).limit(limit))]


def prune(conn: Connection, *, before: int) -> int:
    """Forget matched events older than ``before`` (microseconds)."""
    return conn.execute(delete(outbox).where(outbox.c.matched.is_(True), outbox.c.ts < before)).rowcount


def on_commit(engine: Engine, callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` when a connection that wrote outbox rows goes back to the pool, i.e. after its commit.

    Returns a function that removes the listener. A rolled-back writer also calls back; consumers find nothing new.
    """

    def _checkin(_dbapi_connection, record) -> None:  # type: ignore[no-untyped-def]
        if record is not None and record.info.pop(_PENDING, False):
            callback()

    event.listen(engine, "checkin", _checkin)
    return lambda: event.remove(engine, "checkin", _checkin)


__all__ = [
    "Event",
    "any_unmatched",
    "mark_all_matched",
    "mark_matched",
    "on_commit",
    "outbox",
    "prune",
    "record_writes",
    "unmatched",
    "window",
]
