"""Generic REST handlers: one per FHIR interaction, for every resource type (R4B §3.1.0 RESTful API)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response

from fhir_server import definitions
from fhir_server.access import check_readable, ordinary_access, read_access, readable_history, sees_every_version
from fhir_server.api.bundles import decode_cursor, history_bundle
from fhir_server.api.capability import capability_statement
from fhir_server.api.negotiation import (
    FHIR_JSON,
    JSON_PATCH,
    check_accept,
    check_content_type,
    dump,
    http_date,
    if_match_version,
    not_modified,
    prefer_return,
    read_body,
)
from fhir_server.api.shaping import select_elements, summarise
from fhir_server.audit.collector import collector_of, note_bundle, note_resource, note_version
from fhir_server.auth.endpoint import declare_security
from fhir_server.auth.enforce import bundle_authorizer, check_in_scope, check_version_in_scope
from fhir_server.errors import FhirError, Issue, invalid, not_found, operation_outcome
from fhir_server.repository import Version
from fhir_server.search.values import date_range
from fhir_server.transactions import BundleProcessor
from fhir_server.validation import parse_json

if TYPE_CHECKING:
    from fhir_server.api.app import Context

_RESOURCE_BODY = (FHIR_JSON, "application/json")


def known_type(res_type: str) -> str:
    if res_type not in definitions.resource_types():
        raise not_found(f"Unknown resource type '{res_type}': not an R4B resource type served here.")
    return res_type


def version_headers(base: str, version: Version, *, location: bool = False) -> dict[str, str]:
    headers = {"ETag": version.etag, "Last-Modified": http_date(version.ts)}
    if location:
        headers["Location"] = f"{base}/{version.location}"
        headers["Content-Location"] = headers["Location"]
    return headers


def write_response(
    request: Request,
    base: str,
    version: Version,
    status: int,
    message: str,
    *,
    warnings: Callable[[dict[str, Any]], list[Issue]] | None = None,
) -> Response:
    """The answer to create/update/patch, shaped by ``Prefer: return`` (R4B §3.1.0.8.3).

    ``return=OperationOutcome`` also carries the ``warnings`` the domain checks find on the stored resource.
    """
    headers = version_headers(base, version, location=True)
    note_version(request, version)
    prefer = prefer_return(request)
    if prefer == "minimal":
        return Response(status_code=status, headers=headers)
    if prefer == "OperationOutcome":
        found = warnings(version.resource()) if warnings is not None else []
        body = operation_outcome([Issue("informational", message, severity="information"), *found])
    else:
        body = version.resource()
    return Response(dump(body, request), status_code=status, headers=headers, media_type=FHIR_JSON)


def resource_response(request: Request, version: Version) -> Response:
    params = request.query_params
    headers = {"ETag": version.etag, "Last-Modified": http_date(version.ts)}
    if version.body is not None and not ({"_summary", "_elements"} & params.keys()) and "_pretty" not in params:
        note_version(request, version)  # the stored JSON is the answer as it is: parsed only for the audit
        return Response(version.body, headers=headers, media_type=FHIR_JSON)
    resource = version.resource()
    note_resource(request, resource)
    resource = summarise(resource, request.query_params.get("_summary"))
    resource = select_elements(resource, request.query_params.get("_elements"))
    return Response(dump(resource, request), headers=headers, media_type=FHIR_JSON)


def _int_param(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise invalid(f"{name} must be a non-negative whole number, not '{raw}'.", expression=(name,))
    return min(int(raw), maximum)


def _instant_param(request: Request, name: str) -> tuple[int, int] | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    span = date_range(raw)
    if span is None:
        raise invalid(f"{name}={raw} is not a FHIR date, dateTime or instant.", expression=(name,))
    return span


def router(ctx: Context) -> APIRouter:
    api = APIRouter(prefix="/fhir")
    service = ctx.service
    limit = ctx.settings.max_body_bytes

    async def resource_body(request: Request, *types: str) -> dict[str, Any]:
        check_content_type(request, *types)
        body = parse_json(await read_body(request, limit))
        if not isinstance(body, dict):
            raise FhirError("structure", "The body must be a JSON object holding one FHIR resource.")
        return body

    bundles = BundleProcessor(service, max_entries=ctx.settings.max_bundle_entries, settings=ctx.settings)

    @api.post("")
    @api.post("/")
    async def transaction_or_batch(request: Request) -> Response:
        """``POST [base]`` with a transaction or batch Bundle (R4B §3.1.0.11)."""
        check_accept(request)
        bundle = await resource_body(request, *_RESOURCE_BODY)
        kind = bundles.check(bundle)
        collector = collector_of(request)
        if collector is not None:
            collector.interaction = kind
        prefer = prefer_return(request)
        process = bundles.transaction if kind == "transaction" else bundles.batch
        base = ctx.base_url(request)
        access = ordinary_access(request)  # a bundle's reads are filtered too, never break-glass
        authorize = bundle_authorizer(request)
        result = await ctx.run(
            lambda conn: process(conn, bundle, prefer=prefer, base=base, access=access, authorize=authorize)
        )
        note_bundle(request, result)
        return Response(dump(result, request), media_type=FHIR_JSON)

    @api.get("/metadata")
    async def metadata(request: Request) -> Response:
        check_accept(request)
        body = capability_statement(service.registry, ctx.base_url(request), software_version="0.1.0", search=True)
        declare_security(body, request)
        return Response(dump(body, request), media_type=FHIR_JSON)

    async def history(request: Request, res_type: str | None, res_id: str | None) -> Response:
        check_accept(request)
        count = _int_param(request, "_count", ctx.settings.default_page_size, ctx.settings.max_page_size) or 1
        since = _instant_param(request, "_since")
        at = _instant_param(request, "_at")
        cursor = request.query_params.get("_cursor")
        after = decode_cursor(cursor, 3) if cursor else None
        access = read_access(request)

        def work(conn):  # type: ignore[no-untyped-def]
            total = None
            if res_id is not None:
                found = service.repository.current(conn, res_type, res_id)
                if found is None:
                    raise not_found(f"{res_type}/{res_id} is not known to this server.")
                owned = sees_every_version(conn, access, found.res_pk)  # else hidden versions are not counted
                total = found.version if since is None and at is None and owned else None
            versions = readable_history(  # each version judged on its own content
                conn,
                access,
                service.registry,
                service.repository,
                res_type=res_type,
                res_id=res_id,
                since=since[0] if since else None,
                at=at,
                count=count + 1,
                after=after,  # type: ignore[arg-type]
            )
            if res_id is not None and not versions and after is None and not owned:  # nothing readable: 404
                check_readable(conn, access, res_type, res_id)  # type: ignore[arg-type]
            return versions, total

        versions, total = await ctx.run(work, write=False)
        path = "/".join(p for p in (res_type, res_id, "_history") if p)
        bundle = history_bundle(
            ctx.base_url(request), path, list(request.query_params.multi_items()), versions, count, total
        )
        note_bundle(request, bundle)
        return Response(dump(bundle, request), media_type=FHIR_JSON)

    @api.get("/_history")
    async def history_system(request: Request) -> Response:
        return await history(request, None, None)

    @api.get("/{res_type}/_history")
    async def history_type(request: Request, res_type: str) -> Response:
        return await history(request, known_type(res_type), None)

    @api.get("/{res_type}/{res_id}/_history")
    async def history_instance(request: Request, res_type: str, res_id: str) -> Response:
        return await history(request, known_type(res_type), res_id)

    @api.get("/{res_type}/{res_id}/_history/{version_id}")
    async def vread(request: Request, res_type: str, res_id: str, version_id: str) -> Response:
        check_accept(request)
        known_type(res_type)
        if not version_id.isdigit():
            raise not_found(f"{res_type}/{res_id} has no version '{version_id}'.")
        access = read_access(request)

        def read_version(conn):  # type: ignore[no-untyped-def]
            found = service.vread(conn, res_type, res_id, int(version_id), access=access)
            check_version_in_scope(conn, service, request, found)  # the version answered, not the current one
            return found

        found = await ctx.run(read_version, write=False, bounded=True)
        return resource_response(request, found)

    @api.get("/{res_type}/{res_id}")
    async def read(request: Request, res_type: str, res_id: str) -> Response:
        check_accept(request)
        known_type(res_type)
        access = read_access(request)

        def read_current(conn):  # type: ignore[no-untyped-def]
            version = service.read(conn, res_type, res_id, access=access)
            check_in_scope(conn, service.matches, request, res_type, res_id, "r")
            return version

        found = await ctx.run(read_current, write=False, bounded=True)
        if not_modified(request, found.version, found.ts):
            return Response(status_code=304, headers={"ETag": found.etag, "Last-Modified": http_date(found.ts)})
        return resource_response(request, found)

    @api.post("/{res_type}")
    async def create(request: Request, res_type: str) -> Response:
        check_accept(request)
        known_type(res_type)
        resource = await resource_body(request, *_RESOURCE_BODY)
        if resource.get("resourceType") != res_type:
            raise invalid(
                f"The body holds a {resource.get('resourceType')} but the URL names {res_type}.",
                expression=("resourceType",),
            )
        if_none_exist = request.headers.get("if-none-exist")

        def create_in_scope(conn):  # type: ignore[no-untyped-def]
            outcome = service.create(conn, resource, if_none_exist=if_none_exist)
            check_in_scope(conn, service.matches, request, res_type, outcome.version.res_id, "c")
            return outcome

        outcome = await ctx.run(create_in_scope)
        base = ctx.base_url(request)
        if not outcome.created:
            message = (
                f"{outcome.version.res_type}/{outcome.version.res_id} already matches If-None-Exist; nothing created."
            )
            return write_response(request, base, outcome.version, 200, message)
        created = f"Created {outcome.version.location}."
        return write_response(request, base, outcome.version, 201, created, warnings=service.warnings)

    @api.put("/{res_type}/{res_id}")
    async def update(request: Request, res_type: str, res_id: str) -> Response:
        check_accept(request)
        known_type(res_type)
        resource = await resource_body(request, *_RESOURCE_BODY)
        if_match = if_match_version(request)

        def update_in_scope(conn):  # type: ignore[no-untyped-def]
            check_in_scope(conn, service.matches, request, res_type, res_id, "u", existing=True)
            result = service.update(conn, res_type, res_id, resource, if_match=if_match)
            check_in_scope(conn, service.matches, request, res_type, res_id, "u")
            return result

        result = await ctx.run(update_in_scope)
        status = 201 if result.created else 200
        return write_response(
            request,
            ctx.base_url(request),
            result.version,
            status,
            f"Stored {result.version.location}.",
            warnings=service.warnings,
        )

    @api.put("/{res_type}")
    async def conditional_update(request: Request, res_type: str) -> Response:
        check_accept(request)
        known_type(res_type)
        query = request.url.query
        if not query:
            raise FhirError("method-not-allowed", f"PUT {res_type} needs an id in the URL or search parameters.")
        resource = await resource_body(request, *_RESOURCE_BODY)
        if_match = if_match_version(request)
        result = await ctx.run(
            lambda conn: service.conditional_update(conn, res_type, query, resource, if_match=if_match)
        )
        status = 201 if result.created else 200
        return write_response(
            request,
            ctx.base_url(request),
            result.version,
            status,
            f"Stored {result.version.location}.",
            warnings=service.warnings,
        )

    @api.patch("/{res_type}/{res_id}")
    async def patch(request: Request, res_type: str, res_id: str) -> Response:
        check_accept(request)
        known_type(res_type)
        check_content_type(request, JSON_PATCH, *_RESOURCE_BODY)
        document = parse_json(await read_body(request, limit))
        if_match = if_match_version(request)

        def patch_in_scope(conn):  # type: ignore[no-untyped-def]
            check_in_scope(conn, service.matches, request, res_type, res_id, "u", existing=True)
            result = service.patch(conn, res_type, res_id, document, if_match=if_match)
            check_in_scope(conn, service.matches, request, res_type, res_id, "u")
            return result

        result = await ctx.run(patch_in_scope)
        return write_response(
            request,
            ctx.base_url(request),
            result.version,
            200,
            f"Patched {result.version.location}.",
            warnings=service.warnings,
        )

    @api.patch("/{res_type}")
    async def conditional_patch(request: Request, res_type: str) -> Response:
        check_accept(request)
        known_type(res_type)
        query = request.url.query
        if not query:
            raise FhirError("method-not-allowed", f"PATCH {res_type} needs an id in the URL or search parameters.")
        check_content_type(request, JSON_PATCH, *_RESOURCE_BODY)
        document = parse_json(await read_body(request, limit))
        if_match = if_match_version(request)
        result = await ctx.run(
            lambda conn: service.conditional_patch(conn, res_type, query, document, if_match=if_match)
        )
        return write_response(
            request,
            ctx.base_url(request),
            result.version,
            200,
            f"Patched {result.version.location}.",
            warnings=service.warnings,
        )

    @api.delete("/{res_type}/{res_id}")
    async def delete(request: Request, res_type: str, res_id: str) -> Response:
        check_accept(request)
        known_type(res_type)
        if_match = if_match_version(request)
        collector = collector_of(request)

        def work(conn):  # type: ignore[no-untyped-def]
            if collector is not None:  # the audit names the residents of what is deleted
                previous = service.repository.current(conn, res_type, res_id)
                if previous is not None and previous.body is not None:
                    collector.resource(previous.resource())
            check_in_scope(conn, service.matches, request, res_type, res_id, "d", existing=True)
            return service.delete(conn, res_type, res_id, if_match=if_match)

        tombstone = await ctx.run(work)
        headers = {"ETag": tombstone.etag} if tombstone is not None else {}
        message = (
            f"Deleted {res_type}/{res_id}." if tombstone else f"{res_type}/{res_id} did not exist; nothing to delete."
        )
        body = operation_outcome([Issue("informational", message, severity="information")])
        return Response(dump(body, request), status_code=200, headers=headers, media_type=FHIR_JSON)

    @api.delete("/{res_type}")
    async def conditional_delete(request: Request, res_type: str) -> Response:
        check_accept(request)
        known_type(res_type)
        query = request.url.query
        if not query:
            raise FhirError("method-not-allowed", f"DELETE {res_type} needs an id in the URL or search parameters.")
        deleted = await ctx.run(lambda conn: service.conditional_delete(conn, res_type, query))
        collector = collector_of(request)
        for version in deleted if collector is not None else ():
            collector.reference(f"{version.res_type}/{version.res_id}")
        message = f"Deleted {len(deleted)} {res_type} resource(s) matching '{query}'."
        body = operation_outcome([Issue("informational", message, severity="information")])
        return Response(dump(body, request), status_code=200, media_type=FHIR_JSON)

    return api
