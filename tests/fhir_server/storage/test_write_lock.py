"""SQLite writers queue on one lock per database, entered at a unit of work's first statement, left at its end."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text

from fhir_server.config import Settings
from fhir_server.migrations import upgrade
from fhir_server.storage.engine import Checkpointer, WriteLock, checkpointer_of, create_db_engine, unit_of_work
from fhir_server.storage.tables import resources


@pytest.fixture
def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = create_db_engine(Settings(database_url=f"sqlite:///{tmp_path / 'hie.db'}"))
    upgrade(engine)
    yield engine
    engine.dispose()


def _insert(conn, res_id: str) -> None:  # type: ignore[no-untyped-def]
    conn.execute(
        text("INSERT INTO resources (res_type, res_id, version, ts, deleted) VALUES ('Basic', :id, 1, 1, false)"),
        {"id": res_id},
    )


def _write_in_thread(engine, res_id: str) -> threading.Thread:  # type: ignore[no-untyped-def]
    def write() -> None:
        with unit_of_work(engine) as conn:
            _insert(conn, res_id)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def _ids(engine) -> list[str]:  # type: ignore[no-untyped-def]
    with unit_of_work(engine, write=False) as conn:
        return sorted(conn.execute(select(resources.c.res_id)).scalars())


def test_another_writer_commits_while_a_unit_of_work_has_not_yet_written(engine) -> None:  # type: ignore[no-untyped-def]
    with unit_of_work(engine) as conn:
        other = _write_in_thread(engine, "other")
        other.join(timeout=30)
        assert not other.is_alive()  # validation before the first statement holds no lock
        _insert(conn, "mine")
    assert _ids(engine) == ["mine", "other"]


def test_a_writer_waits_for_the_one_writing_and_the_lock_is_left_after_an_error(engine) -> None:  # type: ignore[no-untyped-def]
    with unit_of_work(engine) as conn:
        _insert(conn, "first")
        waiting = _write_in_thread(engine, "second")
        waiting.join(timeout=0.5)
        assert waiting.is_alive()  # queued behind the writer holding the lock
    waiting.join(timeout=30)
    assert not waiting.is_alive()
    with pytest.raises(RuntimeError), unit_of_work(engine) as conn:
        _insert(conn, "rolled back")
        raise RuntimeError("refused")
    after_error = _write_in_thread(engine, "third")
    after_error.join(timeout=30)
    assert not after_error.is_alive()
    assert _ids(engine) == ["first", "second", "third"]


def test_the_lock_file_excludes_writers_of_another_process(tmp_path: Path) -> None:
    # Two locks on one database stand for two worker processes: flock excludes separate open files alike.
    database = tmp_path / "shared.db"
    held, other = WriteLock(database), WriteLock(database)
    held.acquire()
    entered = threading.Event()

    def take() -> None:
        other.acquire()
        entered.set()
        other.release()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    assert not entered.wait(timeout=0.5)
    held.release()
    assert entered.wait(timeout=30)
    thread.join(timeout=30)


def test_commits_are_copied_back_from_the_wal_by_a_background_checkpoint(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    database = tmp_path / "hie.db"
    with unit_of_work(engine) as conn:
        conn.exec_driver_sql("CREATE TABLE filler (body BLOB)")
    checkpointer = checkpointer_of(engine)
    assert checkpointer is not None and checkpointer.wait_idle(30)
    before = database.stat().st_size
    with unit_of_work(engine) as conn:
        # Far below the writers' own threshold: without the background checkpoint the pages stay in the WAL.
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == Checkpointer.BACKSTOP_PAGES
        conn.exec_driver_sql("INSERT INTO filler VALUES (zeroblob(2000000))")
    assert checkpointer.wait_idle(30)
    assert database.stat().st_size > before + 1_500_000
