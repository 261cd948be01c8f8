"""Where a handler's unit of work runs: a read by id on SQLite on the event loop, anything else in a worker thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, text

from fhir_server.api.app import Context
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


def test_a_read_by_id_runs_on_the_event_loop_on_sqlite_only(backend, context):
    loop, (warm, read) = _threads(context, {"write": False}, {"write": False, "bounded": True})
    assert warm != loop  # an ordinary read: a worker thread; it leaves a pooled connection idle
    assert (read == loop) == (backend.name == "sqlite")  # PostgreSQL would hold the loop through round trips


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
