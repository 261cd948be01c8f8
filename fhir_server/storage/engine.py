"""Engines for both backends and the unit of work: one database transaction per request or task."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError

from fhir_server.config import Settings

try:
    import fcntl
except ImportError:  # not a POSIX system: writers of other processes wait in SQLite's busy handler
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

WRITE = "hie_write"
_QUEUED = "hie_write_queued"
"""Execution option of a unit of work's connection: its transactions enter the writers' queue (and it leaves)."""
_HELD = "hie_write_lock_held"
"""``Connection.info`` key: how many times this connection's transactions took the write lock."""
POOL_RECYCLE_SECONDS = 1800
"""A pooled PostgreSQL connection older than this is replaced at checkout instead of used: below the idle limits
of servers and proxies that close long-lived connections (``idle_session_timeout``, a firewall's table)."""


_TIMEOUT = "hie_statement_timeout_ms"
"""``Connection.info`` key of a PostgreSQL session: the ``statement_timeout`` it has (None: the server's own)."""
_WANTED = threading.local()
"""The ``statement_timeout`` the connections this thread checks out must have (``timeout_ms``; None: the server's)."""


class CommitInDoubt(Exception):
    """The connection to the database was lost during ``COMMIT``: the transaction may or may not be stored."""


def connection_lost(error: BaseException) -> bool:
    """Whether ``error`` is the loss of the database connection (a restart, a terminated backend, a closed socket).

    SQLAlchemy has then invalidated the connection, and the pool every connection made before it: the next unit of
    work gets a new one ("Dealing with Disconnects", the optimistic approach: no ``SELECT 1`` per checkout).
    """
    return isinstance(error, DBAPIError) and error.connection_invalidated


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


class Checkpointer:
    """Copies a SQLite database's WAL back into it from a thread of its own, after writers commit.

    SQLite's automatic checkpoint runs in the ``COMMIT`` that crosses its threshold, under the write lock (it
    added ~4 ms of lock hold per small transaction on average). A ``PASSIVE`` checkpoint neither waits for nor
    blocks readers and writers; writers keep a far threshold as a backstop.
    """

    INTERVAL = 1.0
    """Seconds from one checkpoint to the next at least: a page the writers change again and again meanwhile (an
    index's last leaf) is copied once. The WAL holds about a second of writes; 0.25 s cost ~0.3 ms more CPU per
    small transaction."""
    IDLE_EXIT = 30.0
    """Seconds without a commit after which the thread ends (the next commit starts another)."""
    BACKSTOP_PAGES = 20_000
    """``wal_autocheckpoint`` of the writers: they checkpoint themselves only when this thread falls behind."""

    def __init__(self, database: Path) -> None:
        self._database = database
        self._due = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def committed(self) -> None:
        """A writer committed: a checkpoint is due (a thread starts when none runs in this process)."""
        with self._lock:
            self._idle.clear()
            self._due.set()
            if self._thread is None or self._pid != os.getpid():  # a forked worker needs its own thread
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
                self._thread.start()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every commit so far has been checkpointed (tests)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        uri = f"{self._database.resolve().as_uri()}?mode=rw"  # never create a database that went away
        try:
            connection = sqlite3.connect(uri, uri=True, timeout=1.0, check_same_thread=False)
        except sqlite3.Error:
            log.warning("no background WAL checkpoints of %s: it cannot be opened", self._database, exc_info=True)
            with self._lock:
                self._thread = None
                self._idle.set()
            return
        try:
            while self._due.wait(self.IDLE_EXIT):
                self._due.clear()
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:  # another connection checkpoints: the next commit asks again
                    log.debug("background WAL checkpoint of %s skipped", self._database, exc_info=True)
                with self._lock:
                    if not self._due.is_set():
                        self._idle.set()
                time.sleep(self.INTERVAL)
        finally:
            connection.close()
            with self._lock:
                if self._due.is_set():  # a commit came as the thread was leaving: a new thread takes it
                    self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
                    self._thread.start()
                else:
                    self._thread = None


_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, WriteLock] = weakref.WeakKeyDictionary()
_TIMEOUT_AWARE: weakref.WeakSet[Engine] = weakref.WeakSet()
_CHECKPOINTERS: weakref.WeakKeyDictionary[Engine, Checkpointer] = weakref.WeakKeyDictionary()


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
        if database is not None:
            _CHECKPOINTERS[engine] = Checkpointer(database)
        _configure_sqlite(engine, settings, lock, background_checkpoints=database is not None)
        return engine
    # No pool_pre_ping (a SELECT 1 round trip per unit of work): a lost connection fails the statement that finds
    # it, SQLAlchemy invalidates the pool, and read-only units of work are retried (fhir_server/api/app.py).
    engine = create_engine(
        url, pool_size=settings.pool_size, max_overflow=settings.pool_size, pool_recycle=POOL_RECYCLE_SECONDS
    )
    _configure_postgres(engine)
    return engine


def _configure_postgres(engine: Engine) -> None:
    """Sessions get the ``statement_timeout`` their unit of work asks for at checkout, and keep it: a ``SET`` only
    when a session changes hands between a limited unit of work and an unlimited one, not one per transaction.

    Every session runs without JIT compilation: the access filters' per-row subqueries make short statements
    cost more than ``jit_above_cost``, and PostgreSQL then spent 0.1-4 s compiling statements that run in
    milliseconds (``$everything`` of an institution, searches across shared records)."""

    _TIMEOUT_AWARE.add(engine)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, record) -> None:  # type: ignore[no-untyped-def]
        record.info[_TIMEOUT] = None
        autocommit, dbapi_connection.autocommit = dbapi_connection.autocommit, True  # the setting outlives it
        try:
            dbapi_connection.execute("SET jit = off")
        finally:
            dbapi_connection.autocommit = autocommit

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        wanted = getattr(_WANTED, "timeout_ms", None)
        if record.info.get(_TIMEOUT, -1) == wanted:
            return
        statement = "RESET statement_timeout" if wanted is None else f"SET statement_timeout = {int(wanted)}"
        try:
            autocommit, dbapi_connection.autocommit = dbapi_connection.autocommit, True  # the setting outlives it
            try:
                dbapi_connection.execute(statement)
            finally:
                dbapi_connection.autocommit = autocommit
        except Exception as error:
            record.info.pop(_TIMEOUT, None)
            if dbapi_connection.closed or dbapi_connection.broken:  # the pool replaces it and checks out again
                raise DisconnectionError(f"the connection was lost: {error}") from error
            raise
        record.info[_TIMEOUT] = wanted


def _configure_sqlite(engine: Engine, settings: Settings, lock: WriteLock, *, background_checkpoints: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own transaction handling is off).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(settings.sqlite_busy_timeout_ms)}")
        if background_checkpoints:
            cursor.execute(f"PRAGMA wal_autocheckpoint={Checkpointer.BACKSTOP_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Writers take the write lock up front: no deadlock upgrading a read lock, writes serialise. The queue is
        # entered here, at the first statement, so that validation before it runs while another writer writes.
        options = connection.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":  # each statement commits itself (ANALYZE, VACUUM)
            return
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


def database_cache(
    caches: weakref.WeakKeyDictionary[Any, dict[Any, Any]], conn: Connection, lock: threading.Lock
) -> dict[Any, Any]:
    """The entry of ``caches`` for the database of ``conn`` (shared by the engines of its connection pool), made
    under ``lock``, the lock its owner holds wherever it changes ``caches``."""
    pool = conn.engine.pool
    with lock:
        cache = caches.get(pool)
        if cache is None:
            cache = caches[pool] = {}
        return cache


def transaction_set(conn: Connection, key: str) -> set[Any]:
    """A set kept on the connection for its current transaction only: a new, empty one in the next transaction
    (what a transaction wrote and may still roll back, kept out of the caches that outlive it).

    Only inside a transaction: a set taken before the first statement would be keyed by no transaction and handed
    to the next unit of work on the same pooled connection, with what this one noted in it."""
    transaction = conn.get_transaction()
    if transaction is None:
        raise RuntimeError(f"transaction_set({key!r}) outside a transaction: run a statement first")
    held = conn.info.get(key)
    if held is None or held[0] is not transaction:
        held = conn.info[key] = (transaction, set())
    return held[1]


def is_postgres(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


@contextmanager
def unit_of_work(
    engine: Engine, *, write: bool = True, statement_timeout_ms: int | None = None
) -> Iterator[Connection]:
    """One database transaction: committed when the block ends normally, rolled back on any error.

    The transaction begins at the first statement, so validation before it holds no lock. A writer whose connection
    is lost during ``COMMIT`` gets ``CommitInDoubt``: the database may have stored the transaction or not.
    ``statement_timeout_ms``: on PostgreSQL, each statement of this transaction is cancelled after that long
    (``statement_timed_out`` tells the error); SQLite has no such limit and ignores it.
    """
    lock = _WRITE_LOCKS.get(engine) if write else None
    committed = False
    _WANTED.timeout_ms = statement_timeout_ms
    try:
        connection = engine.connect()
    finally:
        _WANTED.timeout_ms = None
    with connection:
        if write:
            connection.execution_options(**{WRITE: True, _QUEUED: lock is not None})
        try:
            try:
                yield connection
            except BaseException:
                connection.rollback()
                raise
            try:
                connection.commit()
            except DBAPIError as error:
                if write and connection_lost(error):
                    raise CommitInDoubt("the database connection was lost during COMMIT") from error
                raise
            committed = True
        finally:
            if lock is not None and _release(connection, lock) and committed:
                checkpointer = _CHECKPOINTERS.get(engine)
                if checkpointer is not None:
                    checkpointer.committed()


def bounds_statements(engine: Engine) -> bool:
    """Whether ``unit_of_work(engine, statement_timeout_ms=…)`` limits its statements: PostgreSQL engines made by
    ``create_db_engine`` (SQLite has no such limit)."""
    return engine in _TIMEOUT_AWARE


def statement_timed_out(error: BaseException) -> bool:
    """Whether ``error`` is PostgreSQL cancelling a statement at its ``statement_timeout`` (SQLSTATE 57014)."""
    return isinstance(error, DBAPIError) and getattr(error.orig, "sqlstate", None) == "57014"


def _release(connection: Connection, lock: WriteLock) -> int:
    """Leave the writers' queue as often as this connection's transactions entered it; how often that was."""
    held = connection.info.pop(_HELD, 0)
    for _ in range(held):
        lock.release()
    return held


def checkpointer_of(engine: Engine) -> Checkpointer | None:
    """The background WAL checkpointer of a SQLite database file's engine."""
    return _CHECKPOINTERS.get(engine)


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
