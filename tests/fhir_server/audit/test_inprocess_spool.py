"""The events of in-process work (HL7 v2 messages, ``hie`` commands) are spooled like the requests': a process
killed before its flush loses none, the next start writes them exactly once, and the chain still verifies."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from adapters.hl7v2.listener import MllpListener
from fhir_server import worker
from fhir_server.access.inprocess import (
    CLI_AGENT,
    HL7V2_AGENT,
    close_in_process_audit,
    configure_in_process_audit,
    recover_in_process_audit,
    trail_for,
)
from fhir_server.api.app import create_app
from fhir_server.audit import AuditTrail, verify
from fhir_server.audit.chain import Entry, append
from fhir_server.audit.events import Access, audit_event
from fhir_server.audit.spool import Spool, audit_spool
from fhir_server.cli import app as hie
from fhir_server.config import Settings
from fhir_server.storage import create_db_engine, unit_of_work
from fhir_server.storage.tables import audit_log
from tests.adapters.hl7v2.samples import wire_variant
from tests.conftest import Backend

ROOT = Path(__file__).parents[3]

_APPLY = """
import os, signal, sys
from adapters.hl7v2.apply import apply_message
from fhir_server.api.app import Context
from fhir_server.config import load_settings
from fhir_server.storage import create_db_engine

settings = load_settings()
engine = create_db_engine(settings)
ack = apply_message(engine, Context(settings, engine).service, sys.stdin.buffer.read())
sys.stdout.buffer.write(ack)
sys.stdout.flush()
if sys.argv[1] == "killed":  # right after the ACK, long before the writer's next flush
    os.kill(os.getpid(), signal.SIGKILL)
"""

_COMMAND = """
import os, signal, sys
from fhir_server.audit.trail import AuditTrail
from fhir_server.cli import app

if sys.argv[1] == "killed":  # the command's event is spooled; the process dies before the flush that writes it
    AuditTrail.stop = lambda self, timeout=30.0: os.kill(os.getpid(), signal.SIGKILL)
app(sys.argv[2:], prog_name="hie")
"""


def _environment(backend: Backend, folder: Path) -> dict[str, str]:
    """A child process's settings: the test database, ``folder`` for the spool and a flush an hour away."""
    return {
        **os.environ,
        "HIE_DATABASE_URL": backend.url,
        "HIE_AUDIT_SPOOL_DIR": str(folder),
        "HIE_AUDIT_FLUSH_SECONDS": "3600",
        "HIE_MPI_ENABLED": "false",
    }


def _apply_in_child(backend: Backend, folder: Path, raw: bytes, *, killed: bool) -> bytes:
    """Apply one HL7 message in a child process, which is killed (SIGKILL) right after the ACK or exits; the ACK."""
    script = textwrap.dedent(_APPLY)
    args = [sys.executable, "-c", script, "killed" if killed else "exit"]
    done = subprocess.run(
        args, input=raw, cwd=ROOT, env=_environment(backend, folder), capture_output=True, timeout=180
    )
    assert done.returncode == (-signal.SIGKILL if killed else 0), done.stderr.decode()
    return done.stdout


def _command_in_child(backend: Backend, folder: Path, *command: str, killed: bool) -> None:
    """Run ``hie COMMAND`` in a child process, killed (SIGKILL) after its event is spooled, or to its end."""
    script = textwrap.dedent(_COMMAND)
    args = [sys.executable, "-c", script, "killed" if killed else "exit", *command]
    done = subprocess.run(args, cwd=ROOT, env=_environment(backend, folder), capture_output=True, timeout=180)
    assert done.returncode == (-signal.SIGKILL if killed else 0), done.stderr.decode()


def _events(engine: Engine, agent: str, words: str) -> list[dict]:
    """The events of ``agent`` whose ``outcomeDesc`` holds ``words``, in chain order, with their row's seq and time."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(audit_log.c.seq, audit_log.c.recorded, audit_log.c.event)
            .where(audit_log.c.client_id == agent)
            .order_by(audit_log.c.seq)
        ).all()
    events = [orjson.loads(row.event) | {"_seq": row.seq, "_recorded": row.recorded} for row in rows]
    return [event for event in events if words in event["outcomeDesc"]]


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(audit_log)).scalar_one()


def _spooled(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(folder.glob("*.spool")))


def _patient_file(folder: Path, family: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "patients.ndjson"
    patient = {"resourceType": "Patient", "id": f"spool-{uuid.uuid4().hex[:12]}", "name": [{"family": family}]}
    path.write_bytes(orjson.dumps(patient) + b"\n")
    return path


@pytest.fixture
def configured(backend: Backend) -> Iterator[Callable[[Path], Engine]]:
    """Engines of the test database whose in-process trail spools to a given folder, closed at the test's end."""
    engines: list[Engine] = []

    def engine_for(folder: Path) -> Engine:
        engine = create_db_engine(backend.settings)
        configure_in_process_audit(engine, backend.settings.model_copy(update={"audit_spool_dir": folder}))
        engines.append(engine)
        return engine

    yield engine_for
    for engine in engines:
        close_in_process_audit(engine)
        engine.dispose()


@pytest.fixture
def cli(backend: Backend, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Run ``hie ARGS`` in this process against the test database, with the spool folder of ``folder``."""

    def run(folder: Path, *args: str):  # type: ignore[no-untyped-def]
        monkeypatch.setenv("HIE_DATABASE_URL", backend.url)
        monkeypatch.setenv("HIE_AUDIT_SPOOL_DIR", str(folder))
        monkeypatch.setenv("HIE_MPI_ENABLED", "false")
        return CliRunner().invoke(hie, list(args))

    return run


def test_an_hl7_message_of_a_killed_process_is_spooled_before_its_ack_and_replayed_once(backend, tmp_path):
    folder = tmp_path / "spool"
    control_id = f"KILL-{uuid.uuid4().hex[:12]}"
    before = time.time_ns() // 1000

    ack = _apply_in_child(backend, folder, wire_variant("adt_a01.hl7", control_id), killed=True)
    killed = time.time_ns() // 1000

    assert b"MSA|AA|" in ack
    assert _events(backend.engine, HL7V2_AGENT, control_id) == []  # nothing reached the chain before the kill
    assert control_id.encode() in _spooled(folder)  # but the event was in the spool when the ACK was sent

    settings = backend.settings.model_copy(update={"auth_disabled": True, "audit_spool_dir": folder})
    engine = create_db_engine(settings)
    try:
        with TestClient(create_app(settings, engine)):  # the next server's start-up replays it
            [event] = _events(backend.engine, HL7V2_AGENT, control_id)
    finally:
        close_in_process_audit(engine)
        engine.dispose()
    assert event["outcomeDesc"].startswith(f"200 HL7 ADT^A01 {control_id}")
    assert before <= event["_recorded"] <= killed  # the time of the work, not of the replay
    assert any(e["what"]["reference"].startswith("Encounter/") for e in event["entity"] if e["role"]["code"] == "4")
    assert list(folder.iterdir()) == []
    with backend.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_spool)).scalar_one() == 0

    assert AuditTrail(backend.engine, spool_dir=folder).recover() == 0  # recovering again writes nothing
    assert len(_events(backend.engine, HL7V2_AGENT, control_id)) == 1
    assert verify(backend.engine)[2] is None


def test_a_message_applied_by_a_process_that_exits_is_written_once(backend, tmp_path):
    folder = tmp_path / "spool"
    control_id = f"EXIT-{uuid.uuid4().hex[:12]}"

    ack = _apply_in_child(backend, folder, wire_variant("adt_a01.hl7", control_id), killed=False)

    assert b"MSA|AA|" in ack
    assert len(_events(backend.engine, HL7V2_AGENT, control_id)) == 1  # written at exit
    assert list(folder.iterdir()) == []  # its spool released: nothing for the next start
    assert AuditTrail(backend.engine, spool_dir=folder).recover() == 0
    assert len(_events(backend.engine, HL7V2_AGENT, control_id)) == 1


def test_a_killed_command_is_replayed_by_hie_audit_verify_after_newer_events(backend, tmp_path, cli):
    folder = tmp_path / "spool"
    data = _patient_file(tmp_path / "data", f"Killed{uuid.uuid4().hex[:8]}")

    _command_in_child(backend, folder, "import", str(data), killed=True)

    assert _imports_of(backend.engine, data) == []
    assert b"hie import" in _spooled(folder)
    newer = AuditTrail(backend.engine)  # an event written meanwhile: the replayed one will follow it
    newer.record(_read("after-the-kill"))
    newer.stop()

    result = cli(folder, "audit", "verify")

    assert result.exit_code == 0, result.output
    assert "Replayed 1 audit event(s)" in result.output
    assert f"OK: {_count(backend.engine)} audit event(s) verified" in result.output
    [replayed] = _imports_of(backend.engine, data)
    [later] = _events(backend.engine, "spool-test", "after-the-kill")
    assert replayed["_seq"] > later["_seq"] and replayed["_recorded"] < later["_recorded"]
    assert list(folder.iterdir()) == []

    again = cli(folder, "audit", "verify")  # replayed once
    assert again.exit_code == 0 and "Replayed" not in again.output
    assert len(_imports_of(backend.engine, data)) == 1


def test_a_command_that_exits_writes_its_event_once(backend, tmp_path):
    folder = tmp_path / "spool"
    data = _patient_file(tmp_path / "data", f"Exit{uuid.uuid4().hex[:8]}")

    _command_in_child(backend, folder, "import", str(data), killed=False)

    assert len(_imports_of(backend.engine, data)) == 1
    assert list(folder.iterdir()) == []


def test_the_next_audited_command_replays_a_killed_one_before_its_own_event(backend, tmp_path, cli):
    folder = tmp_path / "spool"
    first = _patient_file(tmp_path / "first", f"First{uuid.uuid4().hex[:8]}")
    second = _patient_file(tmp_path / "second", f"Second{uuid.uuid4().hex[:8]}")
    _command_in_child(backend, folder, "import", str(first), killed=True)

    result = cli(folder, "import", str(second))

    assert result.exit_code == 0, result.output
    [killed] = _imports_of(backend.engine, first)
    [own] = _imports_of(backend.engine, second)
    assert killed["_seq"] < own["_seq"]
    assert list(folder.iterdir()) == []
    assert verify(backend.engine)[2] is None


def test_hie_mllp_replays_the_spool_when_it_starts(backend, tmp_path, cli, monkeypatch):
    folder = tmp_path / "spool"
    control_id = f"MLLP-{uuid.uuid4().hex[:12]}"
    _apply_in_child(backend, folder, wire_variant("adt_a01.hl7", control_id), killed=True)
    monkeypatch.setattr(MllpListener, "serve_forever", _return_at_once)  # started, then stopped at once

    result = cli(folder, "mllp", "--port", "0")

    assert result.exit_code == 0, result.output
    assert len(_events(backend.engine, HL7V2_AGENT, control_id)) == 1
    assert list(folder.iterdir()) == []


def test_hie_worker_replays_the_spool_when_it_starts(backend, tmp_path, monkeypatch):
    folder = tmp_path / "spool"
    data = _patient_file(tmp_path / "data", f"Worker{uuid.uuid4().hex[:8]}")
    _command_in_child(backend, folder, "import", str(data), killed=True)
    monkeypatch.setattr(worker, "_runtime", None)
    monkeypatch.setattr(worker, "configure", lambda settings: worker.celery_app)
    monkeypatch.setattr(worker.celery_app, "worker_main", lambda argv: None)  # the worker would consume tasks now
    settings = backend.settings.model_copy(update={"audit_spool_dir": folder})

    worker.run_worker(settings, beat=False, concurrency=1)

    engine = worker.runtime().exporter.engine
    try:
        assert len(_imports_of(backend.engine, data)) == 1
        assert list(folder.iterdir()) == []
    finally:
        close_in_process_audit(engine)
        engine.dispose()


def test_verify_without_replay_leaves_the_spool(backend, tmp_path, cli, configured):
    folder = tmp_path / "spool"
    data = _patient_file(tmp_path / "data", f"Later{uuid.uuid4().hex[:8]}")
    _command_in_child(backend, folder, "import", str(data), killed=True)

    result = cli(folder, "audit", "verify", "--no-replay")

    assert result.exit_code == 0, result.output
    assert "Replayed" not in result.output
    assert _imports_of(backend.engine, data) == []
    assert b"hie import" in _spooled(folder)
    assert recover_in_process_audit(configured(folder)) == 1
    assert len(_imports_of(backend.engine, data)) == 1


def test_verify_reports_a_spool_it_cannot_replay_and_verifies_the_chain(backend, tmp_path, cli, monkeypatch):
    folder = tmp_path / "spool"
    data = _patient_file(tmp_path / "data", f"Refused{uuid.uuid4().hex[:8]}")
    _command_in_child(backend, folder, "import", str(data), killed=True)
    monkeypatch.setattr(AuditTrail, "recover", _refuse)

    result = cli(folder, "audit", "verify")

    assert result.exit_code == 0
    assert "could not be replayed (permission denied for table audit_log)" in result.output
    assert "OK: " in result.output
    assert b"hie import" in _spooled(folder)  # left for the next start
    monkeypatch.undo()
    assert AuditTrail(backend.engine, spool_dir=folder).recover() == 1


def test_a_failed_recovery_is_logged_and_leaves_the_spool(backend, tmp_path, monkeypatch, caplog, configured):
    folder = tmp_path / "spool"
    data = _patient_file(tmp_path / "data", f"Logged{uuid.uuid4().hex[:8]}")
    _command_in_child(backend, folder, "import", str(data), killed=True)
    engine = configured(folder)
    monkeypatch.setattr(AuditTrail, "recover", _refuse)

    with caplog.at_level(logging.ERROR, logger="hie.audit"):
        assert recover_in_process_audit(engine) == 0

    assert "could not be replayed" in caplog.text
    assert b"hie import" in _spooled(folder)
    monkeypatch.undo()
    assert recover_in_process_audit(engine) == 1


def test_events_recorded_earlier_than_the_link_before_them_verify(backend):
    now = time.time_ns() // 1000
    with unit_of_work(backend.engine) as conn:
        append(conn, [Entry(now, _event(now, "newer")), Entry(now - 3_600_000_000, _event(now - 3_600_000_000, "old"))])
    with backend.engine.connect() as conn:
        last = conn.execute(select(audit_log.c.recorded).order_by(audit_log.c.seq.desc()).limit(2)).scalars().all()
    assert last[0] < last[1]
    assert verify(backend.engine)[2] is None


def _imports_of(engine: Engine, data: Path) -> list[dict]:
    """The ``hie import`` events that list the Patient of ``data``."""
    reference = "Patient/" + orjson.loads(data.read_bytes())["id"]
    return [
        event
        for event in _events(engine, CLI_AGENT, " import")  # "hie import" (CliRunner names it "root import")
        if any(entity["what"].get("reference") == reference for entity in event.get("entity", ()))
    ]


def _read(path: str) -> Access:
    return Access(
        interaction="read",
        status=200,
        recorded=time.time_ns() // 1000,
        method="GET",
        path=f"/fhir/Patient/{path}",
        client_id="spool-test",
        patients=[f"Patient/{path}"],
    )


def _event(recorded: int, name: str) -> dict:
    return audit_event(
        Access(interaction="read", status=200, recorded=recorded, method="GET", path=f"/fhir/Patient/{name}")
    )


async def _return_at_once(_listener: object) -> None:
    return None


def _refuse(*_args: object) -> int:
    raise PermissionError("permission denied for table audit_log")


# Which spool folder the in-process trail of an engine uses (no database needed).


def _sqlite_engine(folder: Path, **settings: object) -> tuple[Engine, Settings]:
    configured = Settings(database_url=f"sqlite:///{folder / 'hie.db'}", **settings)
    return create_db_engine(configured), configured


def test_an_engine_of_the_environment_database_uses_its_spool_settings(tmp_path, monkeypatch):
    engine, settings = _sqlite_engine(tmp_path)
    monkeypatch.setenv("HIE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("HIE_AUDIT_SPOOL_DIR", str(tmp_path / "configured"))
    monkeypatch.setenv("HIE_AUDIT_FLUSH_SECONDS", "7")
    try:
        trail = trail_for(engine)
        assert trail.spool is not None and trail.spool.directory == tmp_path / "configured"
        assert trail.interval == 7
    finally:
        close_in_process_audit(engine)
        engine.dispose()


def test_an_engine_of_another_database_never_uses_the_environment_spool_folder(tmp_path, monkeypatch):
    engine, _ = _sqlite_engine(tmp_path)
    monkeypatch.setenv("HIE_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    monkeypatch.setenv("HIE_AUDIT_SPOOL_DIR", str(tmp_path / "of-the-other-database"))
    try:
        trail = trail_for(engine)
        assert trail.spool is not None and trail.spool.directory == tmp_path / "hie.db.audit-spool"
    finally:
        close_in_process_audit(engine)
        engine.dispose()


def test_configured_settings_win_and_may_turn_the_spool_off(tmp_path, monkeypatch):
    engine, settings = _sqlite_engine(tmp_path)
    monkeypatch.setenv("HIE_DATABASE_URL", settings.database_url)
    configure_in_process_audit(engine, settings.model_copy(update={"audit_spool": False}))
    try:
        assert trail_for(engine).spool is None
    finally:
        close_in_process_audit(engine)
        engine.dispose()


def test_the_worker_runtime_spools_as_its_settings_say(tmp_path, monkeypatch):
    monkeypatch.setattr(worker, "_runtime", None)
    engine, settings = _sqlite_engine(tmp_path, audit_spool_dir=tmp_path / "worker-spool")
    engine.dispose()
    runtime = worker.use_runtime(settings)
    try:
        trail = trail_for(runtime.exporter.engine)
        assert trail.spool is not None and trail.spool.directory == tmp_path / "worker-spool"
    finally:
        close_in_process_audit(runtime.exporter.engine)
        runtime.exporter.engine.dispose()


def test_closing_writes_what_is_queued_and_releases_the_spool(backend, tmp_path, configured):
    folder = tmp_path / "spool"
    engine = configured(folder)
    trail = trail_for(engine)
    trail.record(_read("closing"))
    assert sorted(path.suffix for path in folder.iterdir()) == [".lock", ".spool"]

    close_in_process_audit(engine)

    assert list(folder.iterdir()) == []
    assert len(_events(backend.engine, "spool-test", "closing")) == 1
    assert trail_for(engine) is not trail  # a new trail for the next event


def test_a_new_spool_whose_lock_file_a_replay_removed_locks_a_new_one(tmp_path, monkeypatch):
    """A replay may take a just-created lock file, not yet locked, for an abandoned spool's and remove it: the
    spool then locks a file of its name again, so that its segments stay tied to a lock in the folder."""
    spool = Spool(tmp_path)
    lock = tmp_path / f"{spool.name}.lock"
    flock = fcntl.flock
    removed: list[int] = []

    def replay_in_between(fd: int, operation: int) -> None:
        if not removed:
            removed.append(fd)
            lock.unlink()
        flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", replay_in_between)
    spool.append(_read("locked"))
    monkeypatch.undo()

    assert removed and lock.exists()
    other = os.open(lock, os.O_WRONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: no replay takes this live spool
    finally:
        os.close(other)
    Spool.seal(spool.rotate()[1])
    assert spool.close() is False  # its segment is still there
