"""The audit trail of one process: requests queue what they did; a background thread appends it in batches.

A request only appends an ``Access`` to an in-memory queue after its response; the AuditEvent is built, hashed
and written by a writer thread (every ``interval`` seconds, or sooner when a batch is full), in one transaction
per batch. ``flush`` writes everything queued before it returns; ``stop`` (the application's shutdown) flushes.
A batch that cannot be written stays queued and is retried; nothing is dropped while the process lives.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from sqlalchemy import Engine

from fhir_server.audit.chain import Entry, append
from fhir_server.audit.events import Access, audit_event
from fhir_server.storage.engine import unit_of_work

log = logging.getLogger("hie.audit")

Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]
MAX_BACKOFF_SECONDS = 60.0


class AuditTrail:
    """Queue and writer of the audit events of one process."""

    def __init__(self, engine: Engine, *, enabled: bool = True, batch_size: int = 500, interval: float = 0.2) -> None:
        self.engine = engine
        self.enabled = enabled
        self.batch_size = batch_size
        self.interval = interval
        self._queue: deque[Access] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def record(self, access: Access) -> None:
        """Queue one request's access (cheap: no database work on the request path)."""
        if not self.enabled:
            return
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
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
                try:
                    entries = [Entry(access.recorded, audit_event(access)) for access in batch]
                    with unit_of_work(self.engine) as conn:
                        append(conn, entries)
                except BaseException:
                    self._queue.extendleft(reversed(batch))
                    raise
                written += len(batch)
        return written

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
        self._stop.clear()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._loop, name="hie-audit", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        backoff = self.interval
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
                backoff = self.interval
            except Exception:
                backoff = min(MAX_BACKOFF_SECONDS, backoff * 4)
                log.exception(
                    "writing %d audit events failed; they stay queued, next attempt in %.1f s", self.pending(), backoff
                )
                self._stop.wait(backoff)


def with_trail(trail: AuditTrail, lifespan: Callable[[Any], AbstractAsyncContextManager[None]]) -> Lifespan:
    """The application's ``lifespan`` extended to write the queued audit events at shutdown."""

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        async with lifespan(app):
            try:
                yield
            finally:
                trail.stop()

    return run
