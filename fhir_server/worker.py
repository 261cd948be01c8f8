"""Celery tasks for production: the background work of ``fhir_server.background``, run by workers on Redis.

Tasks take ids, re-read the database and call the same domain functions as the in-process worker
(STYLE.md, Celery in Saleor). ``hie worker`` configures the app from the settings object and starts a
worker, with beat embedded unless told otherwise; ``hie.sweep`` every few seconds picks up whatever was
committed while no task was enqueued (a broker outage, a crashed worker's export). Work done for a client is
audited where it is done, as ``hie-worker`` (``Exporter.run``: each export run; ``Dispatcher.deliver``: the
notifications sent), so the in-process background of ``hie serve`` is audited alike (docs/SECURITY.md, Audit).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from celery import Celery

from fhir_server.access.inprocess import configure_in_process_audit, recover_in_process_audit
from fhir_server.background import DISPATCH_SPACING, MATCH_BATCH
from fhir_server.bulk.export import Exporter, expire
from fhir_server.config import Settings, load_settings
from fhir_server.service import FhirService
from fhir_server.storage.engine import create_db_engine
from fhir_server.subscriptions.dispatcher import Dispatcher

celery_app = Celery("hie")
"""Configured by :func:`configure`, never from the environment at import time."""


@dataclass
class Runtime:
    settings: Settings
    dispatcher: Dispatcher
    exporter: Exporter


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def configure(settings: Settings) -> Celery:
    celery_app.conf.update(
        broker_url=settings.celery_broker_url,
        task_default_queue=settings.celery_queue,
        task_ignore_result=True,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        beat_schedule={
            "hie-sweep": {"task": "hie.sweep", "schedule": max(1.0, settings.background_poll_seconds * 5)},
        },
    )
    return celery_app


def use_runtime(settings: Settings, runtime: Runtime | None = None) -> Runtime:
    """Set what tasks run against (``hie worker`` and tests); built from ``settings`` unless given."""
    global _runtime
    with _runtime_lock:
        if runtime is None:
            engine = create_db_engine(settings)
            configure_in_process_audit(engine, settings)
            service = FhirService(
                allow_multiple_delete=settings.allow_multiple_delete, max_delete=settings.max_conditional_delete
            )
            runtime = Runtime(
                settings, Dispatcher(engine, service, settings), Exporter(engine, settings, service.registry)
            )
        _runtime = runtime
        return runtime


def runtime() -> Runtime:
    with _runtime_lock:
        found = _runtime
    return found if found is not None else use_runtime(load_settings())


@celery_app.task(name="hie.dispatch_outbox")
def dispatch_outbox() -> int:
    """Match committed events to Subscriptions and enqueue a delivery task per due subscriber."""
    dispatcher = runtime().dispatcher
    matched = 0
    while True:
        result = dispatcher.match(limit=MATCH_BATCH)
        matched += result.events
        if result.events < MATCH_BATCH:
            break
    if result.locked and dispatcher.unmatched_left():
        # A pass turned away by this one's lock left it events committed after this one's snapshot.
        dispatch_outbox.apply_async(countdown=DISPATCH_SPACING)
    for subscription_id in dispatcher.due():
        deliver_subscription.delay(subscription_id)
    return matched


@celery_app.task(name="hie.deliver_subscription")
def deliver_subscription(subscription_id: str) -> int:
    """Send one subscriber's due notifications in order (the lease keeps other workers off it).

    Then dispatch again when the next notification can go: a worker turned away by another's lease waits until
    that lease could run out, as the holder dispatches again itself once it let go (``next_due_in``)."""
    sent = runtime().dispatcher.deliver(subscription_id)
    wait = runtime().dispatcher.next_due_in()
    if wait is not None:
        dispatch_outbox.apply_async(countdown=wait)
    return sent


@celery_app.task(name="hie.run_export")
def run_export(job_id: str) -> bool:
    """Run or resume one export job."""
    return runtime().exporter.run(job_id)


@celery_app.task(name="hie.sweep")
def sweep() -> None:
    """Periodic safety net: dispatch, start claimable exports, expire old files, prune the outbox."""
    current = runtime()
    dispatch_outbox()
    for job_id in current.exporter.claimable():
        run_export.delay(job_id)
    expire(current.exporter.engine, current.settings)
    current.dispatcher.prune()


def run_worker(settings: Settings, *, beat: bool, concurrency: int) -> None:
    """``hie worker``: a Celery worker (threads pool) consuming the exchange's queue."""
    configure(settings)
    recover_in_process_audit(use_runtime(settings).exporter.engine)  # the audit events a killed worker left
    argv = ["worker", "--loglevel=INFO", "--pool=threads", f"--concurrency={concurrency}"]
    celery_app.worker_main([*argv, "--beat"] if beat else argv)


__all__ = ["Runtime", "celery_app", "configure", "run_worker", "runtime", "use_runtime"]
