"""Work after commit, off the request path: outbox dispatch, subscription delivery, bulk export, housekeeping.

``thread`` (the embedded default) runs it in this process: a dispatcher thread woken after every commit that
wrote outbox rows, a small pool delivering to subscribers, an export thread. ``celery`` runs none of it here
and enqueues the same work, by id, for Celery workers on Redis (``fhir_server.worker``). Both call the same
domain functions, so a job or notification left over by one process is finished by whichever runs next.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Engine

from fhir_server import outbox
from fhir_server.bulk.export import Exporter, expire
from fhir_server.config import Settings
from fhir_server.service import FhirService
from fhir_server.subscriptions.dispatcher import Dispatcher, Sender

log = logging.getLogger("hie.background")

MATCH_BATCH = 1000
HOUSEKEEPING_SECONDS = 60.0
DISPATCH_SPACING = 0.05
"""Seconds from one dispatch pass's start to the next at least: after a quiet spell a commit is matched at once;
under a burst of writes one pass matches the events of several commits (each pass is a few statements and a
write transaction, whatever it finds)."""
MODES = ("thread", "celery", "off")


class Background:
    """The background work of one process; ``start`` and ``stop`` follow the application's lifespan."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        service: FhirService,
        *,
        sender: Sender | None = None,
        export_lease_seconds: float = 60.0,
        delivery_workers: int = 4,
    ) -> None:
        if settings.background not in MODES:
            raise ValueError(f"HIE_BACKGROUND={settings.background} is not one of {', '.join(MODES)}")
        self.mode = settings.background
        self.settings = settings
        self.engine = engine
        self.dispatcher = Dispatcher(engine, service, settings, sender=sender)
        self.exporter = Exporter(engine, settings, service.registry, lease_seconds=export_lease_seconds)
        self._delivery_workers = delivery_workers
        self._wake = threading.Event()
        self._export_wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._unlisten: Callable[[], None] | None = None
        self._celery: Any = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self.mode == "off" or self._threads:
            return
        self._stop.clear()
        self.exporter.stopping.clear()
        self._unlisten = outbox.on_commit(self.engine, self.wake)
        if self.mode == "celery":
            from fhir_server.worker import configure

            self._celery = configure(self.settings)
            self._spawn("hie-celery-enqueue", self._forward_loop)
            return
        self._pool = ThreadPoolExecutor(self._delivery_workers, thread_name_prefix="hie-deliver")
        self._spawn("hie-dispatch", self._dispatch_loop)
        self._spawn("hie-export", self._export_loop)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking work; a running export gives its job back so the next worker resumes it."""
        self._stop.set()
        self.exporter.stopping.set()
        self._wake.set()
        self._export_wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None

    @asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        self.start()
        try:
            yield
        finally:
            self.stop()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- signals -------------------------------------------------------------------------------

    def wake(self) -> None:
        """New outbox rows were committed."""
        self._wake.set()

    def export_requested(self, job_id: str) -> None:
        """A job was committed: run it (after commit, by id)."""
        if self.mode == "celery" and self._celery is not None:
            self._enqueue("hie.run_export", job_id)
        else:
            self._export_wake.set()

    def on_websocket(self, listener: Callable[[], None]) -> None:
        """``listener()`` runs (in a worker thread) whenever websocket pings were recorded."""
        self._listeners.append(listener)

    # -- thread mode ---------------------------------------------------------------------------

    def dispatch_once(self) -> None:
        """Match every committed event, then hand due subscriptions to the delivery pool (and run again at once
        when events were left to this pass by another process's pass that its lock turned away)."""
        while True:
            result = self.dispatcher.match(limit=MATCH_BATCH)
            if result.websocket:
                for listener in list(self._listeners):
                    listener()
            if result.events < MATCH_BATCH:
                break
        if result.locked and self.dispatcher.unmatched_left():
            # Another process's pass, turned away by this one's lock, left it events committed after its snapshot.
            self._wake.set()
        for subscription_id in self.dispatcher.due():
            self._submit(subscription_id)

    def _dispatch_loop(self) -> None:
        housekeeping = time.monotonic()
        while not self._stop.is_set():
            self._wake.clear()
            wait = self.settings.background_poll_seconds
            started = time.monotonic()
            try:
                self.dispatch_once()
                if time.monotonic() - housekeeping > HOUSEKEEPING_SECONDS:
                    self.dispatcher.prune()
                    housekeeping = time.monotonic()
                due = self.dispatcher.next_due_in()
                if due is not None:
                    wait = min(wait, max(due, 0.01))
            except Exception:
                log.exception("subscription dispatch failed; retrying")
            self._wake.wait(wait)
            self._stop.wait(started + DISPATCH_SPACING - time.monotonic())

    def _submit(self, subscription_id: str) -> None:
        with self._lock:
            if subscription_id in self._in_flight or self._pool is None or self._stop.is_set():
                return
            self._in_flight.add(subscription_id)
        self._pool.submit(self._deliver, subscription_id)

    def _deliver(self, subscription_id: str) -> None:
        try:
            self.dispatcher.deliver(subscription_id)
        except Exception:
            log.exception("delivery to Subscription/%s failed", subscription_id)
        finally:
            with self._lock:
                self._in_flight.discard(subscription_id)
            self._wake.set()

    def _export_loop(self) -> None:
        housekeeping = 0.0
        while not self._stop.is_set():
            self._export_wake.clear()
            try:
                while not self._stop.is_set() and self.exporter.run_next():
                    pass
                if time.monotonic() - housekeeping > min(HOUSEKEEPING_SECONDS, self.settings.export_ttl_seconds):
                    expire(self.engine, self.settings)
                    housekeeping = time.monotonic()
            except Exception:
                log.exception("bulk export worker failed; retrying")
            self._export_wake.wait(self.settings.background_poll_seconds)

    # -- celery mode ---------------------------------------------------------------------------

    def _forward_loop(self) -> None:
        """Coalesce commit signals into ``dispatch_outbox`` tasks (at most one per 50 ms)."""
        while not self._stop.is_set():
            if self._wake.wait(self.settings.background_poll_seconds) and not self._stop.is_set():
                self._wake.clear()
                self._enqueue("hie.dispatch_outbox")
                time.sleep(0.05)

    def _enqueue(self, task: str, *args: str) -> None:
        try:
            self._celery.send_task(task, args=list(args))
        except Exception:  # the broker is down: Celery beat's sweep finds the work in the database later
            log.exception("could not enqueue %s; the periodic sweep will pick the work up", task)


__all__ = ["MODES", "Background"]
