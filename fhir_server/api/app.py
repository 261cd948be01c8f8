"""The FastAPI application: one generic handler per FHIR interaction, errors mapped in one place."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ehr_archive.identifiers import validate_patient_identifiers
from ehr_archive.mpi import install_mpi
from fhir_server import access, definitions
from fhir_server.access.inprocess import configure_in_process_audit
from fhir_server.api import bulk, interactions, operations, search, subscriptions
from fhir_server.api.dispatch import hot_routes
from fhir_server.api.hardening import install_hardening, install_log_masking, rate_limiter, rate_limits
from fhir_server.api.negotiation import FHIR_JSON
from fhir_server.audit import AuditMiddleware, AuditTrail
from fhir_server.audit.spool import spool_directory
from fhir_server.audit.trail import Lifespan, with_trail
from fhir_server.auth import endpoint as auth_endpoint
from fhir_server.auth.authority import Authority
from fhir_server.auth.middleware import AuthMiddleware
from fhir_server.background import Background
from fhir_server.config import Settings, load_settings
from fhir_server.errors import FhirError, Issue, http_status, operation_outcome
from fhir_server.service import FhirService
from fhir_server.storage.engine import (
    CommitInDoubt,
    bounds_statements,
    connection_lost,
    create_db_engine,
    statement_timed_out,
    unit_of_work,
)
from fhir_server.subscriptions.criteria import check_subscription

log = logging.getLogger("hie.api")


def patient_identifier_check(resource: dict[str, Any]) -> list[Issue]:
    """Regional identifier rules (GB 11643-1999 resident ID numbers and the region's card systems)."""
    if resource.get("resourceType") != "Patient":
        return []
    report = validate_patient_identifiers(resource)
    found = [*report.errors, *report.warnings]
    return [Issue(i.code, i.diagnostics, severity=i.severity, expression=i.expression) for i in found]


T = TypeVar("T")
_RETRIES = 3
INLINE_READ_TIMEOUT_MS = 200
"""How long a read by id on PostgreSQL may hold the event loop (it takes well under a millisecond)."""


class Context:
    """What every handler needs: settings, the FHIR service and a way to run a unit of work."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self._inline_reads = hasattr(engine.pool, "checkedin") and (
            engine.dialect.name == "sqlite" or bounds_statements(engine)
        )
        self.service = FhirService(
            allow_multiple_delete=settings.allow_multiple_delete,
            max_delete=settings.max_conditional_delete,
            checks=[patient_identifier_check, check_subscription],
        )
        if settings.mpi_enabled:
            install_mpi(self.service, rebuild=settings.mpi_golden_rebuild)

    async def run(self, work: Callable[[Connection], T], *, write: bool = True, bounded: bool = False) -> T:
        """Run ``work`` in one transaction off the event loop; retry when a concurrent writer won a race.

        ``bounded``: a read of one resource by id. With a pooled connection idle it runs on the event loop instead,
        cheaper in CPU than handing it to a worker thread and back. On SQLite the read is a few page-cache lookups
        that never wait for a writer (WAL). On PostgreSQL it is a primary-key lookup on a session whose statements
        are cancelled after ``INLINE_READ_TIMEOUT_MS`` (a table locked by a migration, an overloaded server): then
        it runs again in a worker thread, without that limit.
        """
        if bounded and not write and self._inline_reads and self.engine.pool.checkedin():  # type: ignore[attr-defined]
            try:
                return self._run_sync(work, write, INLINE_READ_TIMEOUT_MS)
            except DBAPIError as exc:
                if not statement_timed_out(exc):
                    raise
                log.warning(
                    "a read by id took over %d ms on the event loop; reading in a thread", INLINE_READ_TIMEOUT_MS
                )
        return await run_in_threadpool(self._run_sync, work, write)

    def _run_sync(self, work: Callable[[Connection], T], write: bool, statement_timeout_ms: int | None = None) -> T:
        """Retries: a write that lost a race with a concurrent writer, a read whose connection was lost (the pool
        hands out connections without a ``SELECT 1`` first; a database restart surfaces at the first statement)."""
        for attempt in range(_RETRIES):
            try:
                with (
                    unit_of_work(self.engine, write=write, statement_timeout_ms=statement_timeout_ms) as conn,
                    access.recorded_writes(conn, self.service.repository),
                ):
                    return work(conn)
            except CommitInDoubt as exc:
                raise FhirError(
                    "exception",
                    "The connection to the database was lost while the change was being committed: it may or may "
                    "not have been stored. Read the resource back before sending the change again.",
                ) from exc
            except DBAPIError as exc:
                if connection_lost(exc):
                    if write or attempt == _RETRIES - 1:
                        raise _database_unreachable(write) from exc
                    log.warning("retrying a read after the database connection was lost: %s", type(exc.orig).__name__)
                    continue
                if attempt == _RETRIES - 1 or not _is_retryable(exc):
                    raise
                log.info("retrying a unit of work after a concurrent write: %s", type(exc.orig).__name__)
        raise AssertionError("unreachable")

    def base_url(self, request: Request) -> str:
        if self.settings.base_url:
            return self.settings.base_url.rstrip("/")
        return str(request.base_url).rstrip("/") + "/fhir"


def _database_unreachable(write: bool) -> FhirError:
    """503 for a unit of work that lost its database connection before committing (nothing of it is stored)."""
    if write:
        message = "The connection to the database was lost before the change was committed: nothing was stored; retry."
    else:
        message = "The database cannot be reached; retry in a moment."
    return FhirError("transient", message, headers={"Retry-After": "1"})


def _is_retryable(exc: DBAPIError) -> bool:
    if isinstance(exc, IntegrityError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    code = getattr(exc.orig, "sqlstate", None)
    return code in ("40001", "40P01") or "database is locked" in str(exc.orig)


def fhir_error_response(error: FhirError) -> Response:
    return Response(
        content=_dump(error.outcome()),
        status_code=http_status(error),
        media_type=FHIR_JSON,
        headers=error.headers,
    )


def _dump(body: dict[str, Any]) -> bytes:
    import orjson

    return orjson.dumps(body)


def frozen_after_start_up(lifespan: Lifespan) -> Lifespan:
    """``lifespan``, then ``gc.freeze()`` once per process: the start-up heap (definitions, models, compiled SQL)
    is left out of every later collection, which would otherwise walk it again and again under load."""

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        async with lifespan(app):
            if gc.get_freeze_count() == 0:
                gc.freeze()
            yield

    return run


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or load_settings()
    engine = engine or create_db_engine(settings)
    context = Context(settings, engine)
    configure_in_process_audit(engine, settings)  # the background work's events spool beside the requests'
    background = Background(settings, engine, context.service)
    audit = AuditTrail(
        engine,
        enabled=settings.audit_enabled,
        batch_size=settings.audit_batch_size,
        interval=settings.audit_flush_seconds,
        spool_dir=spool_directory(settings.database_url, settings.audit_spool_dir) if settings.audit_spool else None,
    )
    limiter = rate_limiter(settings)
    app = FastAPI(
        # FastAPI's OpenTelemetry looks for global providers on every request; this service configures none.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        title="Wuzhou Health Information Exchange",
        version="0.1.0",
        docs_url="/docs",
        redoc_url=None,
        lifespan=with_trail(audit, frozen_after_start_up(background.lifespan)),
        dependencies=rate_limits(limiter),
    )
    app.state.context = context
    app.add_middleware(access.BindCaller)  # the request's principal stamps its writes (docs/SECURITY.md)
    authority = Authority(settings, engine)
    app.state.authority = authority
    app.add_middleware(AuthMiddleware, authority=authority)  # outside BindCaller, inside audit: sets the principal
    app.state.background = background
    app.state.audit = audit

    @app.exception_handler(FhirError)
    async def _fhir_error(_request: Request, exc: FhirError) -> Response:
        return fhir_error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "invalid")
        message = {
            404: f"There is nothing at {request.url.path}; FHIR resources live under /fhir/[type]/[id].",
            405: f"{request.method} is not allowed on {request.url.path}.",
        }.get(exc.status_code, str(exc.detail))
        response = fhir_error_response(FhirError(kind, message))
        response.status_code = exc.status_code
        return response

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError) -> Response:
        return fhir_error_response(FhirError("invalid", f"Malformed request: {exc.errors()}"))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        log.exception("unexpected error")
        body = operation_outcome([Issue("exception", f"Internal error ({type(exc).__name__}); it has been logged.")])
        return Response(content=_dump(body), status_code=500, media_type=FHIR_JSON)

    app.include_router(auth_endpoint.router(context, authority))  # /auth/token, /.well-known/smart-configuration
    app.include_router(subscriptions.router(context, background))  # before operations: $resend, the websocket
    app.include_router(bulk.router(context, background))  # before operations and interactions: $export
    app.include_router(operations.router(context))  # before interactions: Patient/$everything is no read
    searches, instances = search.router(context), interactions.router(context)
    app.include_router(searches)
    app.include_router(instances)
    app.router.routes[:0] = hot_routes((instances, searches), limiter)  # read and search: tried first

    @app.get("/", include_in_schema=False)
    async def _root() -> dict[str, Any]:
        return {
            "service": "Wuzhou Health Information Exchange",
            "fhir": "/fhir",
            "fhirVersion": definitions.FHIR_VERSION,
        }

    install_hardening(app, settings, inner=lambda: app.add_middleware(AuditMiddleware, trail=audit))
    install_log_masking()
    return app
