"""Where a handler's unit of work runs: a read by id on the event loop, anything else in a worker thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, create_engine, text

from fhir_server.api.app import INLINE_READ_TIMEOUT_MS, Context
from fhir_server.storage import create_db_engine
from tests.conftest import Backend


@pytest.fixture
def context(backend: Backend) -> Iterator[Context]:
    """A context on an engine of its own, its pool empty at the start."""
    engine = create_db_engine(backend.settings)
    yield Context(backend.settings, engine)
    engine.dispose()


def _thread_of(conn: Connection) -> int:
    conn.execute(text("SELECT 1"))
    return threading.get_ident()


def _threads(context: Context, *calls: dict[str, bool]) -> tuple[int, list[int]]:
    """The event loop's thread, and the thread each unit of work ran in (``calls``: keywords of ``Context.run``)."""

    async def run() -> tuple[int, list[int]]:
        return threading.get_ident(), [await context.run(_thread_of, **kwargs) for kwargs in calls]

    return asyncio.run(run())


def test_a_read_by_id_runs_on_the_event_loop(backend, context):
    loop, (warm, read) = _threads(context, {"write": False}, {"write": False, "bounded": True})
    assert warm != loop  # an ordinary read: a worker thread; it leaves a pooled connection idle
    assert read == loop


def _statement_timeout(conn: Connection) -> str:
    return conn.execute(text("SHOW statement_timeout")).scalar_one()


def test_a_read_by_id_on_postgres_holds_the_event_loop_under_a_statement_timeout_only(backend, context):
    if backend.name != "postgres":
        pytest.skip("SQLite has no statement timeout; its reads never wait for a writer")

    async def run() -> tuple[str, str, str]:
        warm = await context.run(_statement_timeout, write=False)
        inline = await context.run(_statement_timeout, write=False, bounded=True)
        after = await context.run(_statement_timeout, write=False)
        return warm, inline, after

    warm, inline, after = asyncio.run(run())
    assert inline == f"{INLINE_READ_TIMEOUT_MS}ms"
    assert warm == after != inline  # the limit is the read's own, not left to the next unit of work
    connections = [context.engine.connect() for _ in range(context.engine.pool.checkedin() + 1)]
    try:  # nor to anyone who takes a pooled connection directly (exports, maintenance)
        assert {_statement_timeout(conn) for conn in connections} == {warm}
    finally:
        for conn in connections:
            conn.close()


def test_a_read_by_id_that_waits_on_postgres_is_moved_off_the_event_loop(backend, context):
    """A table locked by a migration: the read on the loop is cancelled at the timeout and waits in a thread."""
    if backend.name != "postgres":
        pytest.skip("SQLite has no statement timeout; its reads never wait for a writer")
    _threads(context, {"write": False})  # a pooled connection idle: the read by id starts on the loop
    locker = create_db_engine(backend.settings)
    migration = locker.connect()
    migration.execute(text("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))
    released = threading.Timer(3 * INLINE_READ_TIMEOUT_MS / 1000, migration.rollback)

    def version_and_thread(conn: Connection) -> tuple[str, int]:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one(), threading.get_ident()

    async def read() -> tuple[int, tuple[str, int]]:
        released.start()
        return threading.get_ident(), await context.run(version_and_thread, write=False, bounded=True)

    try:
        loop, (version, thread) = asyncio.run(read())
    finally:
        released.join()
        migration.close()
        locker.dispose()
    assert version  # answered once the lock was released
    assert thread != loop  # the wait happened in a worker thread, not on the event loop


def test_writes_and_unbounded_reads_run_in_a_worker_thread(backend, context):
    loop, threads = _threads(
        context, {"write": False}, {"write": True}, {"write": True, "bounded": True}, {"write": False}
    )
    assert loop not in threads


def test_a_read_by_id_without_an_idle_pooled_connection_runs_in_a_worker_thread(backend, context):
    loop, (first,) = _threads(context, {"write": False, "bounded": True})
    assert first != loop  # the pool is empty: opening a connection is left to a worker thread
    with context.engine.connect(), context.engine.connect():  # every idle connection taken
        loop, (busy,) = _threads(context, {"write": False, "bounded": True})
    assert busy != loop


def test_a_read_by_id_answers_the_same_on_the_event_loop(backend, context):
    async def both() -> tuple[object, object]:
        await context.run(_thread_of, write=False)
        query = "SELECT COUNT(*) FROM alembic_version"
        inline = await context.run(lambda conn: conn.execute(text(query)).scalar(), write=False, bounded=True)
        pooled = await context.run(lambda conn: conn.execute(text(query)).scalar(), write=False)
        return inline, pooled

    inline, pooled = asyncio.run(both())
    assert inline == pooled == 1


def test_a_read_by_id_on_postgres_without_a_statement_limit_stays_in_a_worker_thread(backend):
    """An engine not made by ``create_db_engine`` cannot bound the read: it never holds the event loop."""
    if backend.name != "postgres":
        pytest.skip("SQLite reads by id run on the loop on any engine")
    engine = create_engine(backend.url)
    context = Context(backend.settings, engine)
    try:
        loop, (_, read) = _threads(context, {"write": False}, {"write": False, "bounded": True})
    finally:
        engine.dispose()
    assert read != loop
