"""Engines for both backends and the unit of work: one database transaction per request or task."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from fhir_server.config import Settings

try:
    import fcntl
except ImportError:  # not a POSIX system: writers of other processes wait in SQLite's busy handler
    fcntl = None  # type: ignore[assignment]

WRITE = "hie_write"
_QUEUED = "hie_write_queued"
"""Execution option of a unit of work's connection: its transactions enter the writers' queue (and it leaves)."""
_HELD = "hie_write_lock_held"
"""``Connection.info`` key: how many times this connection's transactions took the write lock."""


class WriteLock:
    """The queue of a SQLite database's writers: threads on a lock, processes on ``flock`` of a file beside it.

    A writer that waits in SQLite's busy handler polls with sleeps of up to 100 ms and can be overtaken; here it
    sleeps until the lock is released (docs/PERFORMANCE.md, "SQLite write lock hand-off"). Reentrant per thread.
    """

    def __init__(self, database: Path | None) -> None:
        self._threads = threading.RLock()
        self._path = database.with_name(database.name + "-writer") if database is not None and fcntl else None
        self._depth = 0
        self._fd: int | None = None
        self._pid = 0

    def acquire(self) -> None:
        self._threads.acquire()
        try:
            if self._depth == 0 and self._path is not None:
                if self._fd is None or self._pid != os.getpid():  # a forked worker needs its own open file
                    self._fd, self._pid = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600), os.getpid()
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._depth += 1
        except BaseException:
            self._threads.release()
            raise

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()


_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, WriteLock] = weakref.WeakKeyDictionary()


def create_db_engine(settings: Settings) -> Engine:
    """Create the engine; SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` for writers."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            pool_size=settings.pool_size,
            max_overflow=settings.pool_size,
            connect_args={"check_same_thread": False, "timeout": settings.sqlite_busy_timeout_ms / 1000},
        )
        # Writers queue on a lock instead of sleeping in SQLite's busy handler.
        database = Path(url.database) if url.database and url.database != ":memory:" else None
        _WRITE_LOCKS[engine] = lock = WriteLock(database)
        _configure_sqlite(engine, settings, lock)
        return engine
    return create_engine(url, pool_size=settings.pool_size, max_overflow=settings.pool_size, pool_pre_ping=True)


def _configure_sqlite(engine: Engine, settings: Settings, lock: WriteLock) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own transaction handling is off).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(settings.sqlite_busy_timeout_ms)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Writers take the write lock up front: no deadlock upgrading a read lock, writes serialise. The queue is
        # entered here, at the first statement, so that validation before it runs while another writer writes.
        options = connection.get_execution_options()
        if not options.get(WRITE):
            connection.exec_driver_sql("BEGIN")
            return
        if not options.get(_QUEUED):  # a maintenance task's own connection: SQLite's busy handler only
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            return
        lock.acquire()
        connection.info[_HELD] = connection.info.get(_HELD, 0) + 1
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release(connection, lock)
            raise


def is_postgres(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


@contextmanager
def unit_of_work(engine: Engine, *, write: bool = True) -> Iterator[Connection]:
    """One database transaction: committed when the block ends normally, rolled back on any error.

    The transaction begins at the first statement, so validation before it holds no lock.
    """
    lock = _WRITE_LOCKS.get(engine) if write else None
    with engine.connect() as connection:
        if write:
            connection.execution_options(**{WRITE: True, _QUEUED: lock is not None})
        try:
            try:
                yield connection
            except BaseException:
                connection.rollback()
                raise
            connection.commit()
        finally:
            if lock is not None:
                _release(connection, lock)


def _release(connection: Connection, lock: WriteLock) -> None:
    """Leave the writers' queue as often as this connection's transactions entered it."""
    for _ in range(connection.info.pop(_HELD, 0)):
        lock.release()


def refresh_statistics(engine: Engine) -> None:
    """Let the query planner see the data after a bulk load (PostgreSQL ``ANALYZE``, SQLite ``ANALYZE``).

    Without it PostgreSQL plans a freshly loaded archive as if it were empty: a compartment count measured
    12.6 s before and 30 ms after.
    """
    from fhir_server.storage.tables import metadata

    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        if is_postgres(conn):  # the archive's own tables only, not every schema of the database
            conn.exec_driver_sql("ANALYZE " + ", ".join(table.name for table in metadata.sorted_tables))
        else:
            conn.exec_driver_sql("ANALYZE")
