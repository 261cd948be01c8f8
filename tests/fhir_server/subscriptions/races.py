"""Forcing the races of background dispatch in tests: a matcher pass held at a chosen point, another process's
engine, the outbox as the matcher left it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event, select

from fhir_server.access.inprocess import close_in_process_audit, configure_in_process_audit
from fhir_server.config import Settings
from fhir_server.outbox import outbox
from fhir_server.storage.engine import create_db_engine, unit_of_work


@contextmanager
def paused_before_marking(engine: Engine) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Hold the first matcher pass on ``engine`` just before it marks outbox events matched, when it holds the
    matcher lock and has read the outbox in its snapshot; yields ``(reached, resume)``.

    The listener stays on the engine, idle afterwards: removing it while other threads run statements would
    change the listener list they are going through."""
    reached, resume = threading.Event(), threading.Event()

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not resume.is_set() and statement.startswith("UPDATE outbox SET matched") and not reached.is_set():
            reached.set()
            resume.wait(60)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield reached, resume
    finally:
        resume.set()


@contextmanager
def another_engine(settings: Settings) -> Iterator[Engine]:
    """An engine of its own on the same database, as another process has: commits on it wake no listener of
    the test's other engines."""
    engine = create_db_engine(settings)
    configure_in_process_audit(engine, settings)
    try:
        yield engine
    finally:
        close_in_process_audit(engine)
        engine.dispose()


def unmatched_events(engine: Engine) -> list[tuple[str, str]]:
    """``(type, id)`` of the committed events no matcher pass has seen, oldest first."""
    with unit_of_work(engine, write=False) as conn:
        rows = conn.execute(
            select(outbox.c.res_type, outbox.c.res_id).where(outbox.c.matched.is_(False)).order_by(outbox.c.seq)
        )
        return [tuple(row) for row in rows]
