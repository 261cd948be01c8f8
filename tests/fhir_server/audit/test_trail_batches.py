"""The writer thread of the audit trail writes one batch per wake: events that arrive meanwhile join the next one."""

from __future__ import annotations

import threading
import time

from fhir_server.audit import AuditTrail, verify
from fhir_server.audit.events import Access
from fhir_server.audit.trail import write_events


def _access(n: int) -> Access:
    return Access(
        interaction="read",
        status=200,
        recorded=time.time_ns() // 1000,
        method="GET",
        path=f"/fhir/Patient/batch-{n}",
        client_id="batches",
        patients=[f"Patient/batch-{n}"],
    )


def test_events_recorded_during_a_write_wait_for_the_next_batch(backend, tmp_path, monkeypatch):
    trail = AuditTrail(backend.engine, batch_size=2, interval=3600, spool_dir=tmp_path / "spool")
    writes: list[tuple[int, str]] = []
    first_written = threading.Event()

    def write_and_receive_more(conn, accesses):
        write_events(conn, accesses)
        writes.append((len(accesses), threading.current_thread().name))
        if len(writes) == 1:
            trail.record(_access(3))  # a request finishing while the batch is written
            first_written.set()

    monkeypatch.setattr("fhir_server.audit.trail.write_events", write_and_receive_more)
    trail.record(_access(1))
    trail.record(_access(2))  # the batch size is reached: the writer thread wakes
    assert first_written.wait(60)
    trail.stop()  # ends the thread; the shutdown flush writes what it left queued

    assert writes == [(2, "hie-audit"), (1, threading.current_thread().name)]
    assert trail.pending() == 0
    assert verify(backend.engine)[2] is None
