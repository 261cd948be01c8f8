"""The audit trail of one process: requests queue what they did; a background thread appends it in batches.

A request only appends an ``Access`` to an in-memory queue after its response (and, with a spool, one line to
the spool file: ``fhir_server.audit.spool``); the AuditEvent is built, hashed and written by a writer thread
(every ``interval`` seconds, or sooner when ``batch_size`` events wait), in one transaction per flush.
``flush`` writes everything queued before it returns; ``stop`` (the application's shutdown) flushes. A batch
that cannot be written stays queued and is retried; nothing is dropped while the process lives, and with a
spool nothing queued is lost when it is killed: ``recover`` (at start-up) writes what a dead process left.
The exchange's in-process work (HL7 v2 messages, commands, background runs) queues its events the same way, on
a trail of its own per database (``fhir_server.access.inprocess``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from fhir_server.audit.chain import Entry, append
from fhir_server.audit.events import Access, canonical_parts, outcome_code
from fhir_server.audit.spool import Spool, forget, mark_written, replay
from fhir_server.storage.engine import unit_of_work

log = logging.getLogger("hie.audit")

Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]
MAX_BACKOFF_SECONDS = 60.0


class AuditTrail:
    """Queue and writer of the audit events of one process."""

    def __init__(
        self,
        engine: Engine,
        *,
        enabled: bool = True,
        batch_size: int = 500,
        interval: float = 0.2,
        spool_dir: Path | None = None,
    ) -> None:
        self.engine = engine
        self.enabled = enabled
        self.batch_size = batch_size
        self.interval = interval
        self.spool = Spool(spool_dir) if enabled and spool_dir is not None else None
        self._queue: deque[Access] = deque()
        self._queue_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._sealed = 0
        """The last spool segment ended; its events and those of every segment before it are written or queued."""
        self._discarded = 0
        self.written = 0
        """Events written by this trail (for the log line at shutdown)."""
        self.batches = 0
        self.largest = 0

    def record(self, access: Access) -> None:
        """Queue one request's access (cheap: no database work on the request path)."""
        if not self.enabled:
            return
        with self._queue_lock:  # the spool segment and the queue hold the same events
            if self.spool is not None:
                self.spool.append(access)
            self._queue.append(access)
        if self._thread is None:
            self._start()
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    def pending(self) -> int:
        return len(self._queue)

    def flush(self) -> int:
        """Write every queued event now; how many were written."""
        written = 0
        with self._write_lock:
            while batch := self._write_batch():
                written += batch
        return written

    def _write_batch(self) -> int:
        """Write what is queued now as one batch (one ``fsync``, one transaction); how many events. Under
        ``_write_lock``."""
        with self._queue_lock:
            ended, descriptor = self.spool.rotate() if self.spool is not None else (0, None)
            batch = list(self._queue)
            self._queue.clear()
        self._sealed = max(self._sealed, ended)  # the batch holds every event of the segments up to it
        if not batch:
            return 0
        try:
            Spool.seal(descriptor)  # outside the lock: requests queue on while the file is synced
            with unit_of_work(self.engine) as conn:
                write_events(conn, batch)
                if self._sealed > self._discarded:
                    mark_written(conn, self.spool.name, self._sealed)  # type: ignore[union-attr]
        except BaseException:
            with self._queue_lock:
                self._queue.extendleft(reversed(batch))
            raise
        if self._sealed > self._discarded:
            self.spool.discard(self._discarded + 1, self._sealed)  # type: ignore[union-attr]
            self._discarded = self._sealed
        self.written += len(batch)
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        return len(batch)

    def recover(self) -> int:
        """Write the events that processes killed before their flush left in the spool; how many."""
        if self.spool is None:
            return 0
        return replay(self.engine, self.spool.directory, write_events, own=self.spool.name)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the writer thread and write what is left (the application's shutdown)."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        try:
            self.flush()
        except Exception:
            log.exception("%d audit events could not be written at shutdown", self.pending())
        else:
            self._release_spool()
        if self.batches:
            log.info("wrote %d audit events in %d batches (largest %d)", self.written, self.batches, self.largest)
        self._stop.clear()

    def _release_spool(self) -> None:
        """Close the spool once everything is written, and drop its ``audit_spool`` row (a row left behind, the
        database being gone at exit, is harmless: no segment of that name remains)."""
        if self.spool is None or not self.spool.close():
            return
        try:
            forget(self.engine, self.spool.name)
        except Exception as error:
            log.warning("the audit_spool row of %s stays (%s); it is harmless", self.spool.name, type(error).__name__)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._loop, name="hie-audit", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        """One batch per ``interval`` (sooner when ``batch_size`` events wait): events that arrive while a batch
        is written wait for the next one rather than making a batch of their own, so that under load each
        ``fsync``, spool file and transaction carries many events."""
        backoff = self.interval
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                with self._write_lock:
                    self._write_batch()
                backoff = self.interval
            except Exception:
                backoff = min(MAX_BACKOFF_SECONDS, backoff * 4)
                log.exception(
                    "writing %d audit events failed; they stay queued, next attempt in %.1f s", self.pending(), backoff
                )
                self._stop.wait(backoff)


def with_trail(trail: AuditTrail, lifespan: Callable[[Any], AbstractAsyncContextManager[None]]) -> Lifespan:
    """The application's ``lifespan`` extended to replay abandoned spools at start-up and to write the queued
    audit events at shutdown."""

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        try:
            trail.recover()
        except Exception:  # the server still starts; the spool stays for the next start
            log.exception("the audit spool of a previous process could not be replayed")
        async with lifespan(app):
            try:
                yield
            finally:
                trail.stop()

    return run


def write_events(conn: Connection, accesses: list[Access]) -> None:
    """Build the AuditEvents of ``accesses`` and append them to the chain, in order."""
    append(conn, [_entry(access) for access in accesses])


def _entry(access: Access) -> Entry:
    """An access's chain entry, its indexed columns and residents taken from the access itself (what
    ``event_columns`` and ``event_patients`` would find in its event) rather than by walking the event."""
    organization = access.organization
    if organization is not None and not organization.startswith("Organization/"):
        organization = None
    columns = (
        access.client_id or "anonymous",
        organization or None,
        access.effective_action,
        outcome_code(access.status),
    )
    patients = list(dict.fromkeys(p for p in access.patients if p))
    return Entry(access.recorded, None, columns, patients, canonical_parts(access))
