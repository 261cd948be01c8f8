"""The writer thread of the audit trail writes one batch per wake: events that arrive meanwhile join the next one."""

from __future__ import annotations

import threading

from fhir_server.audit import AuditTrail, verify
from fhir_server.audit.trail import write_events
from tests.fhir_server.audit.test_spool import read_of


def test_events_recorded_during_a_write_wait_for_the_next_batch(backend, tmp_path, monkeypatch):
    trail = AuditTrail(backend.engine, batch_size=2, interval=3600, spool_dir=tmp_path / "spool")
    writes: list[tuple[int, str]] = []
    first_written = threading.Event()

    def write_and_receive_more(conn, accesses):
        write_events(conn, accesses)
        writes.append((len(accesses), threading.current_thread().name))
        if len(writes) == 1:
            trail.record(read_of(3, "batches"))  # a request finishing while the batch is written
            first_written.set()

    monkeypatch.setattr("fhir_server.audit.trail.write_events", write_and_receive_more)
    trail.record(read_of(1, "batches"))
    trail.record(read_of(2, "batches"))  # the batch size is reached: the writer thread wakes
    assert first_written.wait(60)
    trail.stop()  # ends the thread; the shutdown flush writes what it left queued

    assert writes == [(2, "hie-audit"), (1, threading.current_thread().name)]
    assert trail.pending() == 0
    assert verify(backend.engine)[2] is None
