"""The audit of the exchange's own work: HL7 v2 messages applied by the adapter, CLI commands that write resources.

Requests are audited by the audit middleware; work that runs in-process, as the exchange itself (SYSTEM), is not
a request. :func:`audited_work` wraps one piece of it (a message, a command): a repository write hook
(:func:`note_in_process_writes`) gathers the versions it writes, and when it ends one AuditEvent (IHE BALP, built
by ``fhir_server.audit``) is queued on the audit trail of its database, with the exchange's agent as the
requesting client (``hie-hl7v2``, ``hie-cli``), the sending facility as its institution (HL7 MSH-4), the
resources that are still stored (a retried or rolled-back unit of work leaves nothing behind) and the residents
they concern. The event joins the same hash chain as the requests' events.

Like a request's, the event is appended to the process's audit spool before the work's outcome is reported (an
HL7 ACK, a command's exit), in the spool folder of its database's settings (:func:`configure_in_process_audit`),
so a process killed before the writer's flush loses none: the next server, ``hie mllp`` or ``hie worker`` to
start, the next audited command and ``hie audit verify`` replay it (:func:`recover_in_process_audit`).
"""

from __future__ import annotations

import atexit
import getpass
import logging
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, make_url

from fhir_server.access.stamping import still_stored
from fhir_server.audit import AccessCollector, AuditTrail
from fhir_server.audit.events import Access as AuditAccess
from fhir_server.audit.spool import spool_directory
from fhir_server.auth.principal import SYSTEM
from fhir_server.config import Settings, load_settings
from fhir_server.repository import Version
from fhir_server.storage.engine import unit_of_work

if TYPE_CHECKING:
    import typer

log = logging.getLogger("hie.audit")

HL7V2_AGENT = "hie-hl7v2"
"""Client id of the HL7 v2 adapter (``hie mllp``, ``hie hl7 replay``) in the audit trail."""
CLI_AGENT = "hie-cli"
"""Client id of the ``hie`` command line in the audit trail."""
WORKER_AGENT = "hie-worker"
"""Client id of background work (bulk export runs, subscription deliveries; ``hie worker`` or ``hie serve``)."""
MAX_LISTED = 10_000
"""Resources one event lists at most (a large ``hie import``); the others are counted in its ``outcomeDesc``."""


@dataclass
class InProcessWork:
    """One piece of the exchange's own work being audited; its outcome is set by the code that runs it."""

    agent: str
    interaction: str
    method: str
    path: str
    organization: str | None = None
    """The institution the work was done for (HL7: ``Organization/{sending facility}``)."""
    user: str | None = None
    """The operating-system account that ran a command."""
    status: int = 200
    """HTTP-like status of the outcome: 2xx done, 4xx refused (HL7 AE), 5xx failed (HL7 AR)."""
    always: bool = False
    """Record the event even when no resource was written (an administrative command)."""
    operation: str | None = None
    """What ran, as a second subtype coding (the command: ``hie demo load``)."""
    versions: list[Version] = field(default_factory=list)
    reads: list[Version] = field(default_factory=list)
    """Versions the work read and passed on (notifications sent to a subscriber)."""
    unlisted: int = 0
    """Versions written or read beyond :data:`MAX_LISTED`."""
    engine: Engine | None = None
    remote_address: str | None = None
    """The network address the work came from (the MLLP peer that sent an HL7 message)."""


_WORK: ContextVar[InProcessWork | None] = ContextVar("hie_in_process_work", default=None)
_TRAILS: weakref.WeakKeyDictionary[Engine, AuditTrail] = weakref.WeakKeyDictionary()
_SETTINGS: weakref.WeakKeyDictionary[Engine, Settings] = weakref.WeakKeyDictionary()
_TRAILS_LOCK = threading.Lock()


def note_in_process_writes(conn: Connection, versions: Sequence[Version]) -> None:
    """Repository write hook: the versions written while in-process work is audited in this context."""
    work = _WORK.get()
    if work is not None:
        room = max(0, MAX_LISTED - len(work.versions))
        work.versions.extend(versions[:room])
        work.unlisted += max(0, len(versions) - room)
        work.engine = work.engine or conn.engine


def note_in_process_reads(versions: Sequence[Version], engine: Engine | None = None) -> None:
    """Versions the audited work of this context read and passed on: listed in its event with their residents."""
    work = _WORK.get()
    if work is not None:
        room = max(0, MAX_LISTED - len(work.versions) - len(work.reads))
        work.reads.extend(versions[:room])
        work.unlisted += max(0, len(versions) - room)
        work.engine = work.engine or engine


def current_work() -> InProcessWork | None:
    """The in-process work audited in this context, if any (to set its outcome or institution)."""
    return _WORK.get()


@contextmanager
def audited_work(
    agent: str,
    *,
    interaction: str,
    method: str,
    path: str,
    engine: Engine | None = None,
    organization: str | None = None,
    user: str | None = None,
    operation: str | None = None,
    always: bool = False,
    flush: bool = False,
    remote_address: str | None = None,
) -> Iterator[InProcessWork]:
    """Audit what the block writes as one AuditEvent of ``agent``; ``flush`` writes it before returning (a CLI
    process about to exit), else the trail's writer thread does shortly after. An exception is recorded as 500."""
    work = InProcessWork(
        agent,
        interaction,
        method,
        path,
        organization=organization,
        user=user,
        operation=operation,
        always=always,
        engine=engine,
        remote_address=remote_address,
    )
    token = _WORK.set(work)
    try:
        yield work
    except BaseException:
        work.status = max(work.status, 500)
        raise
    finally:
        _WORK.reset(token)
        try:
            record(work, flush=flush)
        except Exception:  # the audit of the work must not undo it; the failure is logged loudly
            log.exception("the audit event of %s %s could not be recorded", work.method, work.path)


def record(work: InProcessWork, *, flush: bool = False) -> None:
    """Queue the AuditEvent of finished work on its database's trail (nothing when it wrote nothing)."""
    if work.engine is None or (not work.versions and not work.reads and not work.always):
        return
    collector = AccessCollector({"principal": SYSTEM})
    kept: list[Version] = []
    if work.versions:
        with unit_of_work(work.engine, write=False) as conn:
            kept = still_stored(conn, work.versions)
    for version in {(v.res_pk, v.version): v for v in [*kept, *work.reads]}.values():
        if version.body is None:
            collector.reference(f"{version.res_type}/{version.res_id}")
        else:
            collector.resource(version.resource())
    if not collector.resources and not work.always:
        return
    trail = trail_for(work.engine)
    if flush:  # a command: what killed processes left in the spool goes first
        recover_in_process_audit(work.engine)
    trail.record(
        AuditAccess(
            interaction=work.interaction,
            status=work.status,
            recorded=time.time_ns() // 1000,
            method=work.method,
            path=work.path if not work.unlisted else f"{work.path} (and {work.unlisted} more versions {_more(work)})",
            client_id=work.agent,
            organization=work.organization,
            user=work.user,
            operation=work.operation,
            resources=list(collector.resources),
            patients=list(collector.patients),
            remote_address=work.remote_address,
        )
    )
    if flush:
        trail.stop()  # written now; the writer thread is not kept for a process about to exit


def _more(work: InProcessWork) -> str:
    if not work.reads:
        return "written"
    return "read" if not work.versions else "written or read"


@contextmanager
def audited_task(
    engine: Engine, task: str, subject: str, *, organization: str | None = None, client: str | None = None
) -> Iterator[InProcessWork]:
    """Background work done for a client (a bulk export run, the notifications sent to a subscriber): one event
    of :data:`WORKER_AGENT` naming the task, what it worked on and for whom; what it wrote and passed on."""
    path = f"{task} {subject}" + (f" for client={client}" if client else "")
    with audited_work(
        WORKER_AGENT,
        interaction="operation",
        method="TASK",
        path=path,
        operation=task,
        engine=engine,
        organization=organization,
    ) as work:
        yield work


def configure_in_process_audit(engine: Engine, settings: Settings) -> None:
    """Audit the in-process work on ``engine``'s database as ``settings`` say (the spool folder, flush interval and
    batch size of its trail): the settings the engine was built from (the server, the worker, tests), from its
    first event on. An engine not configured follows the environment's settings, as a ``hie`` command's does."""
    with _TRAILS_LOCK:
        _SETTINGS[engine] = settings


def trail_for(engine: Engine) -> AuditTrail:
    """The audit trail in-process work of this process writes to, one per database, written at exit; its events
    are spooled like the requests' (``fhir_server.audit.spool``) unless its settings turn the spool off."""
    with _TRAILS_LOCK:
        trail = _TRAILS.get(engine)
        if trail is None:
            settings = _settings_of(engine)
            folder = spool_directory(settings.database_url, settings.audit_spool_dir) if settings.audit_spool else None
            trail = _TRAILS[engine] = AuditTrail(
                engine, batch_size=settings.audit_batch_size, interval=settings.audit_flush_seconds, spool_dir=folder
            )
            atexit.register(trail.stop)
        return trail


def _settings_of(engine: Engine) -> Settings:
    """The configured settings of ``engine``, else the environment's; the environment's spool folder only when
    they name this very database (a spool folder holds one database's events: a replay writes them all to it)."""
    settings = _SETTINGS.get(engine)
    if settings is not None:
        return settings
    settings = load_settings()
    url = engine.url.render_as_string(hide_password=False)
    if make_url(settings.database_url).render_as_string(hide_password=False) != url:
        settings = settings.model_copy(update={"database_url": url, "audit_spool_dir": None})
    return settings


def recover_in_process_audit(engine: Engine) -> int:
    """Write the events that processes killed before their flush left in the spool folder of ``engine``'s
    database (in-process work and requests alike); how many. A failure is logged: the spool stays for the next.
    Run when ``hie mllp`` and ``hie worker`` start and by each audited command before its own event."""
    try:
        return trail_for(engine).recover()
    except Exception:
        log.exception("the audit spool of a previous process could not be replayed")
        return 0


def close_in_process_audit(engine: Engine) -> None:
    """Write what in-process work on ``engine``'s database queued and release its spool, before the engine is
    disposed of (a test dropping its database); the next event starts a new trail."""
    with _TRAILS_LOCK:
        trail = _TRAILS.pop(engine, None)
        _SETTINGS.pop(engine, None)
    if trail is not None:
        atexit.unregister(trail.stop)
        trail.stop()


def flush_in_process_audit(engine: Engine | None = None) -> int:
    """Write the queued events of in-process work now (tests, orderly shutdown): of ``engine``'s database, or of
    every database this process wrote to; how many were written."""
    with _TRAILS_LOCK:
        trails = [trail for owner, trail in _TRAILS.items() if engine is None or owner is engine]
    return sum(trail.flush() for trail in trails)


SERVING_COMMANDS = frozenset({"serve", "worker", "mllp", "bench"})
"""``hie`` commands that serve requests, tasks or messages (each audited on its own) rather than do one job."""


_ARGUMENTS = "hie.audit.arguments"


def remember_arguments(ctx: typer.Context, args: list[str]) -> None:
    """From the root group's ``resolve_command``: the arguments naming the command, for :func:`command_path`."""
    ctx.meta.setdefault(_ARGUMENTS, list(args))


def command_path(ctx: typer.Context) -> str:
    """The full path of the command about to run (``hie mpi backfill``, not ``hie mpi``), from the root context."""
    args = list(ctx.meta.get(_ARGUMENTS) or [ctx.invoked_subcommand or ""])
    path = [ctx.command_path]
    command: Any = ctx.command
    while hasattr(command, "get_command") and args and not args[0].startswith("-"):
        command = command.get_command(ctx, args[0])  # a group's subcommand (None: an unknown name)
        if command is None:
            break
        path.append(args.pop(0))
    return " ".join(path)


def audit_command(ctx: typer.Context) -> None:
    """From the ``hie`` callback: audit what the command about to run writes, as the CLI, when it ends."""
    name = ctx.invoked_subcommand
    if name is None or name in SERVING_COMMANDS or ctx.resilient_parsing:
        return
    path = command_path(ctx)
    ctx.with_resource(
        audited_work(
            CLI_AGENT, interaction="operation", method="CLI", path=path, operation=path, user=login_name(), flush=True
        )
    )


def note_command(engine: Engine, command: str, detail: str) -> None:
    """An administrative command that writes no resource (``client create``, below ``hie auth``) and what it did
    (``client=… organization=…``): recorded all the same."""
    work = current_work()
    if work is not None and work.agent == CLI_AGENT:
        work.engine = work.engine or engine
        work.always = True
        named = work.operation or work.path
        work.operation = named if named.endswith(f" {command}") else f"{named} {command}"
        work.path = f"{work.operation} {detail}"


def login_name() -> str | None:
    """The operating-system account running this process (who ran a command), when it can be told."""
    try:
        return getpass.getuser()
    except Exception:  # no such account (a container without a passwd entry)
        return None


__all__ = [
    "CLI_AGENT",
    "HL7V2_AGENT",
    "WORKER_AGENT",
    "InProcessWork",
    "audit_command",
    "audited_task",
    "audited_work",
    "close_in_process_audit",
    "command_path",
    "configure_in_process_audit",
    "current_work",
    "flush_in_process_audit",
    "login_name",
    "note_command",
    "note_in_process_reads",
    "note_in_process_writes",
    "recover_in_process_audit",
    "remember_arguments",
    "trail_for",
]
