"""The audit spool on both backends: events of a killed process are replayed into the chain exactly once."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from fhir_server.api.app import create_app
from fhir_server.audit import AuditTrail, verify
from fhir_server.audit.events import Access
from fhir_server.audit.spool import audit_spool, spool_directory
from fhir_server.cli import app as hie
from fhir_server.storage.tables import audit_log
from tests.conftest import Backend

_KILLED = """
import os, signal, sys, time
from pathlib import Path
from fhir_server.audit import AuditTrail
from fhir_server.audit.events import Access
from fhir_server.config import Settings
from fhir_server.storage import create_db_engine

url, folder, count, flushed, client = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "flushed", sys.argv[5]
trail = AuditTrail(create_db_engine(Settings(database_url=url)), interval=3600, spool_dir=Path(folder))
for n in range(count):
    trail.record(Access(interaction="read", status=200, recorded=time.time_ns() // 1000, method="GET",
                        path=f"/fhir/Patient/killed-{n}", client_id=client, patients=[f"Patient/killed-{n}"]))
if flushed:  # killed after the commit, before the spool files were deleted
    trail.spool.discard = lambda first, last: None
    trail.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_process(backend: Backend, folder: Path, count: int, client: str, *, flushed: bool = False) -> None:
    """A process that queues ``count`` audit events of ``client`` and is killed (SIGKILL) without shutting down."""
    script = textwrap.dedent(_KILLED)
    stage = "flushed" if flushed else "queued"
    args = [sys.executable, "-c", script, backend.url, str(folder), str(count), stage, client]
    done = subprocess.run(args, cwd=Path(__file__).parents[3], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()


def _paths(backend: Backend, client_id: str) -> list[str]:
    with backend.engine.connect() as conn:
        rows = conn.execute(select(audit_log.c.event).where(audit_log.c.client_id == client_id))
        return [row.event for row in rows]


def _count(backend: Backend) -> int:
    with backend.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(audit_log)).scalar_one()


def test_events_of_a_killed_process_are_replayed_into_the_chain(backend, tmp_path, monkeypatch):
    folder = tmp_path / "spool"
    _killed_process(backend, folder, 5, "killed")
    assert _paths(backend, "killed") == []  # nothing reached the database before the kill
    assert any(folder.glob("*.spool"))

    assert AuditTrail(backend.engine, spool_dir=folder).recover() == 5

    events = _paths(backend, "killed")
    assert len(events) == 5
    assert all(f'"Patient/killed-{n}"' in event for n, event in enumerate(events))
    assert list(folder.iterdir()) == []
    with backend.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_spool)).scalar_one() == 0
    assert verify(backend.engine)[2] is None
    monkeypatch.setenv("HIE_DATABASE_URL", backend.url)
    result = CliRunner().invoke(hie, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert AuditTrail(backend.engine, spool_dir=folder).recover() == 0  # replayed once


def test_a_spool_already_written_is_not_replayed_twice(backend, tmp_path):
    folder = tmp_path / "spool"
    before = _count(backend)
    _killed_process(backend, folder, 3, "flushed", flushed=True)
    assert _count(backend) == before + 3
    assert any(folder.glob("*.spool"))  # the kill came before the files were deleted

    assert AuditTrail(backend.engine, spool_dir=folder).recover() == 0

    assert _count(backend) == before + 3
    assert list(folder.iterdir()) == []
    assert verify(backend.engine)[2] is None


def test_the_spool_of_a_live_process_is_left_to_it(backend, tmp_path):
    folder = tmp_path / "spool"
    live = AuditTrail(backend.engine, interval=3600, spool_dir=folder)
    for n in range(3):
        live.record(read_of(n))
    assert AuditTrail(backend.engine, spool_dir=folder).recover() == 0  # its lock is held
    assert live.flush() == 3
    assert [path.suffix for path in folder.iterdir()] == [".lock"]
    live.stop()
    assert list(folder.iterdir()) == []
    with backend.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_spool)).scalar_one() == 0


def test_a_failed_write_keeps_its_segments_until_a_later_one_succeeds(backend, tmp_path, monkeypatch):
    folder = tmp_path / "spool"
    trail = AuditTrail(backend.engine, interval=3600, spool_dir=folder)
    before = _count(backend)
    trail.record(read_of(10))
    trail.record(read_of(11))
    monkeypatch.setattr("fhir_server.audit.trail.write_events", _refuse)
    with pytest.raises(ConnectionError):
        trail.flush()
    assert trail.pending() == 2
    monkeypatch.undo()
    assert trail.flush() == 2  # nothing new was recorded: the ended segment is still the one written
    assert [path.suffix for path in folder.iterdir()] == [".lock"]
    trail.record(read_of(12))
    trail.stop()
    assert _count(backend) == before + 3
    assert list(folder.iterdir()) == []
    assert AuditTrail(backend.engine, spool_dir=folder).recover() == 0


def _refuse(*_args: object) -> None:
    raise ConnectionError("the database is away")


def test_a_server_replays_the_spool_at_start_up(backend, tmp_path):
    folder = tmp_path / "spool"
    _killed_process(backend, folder, 2, "before-start")
    settings = backend.settings.model_copy(update={"auth_disabled": True, "audit_spool_dir": folder})
    with TestClient(create_app(settings, backend.engine)) as client:
        assert len(_paths(backend, "before-start")) == 2
        assert client.get("/fhir/Patient/nobody").status_code == 404
        client.app.state.audit.flush()
        assert [path.suffix for path in folder.iterdir()] == [".lock"]
    assert list(folder.iterdir()) == []


def test_the_default_folder_is_one_per_database():
    assert spool_directory("sqlite:////data/hie.db") == Path("/data/hie.db.audit-spool")
    first = spool_directory("postgresql+psycopg://hie@db/hie?options=-csearch_path%3Da")
    second = spool_directory("postgresql+psycopg://hie@db/hie?options=-csearch_path%3Db")
    assert first.parent == second.parent == Path("var") / "audit-spool"
    assert first != second
    assert spool_directory("sqlite:////data/hie.db", Path("/spool")) == Path("/spool")


def read_of(n: int, client: str = "live") -> Access:
    """The access of a read of ``Patient/{client}-{n}`` by ``client``, now."""
    return Access(
        interaction="read",
        status=200,
        recorded=time.time_ns() // 1000,
        method="GET",
        path=f"/fhir/Patient/{client}-{n}",
        client_id=client,
        patients=[f"Patient/{client}-{n}"],
    )
