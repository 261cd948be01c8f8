"""Operation routes (R4B operations.html): ``[base]/$op``, ``[base]/[type]/$op`` and ``[base]/[type]/[id]/$op``.

Registered ahead of the interaction routes, which would otherwise read ``Patient/$everything`` as the Patient
with id ``$everything``. ``GET OperationDefinition/[id]`` answers the generated definitions first and reads
stored OperationDefinitions otherwise. Inputs come from the URL query and, for POST, a Parameters body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response

from fhir_server.access import ordinary_access, read_access
from fhir_server.api.interactions import known_type, resource_response
from fhir_server.api.negotiation import (
    FHIR_JSON,
    check_accept,
    check_content_type,
    dump,
    http_date,
    not_modified,
    read_body,
)
from fhir_server.api.shaping import select_elements, summarise
from fhir_server.audit.collector import collector_of, note_bundle, principal_of
from fhir_server.errors import FhirError
from fhir_server.operations import Invocation, definition_by_id, find_operation, read_inputs
from fhir_server.repository import check_id
from fhir_server.validation import parse_json

if TYPE_CHECKING:
    from fhir_server.api.app import Context


def router(ctx: Context) -> APIRouter:
    api = APIRouter(prefix="/fhir")
    service = ctx.service

    async def invoke(request: Request, res_type: str | None, res_id: str | None, code: str) -> Response:
        check_accept(request)
        if res_type is not None:
            known_type(res_type)
        if res_id is not None:
            check_id(res_id)
        operation = find_operation(code, res_type, instance=res_id is not None)
        if request.method == "GET" and operation.affects_state:
            raise FhirError("method-not-allowed", f"${code} changes data: call it with POST.")
        body = await _body(request, ctx.settings.max_body_bytes) if request.method == "POST" else None
        inputs = read_inputs(operation, list(request.query_params.multi_items()), body)
        call = Invocation(
            service=service,
            settings=ctx.settings,
            base=ctx.base_url(request),
            path="/".join(part for part in (res_type, res_id, f"${code}") if part),
            res_type=res_type,
            res_id=res_id,
            inputs=inputs.values,
            search=inputs.search,
            cursor=inputs.cursor,
            principal=principal_of(request),
            audit=collector_of(request),
            access=ordinary_access(request) if operation.affects_state else read_access(request),
            stored_json=True,
        )
        result = await ctx.run(lambda conn: operation.run(call, conn), write=operation.affects_state)
        if result.get("resourceType") == "Bundle":
            note_bundle(request, result)  # entries of stored JSON were reported by the operation itself
        return Response(dump(result, request), media_type=FHIR_JSON)

    @api.get("/OperationDefinition/{definition_id}")
    async def read_operation_definition(request: Request, definition_id: str) -> Response:
        """A generated definition, or else the stored OperationDefinition (the read interaction)."""
        check_accept(request)
        operation = definition_by_id(definition_id)
        if operation is None:
            found = await ctx.run(lambda conn: service.read(conn, "OperationDefinition", definition_id), write=False)
            if not_modified(request, found.version, found.ts):
                return Response(status_code=304, headers={"ETag": found.etag, "Last-Modified": http_date(found.ts)})
            return resource_response(request, found)
        resource = summarise(operation.definition(), request.query_params.get("_summary"))
        resource = select_elements(resource, request.query_params.get("_elements"))
        return Response(dump(resource, request), media_type=FHIR_JSON)

    @api.api_route("/${code}", methods=["GET", "POST"])
    async def operation_system(request: Request, code: str) -> Response:
        return await invoke(request, None, None, code)

    @api.api_route("/{res_type}/${code}", methods=["GET", "POST"])
    async def operation_type(request: Request, res_type: str, code: str) -> Response:
        return await invoke(request, res_type, None, code)

    @api.api_route("/{res_type}/{res_id}/${code}", methods=["GET", "POST"])
    async def operation_instance(request: Request, res_type: str, res_id: str, code: str) -> Response:
        return await invoke(request, res_type, res_id, code)

    return api


async def _body(request: Request, limit: int) -> dict[str, Any] | None:
    raw = await read_body(request, limit)
    if not raw.strip():
        return None
    check_content_type(request, FHIR_JSON, "application/json")
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise FhirError("structure", "The body must be a JSON object: a Parameters resource or the resource itself.")
    return body
