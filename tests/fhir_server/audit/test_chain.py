"""The audit log's hash chain on both backends: append-only, one linear chain across writers, tampering named."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from sqlalchemy import delete, text, update
from sqlalchemy.exc import DatabaseError
from typer.testing import CliRunner

from fhir_server.audit import AuditTrail, verify
from fhir_server.audit.chain import GENESIS, chain_hash
from fhir_server.audit.events import Access
from fhir_server.cli import app as hie
from fhir_server.storage import create_db_engine
from fhir_server.storage.tables import audit_log, audit_patients
from tests.conftest import Backend


def _access(n: int, patient: str = "Patient/p1") -> Access:
    return Access(
        interaction="read",
        status=200,
        recorded=time.time_ns() // 1000,
        method="GET",
        path=f"/fhir/Patient/{n}",
        client_id=f"client-{n % 3}",
        organization="Organization/wz-1",
        resources=[f"Observation/{n}"],
        patients=[patient],
    )


def _write(backend: Backend, count: int) -> None:
    trail = AuditTrail(backend.engine)
    for n in range(count):
        trail.record(_access(n))
    trail.stop()


def test_an_empty_log_verifies(backend):
    assert verify(backend.engine) == (0, GENESIS, None)


def test_rows_chain_from_the_genesis_hash(backend):
    _write(backend, 3)
    with backend.engine.connect() as conn:
        rows = conn.execute(audit_log.select().order_by(audit_log.c.seq)).all()
    assert [row.seq for row in rows] == [1, 2, 3]
    assert rows[0].prev_hash == GENESIS
    for before, row in itertools.pairwise(rows):
        assert row.prev_hash == before.hash
        assert row.hash == chain_hash(before.hash, row.event.encode())
    assert (rows[0].client_id, rows[0].organization, rows[0].action, rows[0].outcome) == (
        "client-0",
        "Organization/wz-1",
        "R",
        "0",
    )
    checked, head, broken = verify(backend.engine)
    assert (checked, head, broken) == (3, rows[-1].hash, None)


@pytest.mark.parametrize(
    "statement",
    [
        update(audit_log).values(outcome="8"),
        delete(audit_log),
        update(audit_patients).values(patient="Patient/other"),
        delete(audit_patients),
    ],
    ids=["update log", "delete log", "update patients", "delete patients"],
)
def test_the_database_refuses_to_change_or_remove_audit_rows(backend, statement):
    _write(backend, 1)
    with pytest.raises(DatabaseError, match="append-only"), backend.engine.begin() as conn:
        conn.execute(statement)


def test_concurrent_writers_with_their_own_engines_keep_one_linear_chain(backend):
    engines = [create_db_engine(backend.settings) for _ in range(2)]
    trails = [AuditTrail(engine, batch_size=7, interval=0.01) for engine in engines]
    before = verify(backend.engine)[0]

    def write(trail: AuditTrail, offset: int) -> None:
        for n in range(60):
            trail.record(_access(offset + n))
            if n % 9 == 0:
                trail.flush()

    threads = [threading.Thread(target=write, args=(trail, 1000 * i)) for i, trail in enumerate(trails)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for trail in trails:
        trail.stop()
    for engine in engines:
        engine.dispose()
    checked, _, broken = verify(backend.engine)
    assert broken is None
    assert checked == before + 120


def test_hie_audit_verify_reports_ok(backend, monkeypatch):
    monkeypatch.setenv("HIE_DATABASE_URL", backend.url)
    result = CliRunner().invoke(hie, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert f"OK: {verify(backend.engine)[0]} audit event(s) verified" in result.output


def _tamper(backend: Backend, statement: str, params: dict) -> None:
    """Change a row behind the triggers' back, as someone with direct database access could."""
    with backend.engine.begin() as conn:
        if backend.name == "postgres":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
            conn.execute(text(statement), params)
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text(statement), params)
            conn.execute(
                text(
                    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
                    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: UPDATE on audit_log refused'); END"
                )
            )


def test_hie_audit_verify_names_a_tampered_row(backend, monkeypatch):
    with backend.engine.connect() as conn:
        row = conn.execute(audit_log.select().where(audit_log.c.seq == 2)).one()
    forged = row.event.replace('"outcome":"0"', '"outcome":"8"')
    assert forged != row.event
    _tamper(backend, "UPDATE audit_log SET event = :event WHERE seq = 2", {"event": forged})

    checked, _, broken = verify(backend.engine)
    assert checked == 1 and broken is not None
    assert broken.seq == 2 and broken.problem == "the event does not match its hash"
    assert broken.found == row.hash and broken.expected == chain_hash(row.prev_hash, forged.encode())

    monkeypatch.setenv("HIE_DATABASE_URL", backend.url)
    result = CliRunner().invoke(hie, ["audit", "verify"])
    assert result.exit_code == 1
    assert "BROKEN at seq 2: the event does not match its hash" in result.output
    assert row.hash in result.output


def test_a_rewritten_hash_breaks_the_next_link(backend):
    """Whoever edits an event and recomputes its hash breaks the link from the row after it."""
    _tamper(backend, "UPDATE audit_log SET event = :event, hash = :hash WHERE seq = 2", _rehashed(backend))
    _, _, broken = verify(backend.engine)
    assert broken is not None and broken.seq == 3
    assert broken.problem == "prev_hash is not the hash of the row before"


def _rehashed(backend: Backend) -> dict:
    with backend.engine.connect() as conn:
        row = conn.execute(audit_log.select().where(audit_log.c.seq == 2)).one()
    event = row.event.replace('"outcome":"8"', '"outcome":"0"').replace("/fhir/Patient/1", "/fhir/Patient/9")
    assert "/fhir/Patient/9" in event
    return {"event": event, "hash": chain_hash(row.prev_hash, event.encode())}


def test_a_batch_that_cannot_be_written_stays_queued(tmp_path):
    from fhir_server.config import Settings
    from fhir_server.migrations import upgrade

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'later.db'}")
    engine = create_db_engine(settings)
    trail = AuditTrail(engine, interval=60)
    trail.record(_access(1))
    trail.record(_access(2))
    with pytest.raises(DatabaseError):
        trail.flush()  # no schema yet
    assert trail.pending() == 2
    upgrade(engine)
    assert trail.flush() == 2 and trail.pending() == 0
    assert verify(engine)[0] == 2
    trail.stop()
    engine.dispose()
