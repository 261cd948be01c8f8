"""The audit spool: every queued event is also appended to a local file, so a killed process loses none.

Each audit trail of a process (a server's requests, the in-process work on one database) owns a spool name
(``{pid}-{random}``) in the spool folder: a lock file it holds with ``flock`` while it lives, and numbered
segment files of one JSON line per ``Access``. An event is written to the current segment (one ``write`` system
call: it survives the process being killed) before it is queued in memory; the writer thread closes the
segment (``fsync``: it survives a power failure too), appends the queued events to the chain, records in the
same transaction the last segment it covered (``audit_spool``) and then deletes the covered segments.

At start-up (``replay``) the segments of every spool whose lock is free (its process is gone) are appended to
the chain in order, skipping those the table says were already written (a process killed between its commit
and the deletion of its files), and removed. Processes starting together replay each dead spool once: the
first to take its lock does it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path

import orjson
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    String,
    Table,
    bindparam,
    delete,
    insert,
    make_url,
    select,
    update,
)

from fhir_server.audit.events import Access
from fhir_server.storage.tables import metadata

log = logging.getLogger("hie.audit")

audit_spool = Table(
    "audit_spool",
    metadata,
    Column("spool", String(100), primary_key=True, comment="a process's spool name"),
    Column("segment", Integer, nullable=False, comment="the last segment whose events are in the chain"),
)
"""Per spool, how far its events are written (migration 0013)."""

_FIELDS = frozenset(f.name for f in fields(Access))
_SUFFIX = ".spool"
_LOCK = ".lock"


class Spool:
    """The spool files of one process (thread-safe)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.segment = 0
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._mutex = threading.Lock()

    def append(self, access: Access) -> None:
        """Write one event to the current segment (opened on first use)."""
        line = orjson.dumps(access, option=orjson.OPT_APPEND_NEWLINE)
        with self._mutex:
            if self._fd is None:
                self._open()
            os.write(self._fd, line)  # type: ignore[arg-type]

    def rotate(self) -> tuple[int, int | None]:
        """Start a new segment with the next ``append``: the number and descriptor of the one ended (0, None when
        none was open). Cheap, for under the queue's lock; ``seal`` the descriptor after it."""
        with self._mutex:
            fd, self._fd = self._fd, None
            return (self.segment, fd) if fd is not None else (0, None)

    @staticmethod
    def seal(fd: int | None) -> None:
        """``fsync`` and close an ended segment (before its events are written to the database)."""
        if fd is not None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def discard(self, first: int, last: int) -> None:
        """Delete the closed segments ``first``..``last`` (their events are in the chain)."""
        for number in range(first, last + 1):
            self._path(self.name, number).unlink(missing_ok=True)

    def close(self) -> bool:
        """Release the spool at shutdown, after the last flush; whether it is gone (no segment was left, the
        lock file is removed). Otherwise the next start replays what is left."""
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is None:
                return False
            empty = not any(self.directory.glob(f"{self.name}.*{_SUFFIX}"))
            if empty:
                self._path(self.name, None).unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None
            return empty

    def _open(self) -> None:
        if self._lock_fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = _hold(self._path(self.name, None))
        self.segment += 1
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self._fd = os.open(self._path(self.name, self.segment), flags, 0o600)

    def _path(self, name: str, number: int | None) -> Path:
        return self.directory / (f"{name}{_LOCK}" if number is None else f"{name}.{number:08d}{_SUFFIX}")


def _hold(path: Path) -> int:
    """Create the lock file ``path`` and lock it; again when a replay took the new, still unlocked file for an
    abandoned spool's and removed it (the descriptor then locks a file no longer in the folder)."""
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def spool_directory(database_url: str, configured: Path | None = None) -> Path:
    """Where a server's spool files go: ``configured``, else beside a SQLite database file
    (``hie.db.audit-spool``), else a folder of ``var/audit-spool`` named by a digest of the database URL (one
    folder per database, so that servers of different databases never replay each other's events)."""
    if configured is not None:
        return configured
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        database = Path(url.database)
        return database.with_name(database.name + ".audit-spool")
    digest = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:16]
    return Path("var") / "audit-spool" / digest


_MARK = (
    update(audit_spool)
    .where(audit_spool.c.spool == bindparam("marked_spool"))
    .values(segment=bindparam("marked_segment"))
)
_FIRST_MARK = insert(audit_spool).values(spool=bindparam("marked_spool"), segment=bindparam("marked_segment"))
"""Statements built once: every batch of the audit trail records its spool segment."""


def mark_written(conn: Connection, spool: str, segment: int) -> None:
    """Record, in the transaction that appended them, that the spool's events up to ``segment`` are written."""
    values = {"marked_spool": spool, "marked_segment": segment}
    if conn.execute(_MARK, values).rowcount == 0:
        conn.execute(_FIRST_MARK, values)


def forget(engine: Engine, spool: str) -> None:
    """Drop a spool's row once its files are gone (a row left by a crash right before this is harmless)."""
    from fhir_server.storage.engine import unit_of_work

    with unit_of_work(engine) as conn:
        conn.execute(delete(audit_spool).where(audit_spool.c.spool == spool))


def replay(
    engine: Engine, directory: Path, write: Callable[[Connection, list[Access]], None], *, own: str | None = None
) -> int:
    """Append the events of every abandoned spool in ``directory`` to the chain; how many were written."""
    if not directory.is_dir():
        return 0
    written = 0
    for lock_path in sorted(directory.glob(f"*{_LOCK}")):
        name = lock_path.name[: -len(_LOCK)]
        if name == own:
            continue
        try:
            fd = os.open(lock_path, os.O_WRONLY)
        except FileNotFoundError:
            continue  # replayed by another process in the meantime
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive (or another one is replaying it)
            written += _replay_spool(engine, directory, name, write)
            lock_path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return written


def _replay_spool(engine: Engine, directory: Path, name: str, write: Callable[[Connection, list[Access]], None]) -> int:
    from fhir_server.storage.engine import unit_of_work

    segments = sorted(directory.glob(f"{name}.*{_SUFFIX}"))
    if not segments:
        forget(engine, name)
        return 0
    with engine.connect() as conn:
        done = conn.execute(select(audit_spool.c.segment).where(audit_spool.c.spool == name)).scalar() or 0
    numbered = [(int(path.name[len(name) + 1 : -len(_SUFFIX)]), path) for path in segments]
    pending = [(number, path) for number, path in numbered if number > done]
    accesses = [access for _number, path in pending for access in _read(path)]
    if pending:
        with unit_of_work(engine) as conn:
            write(conn, accesses)
            mark_written(conn, name, pending[-1][0])
    for _number, path in numbered:
        path.unlink(missing_ok=True)
    forget(engine, name)
    if accesses:
        log.warning("replayed %d audit event(s) of the abandoned spool %s", len(accesses), name)
    return len(accesses)


def _read(path: Path) -> Iterable[Access]:
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
            yield Access(**{key: value for key, value in data.items() if key in _FIELDS})
        except (orjson.JSONDecodeError, TypeError) as error:  # a line torn by a crash mid-write
            log.error("skipping line %d of the audit spool %s: %s", number, path.name, error)


__all__ = ["Spool", "audit_spool", "forget", "mark_written", "replay", "spool_directory"]
