"""Bulk Data Access IG v2 (``$export``): kick-off, status polling, cancellation and file download.

``GET|POST [base]/$export``, ``[base]/Patient/$export`` and ``[base]/Group/[id]/$export`` answer 202 with a
``Content-Location`` status URL; polling it answers 202 with ``X-Progress`` until the manifest is ready (200);
``DELETE`` on it cancels the job. Registered before the generic interaction routes.

Status, files and cancellation belong to the client that kicked the export off (and the exchange's own clients):
anyone else gets the 404 of an unknown job, so a job id never tells that the job exists
(:func:`~fhir_server.access.jobs.may_follow_job`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from fhir_server.access import ordinary_access, principal_of
from fhir_server.access.jobs import may_follow_job
from fhir_server.api.negotiation import FHIR_JSON, check_accept, check_content_type, dump, http_date, read_body
from fhir_server.auth.enforce import require_read
from fhir_server.bulk import export
from fhir_server.bulk.scope import export_types, parse_kickoff
from fhir_server.errors import FhirError, Issue, invalid, not_found, operation_outcome
from fhir_server.repository import check_id
from fhir_server.validation import parse_json

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from fhir_server.api.app import Context
    from fhir_server.background import Background

NDJSON = "application/fhir+ndjson"
RETRY_AFTER_SECONDS = 1
_VALUE_KEYS = ("valueString", "valueInstant", "valueDateTime", "valueCode", "valueUri", "valueCanonical")


def respond_async(request: Request) -> None:
    """Kick-off requests must carry ``Prefer: respond-async`` (Bulk Data IG v2 §Headers)."""
    prefer = [p.strip() for p in request.headers.get("prefer", "").replace(";", ",").split(",")]
    if "respond-async" not in prefer:
        raise invalid("A bulk export is asynchronous: send the header 'Prefer: respond-async'.")


async def kickoff_parameters(request: Request) -> list[tuple[str, str]]:
    """Query parameters, or the ``Parameters`` resource of a POST kick-off."""
    params = list(request.query_params.multi_items())
    if request.method != "POST":
        return params
    body = await read_body(request, 1024 * 1024)
    if not body.strip():
        return params
    check_content_type(request, FHIR_JSON, "application/json")
    resource = parse_json(body)
    if not isinstance(resource, dict) or resource.get("resourceType") != "Parameters":
        raise invalid("A POST $export takes a Parameters resource.")
    for parameter in resource.get("parameter") or []:
        values = [parameter[k] for k in _VALUE_KEYS if k in parameter]
        if not parameter.get("name") or len(values) != 1:
            raise invalid(f"Parameter {parameter.get('name')!r} needs a name and one string-like value.")
        params.append((parameter["name"], str(values[0])))
    return params


def _outcome(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = operation_outcome([Issue(code, message)])
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON, headers=headers)


def _followed(request: Request, row: Any) -> Any:
    """The job row, or None when there is none or it is not the caller's to follow (answered like a missing one)."""
    return row if row is not None and may_follow_job(principal_of(request), row.requester) else None


def router(ctx: Context, background: Background | None = None) -> APIRouter:
    api = APIRouter(prefix="/fhir")
    service = ctx.service
    settings = ctx.settings

    async def kickoff(request: Request, level: str, group_id: str | None = None) -> Response:
        check_accept(request)
        respond_async(request)
        params = await kickoff_parameters(request)
        scope = parse_kickoff(service.registry, level, params, group_id=group_id)
        scope.access = ordinary_access(request)  # institution and consent apply; never break-glass
        require_read(request, export_types(scope))  # Bulk Data IG: read scope on every exported type

        def work(conn: Connection) -> str:
            if group_id is not None:
                service.read(conn, "Group", group_id)
            return export.kickoff(conn, scope, str(request.url))

        job_id = await ctx.run(work)
        if background is not None:
            background.export_requested(job_id)
        status_url = f"{ctx.base_url(request)}/$export-status/{job_id}"
        message = f"Export {job_id} accepted; poll {status_url} for its progress."
        body = operation_outcome([Issue("informational", message, severity="information")])
        return Response(dump(body, request), 202, {"Content-Location": status_url}, media_type=FHIR_JSON)

    @api.get("/$export")
    @api.post("/$export")
    async def export_system(request: Request) -> Response:
        return await kickoff(request, "system")

    @api.get("/Patient/$export")
    @api.post("/Patient/$export")
    async def export_patients(request: Request) -> Response:
        return await kickoff(request, "patient")

    @api.get("/Group/{group_id}/$export")
    @api.post("/Group/{group_id}/$export")
    async def export_group(request: Request, group_id: str) -> Response:
        return await kickoff(request, "group", check_id(group_id))

    @api.get("/$export-status/{job_id}")
    async def export_status(request: Request, job_id: str) -> Response:
        row, recorded = await ctx.run(lambda conn: (export.job(conn, job_id), export.files(conn, job_id)), write=False)
        row = _followed(request, row)
        if row is None or row.status in ("cancelled", "expired"):
            state = "is not known" if row is None else f"was {row.status}"
            return _outcome(404, "not-found", f"Export {job_id} {state}.")
        if row.status == "error":
            return _outcome(500, "exception", f"Export {job_id} failed: {row.error}")
        if row.status != "complete":
            headers = {"X-Progress": row.progress or row.status, "Retry-After": str(RETRY_AFTER_SECONDS)}
            return Response(status_code=202, headers=headers)
        if row.expires_at is not None and row.expires_at < time.time_ns() // 1000:
            return _outcome(404, "not-found", f"The files of export {job_id} have expired.")
        missing = export.missing_files(settings, job_id, recorded)
        if missing:
            return _outcome(500, "exception", f"Export {job_id} lost its files {', '.join(missing)}; start it again.")
        body = export.manifest(row, recorded, ctx.base_url(request))
        headers = {"Expires": http_date(row.expires_at)} if row.expires_at else {}
        return Response(dump(body, request), 200, headers, media_type="application/json")

    @api.delete("/$export-status/{job_id}")
    async def export_cancel(request: Request, job_id: str) -> Response:
        def work(conn: Connection) -> bool:
            return _followed(request, export.job(conn, job_id)) is not None and export.cancel(conn, settings, job_id)

        cancelled = await ctx.run(work)
        if not cancelled:
            return _outcome(404, "not-found", f"Export {job_id} is not known, already over or cancelled.")
        message = f"Export {job_id} cancelled; its files are deleted."
        body = operation_outcome([Issue("informational", message, severity="information")])
        return Response(orjson.dumps(body), 202, media_type=FHIR_JSON)

    @api.get("/$export-file/{job_id}/{name}")
    async def export_file(request: Request, job_id: str, name: str) -> Response:
        row, recorded = await ctx.run(lambda conn: (export.job(conn, job_id), export.files(conn, job_id)), write=False)
        row = _followed(request, row)
        found = next((f for f in recorded if f.name == name), None)
        expired = row is not None and row.expires_at is not None and row.expires_at < time.time_ns() // 1000
        if row is None or row.status != "complete" or found is None or expired:
            raise not_found(f"There is no file {name} of a complete, unexpired export {job_id}.")
        path = export.job_dir(settings, job_id) / found.name
        if not path.is_file():
            raise FhirError("exception", f"The file {name} of export {job_id} is missing.")
        return FileResponse(path, media_type=NDJSON, filename=None)

    return api


__all__ = ["router"]
