"""Search interactions (R4B §3.1.1): type, system (``_type``) and compartment search, by GET or POST ``_search``.

Every handler parses the query into a typed request, runs it in one read-only unit of work and answers a
``searchset`` Bundle with keyset paging links, ``match``/``include``/``outcome`` entries and ``total``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

import orjson
from fastapi import APIRouter, Request, Response
from starlette.convertors import Convertor, register_url_convertor

from fhir_server import definitions
from fhir_server.access import read_access
from fhir_server.api.negotiation import FHIR_JSON, check_accept, check_content_type, dump, read_body
from fhir_server.api.shaping import select_elements, summarise
from fhir_server.audit.collector import note_search
from fhir_server.auth.enforce import include_types, restricted_to_types, search_clauses
from fhir_server.errors import Issue, not_found, operation_outcome
from fhir_server.repository import Version, check_id
from fhir_server.search.custom import sync_for_search
from fhir_server.search.includes import included
from fhir_server.search.query import Hit, Page, search
from fhir_server.search.request import Compartment, SearchRequest, parse_request

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from fhir_server.api.app import Context

FORM = "application/x-www-form-urlencoded"
MAX_INCLUDED_PER_PAGE = 1000


class ResourceTypeConvertor(Convertor[str]):
    """A path segment that can be a resource type: keeps ``_history``, ``metadata``, ``$op`` for other routes."""

    regex = "[A-Z][A-Za-z]{0,63}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class MemberTypeConvertor(ResourceTypeConvertor):
    regex = r"[A-Z][A-Za-z]{0,63}|\*"


register_url_convertor("fhirtype", ResourceTypeConvertor())
register_url_convertor("fhirmember", MemberTypeConvertor())


def known_type(res_type: str) -> str:
    if res_type not in definitions.resource_types():
        raise not_found(f"Unknown resource type '{res_type}': not an R4B resource type served here.")
    return res_type


def handling(request: Request) -> str:
    """``Prefer: handling=strict|lenient`` (R4B §3.1.1.5.x); strict unless asked otherwise."""
    for part in request.headers.get("prefer", "").replace(",", ";").split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip() == "handling" and value.strip().strip('"') == "lenient":
            return "lenient"
    return "strict"


async def search_parameters(request: Request) -> list[tuple[str, str]]:
    """URL parameters, plus the form body of ``POST …/_search`` (R4B §3.1.1.1)."""
    params = list(request.query_params.multi_items())
    if request.method == "POST":
        body = await read_body(request, 1024 * 1024)
        if body:
            check_content_type(request, FORM)
            params += parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    return params


def searchset(
    base: str, path: str, request: SearchRequest, page: Page, versions: dict[int, Version], extra: list[Hit]
) -> dict[str, Any]:
    """The searchset Bundle of one page (R4B §3.1.1.3): links, total, match/include/outcome entries.

    Unshaped resources go in as their stored canonical JSON (``orjson.Fragment``): never parsed nor
    serialised again."""
    query = urlencode(request.applied)  # the search's own parameters, encoded once for every link
    first = _url(base, path, query, None)
    links = [{"relation": "self", "url": _url(base, path, query, request.cursor) if request.cursor else first}]
    links.append({"relation": "first", "url": first})
    if page.previous_cursor:
        links.append({"relation": "previous", "url": _url(base, path, query, page.previous_cursor)})
    if page.next_cursor:
        links.append({"relation": "next", "url": _url(base, path, query, page.next_cursor)})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = links
    entries = []
    for hits, mode in ((page.hits, "match"), (extra, "include")):
        for hit in hits:
            version = versions.get(hit.pk)
            if version is None or version.body is None:
                continue
            if mode == "include" or (request.summary is None and not request.elements):
                resource: Any = orjson.Fragment(version.body)  # the stored canonical JSON, as it is
            else:
                resource = select_elements(summarise(version.resource(), request.summary), request.elements)
            entries.append({"fullUrl": f"{base}/{hit.type}/{hit.id}", "resource": resource, "search": {"mode": mode}})
    issues = [Issue("not-supported", f"Ignored {text}", severity="warning") for text in request.ignored]
    if page.total_estimated:
        text = "Bundle.total is an estimate: counting every match would cost too much; ask _total=accurate."
        issues.append(Issue("informational", text, severity="information"))
    if issues:
        entries.append({"resource": operation_outcome(issues), "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return bundle


def _url(base: str, path: str, query: str, cursor: str | None) -> str:
    """A link of the searchset: ``query`` (the encoded parameters) and the page's ``_cursor``, if any."""
    if cursor:
        query = "&".join(filter(None, (query, urlencode([("_cursor", cursor)]))))
    return f"{base}/{path}".rstrip("/") + (f"?{query}" if query else "")


def router(ctx: Context) -> APIRouter:
    api = APIRouter(prefix="/fhir")
    service = ctx.service
    settings = ctx.settings

    async def run(
        request: Request,
        types: tuple[str, ...],
        path: str,
        *,
        system_level: bool = False,
        compartment: Compartment | None = None,
    ) -> Response:
        check_accept(request)
        params = await search_parameters(request)
        lenient = handling(request) == "lenient"
        base = ctx.base_url(request)
        restrict = read_access(request).restriction
        include_restrict = restricted_to_types(restrict, include_types(request))

        def work(conn: Connection) -> tuple[SearchRequest, Page, list[Hit], dict[int, Version]]:
            sync_for_search(conn, service.registry)
            parsed = parse_request(
                service.registry,
                types,
                params,
                lenient=lenient,
                default_count=settings.default_page_size,
                max_count=settings.max_page_size,
                base_url=base,
                system_level=system_level,
            )
            scoped = [*([compartment] if compartment else []), *search_clauses(request, service.registry, parsed.types)]
            page = search(conn, parsed, scoped or None, restrict=restrict, count_limit=settings.search_count_limit)
            extra = included(conn, page.hits, parsed.includes, limit=MAX_INCLUDED_PER_PAGE, restrict=include_restrict)
            loaded = service.repository.load_many(conn, [hit.pk for hit in [*page.hits, *extra]])
            return parsed, page, extra, {version.res_pk: version for version in loaded}

        parsed, page, extra, versions = await ctx.run(work, write=False)
        bundle = searchset(base, path, parsed, page, versions, extra)
        note_search(request, params, bundle, versions.values())  # the entries hold stored JSON, not dicts
        return Response(dump(bundle, request), media_type=FHIR_JSON)

    @api.get("")
    async def search_system(request: Request) -> Response:
        return await run(request, (), "", system_level=True)

    @api.get("/", include_in_schema=False)
    async def search_system_slash(request: Request) -> Response:
        return await run(request, (), "", system_level=True)

    @api.post("/_search")
    async def search_system_post(request: Request) -> Response:
        return await run(request, (), "", system_level=True)

    @api.get("/{res_type:fhirtype}")
    async def search_type(request: Request, res_type: str) -> Response:
        return await run(request, (known_type(res_type),), res_type)

    @api.post("/{res_type:fhirtype}/_search")
    async def search_type_post(request: Request, res_type: str) -> Response:
        return await run(request, (known_type(res_type),), res_type)

    async def run_compartment(request: Request, owner: str, owner_id: str, res_type: str) -> Response:
        members = definitions.compartment(known_type(owner))
        if not members:
            raise not_found(f"{owner} is not a compartment of R4B (Patient, Encounter, RelatedPerson, …).")
        check_id(owner_id)
        if res_type == "*":
            types = tuple(sorted(members))
        else:
            types = (known_type(res_type),)
            if res_type not in members:
                raise not_found(f"{res_type} resources are not in the {owner} compartment (R4B CompartmentDefinition).")
        compartment = Compartment(owner, owner_id, tuple((t, tuple(members[t])) for t in types))
        return await run(request, types, f"{owner}/{owner_id}/{res_type}", compartment=compartment)

    @api.get("/{owner:fhirtype}/{owner_id}/{res_type:fhirmember}")
    async def search_compartment(request: Request, owner: str, owner_id: str, res_type: str) -> Response:
        return await run_compartment(request, owner, owner_id, res_type)

    @api.post("/{owner:fhirtype}/{owner_id}/{res_type:fhirmember}/_search")
    async def search_compartment_post(request: Request, owner: str, owner_id: str, res_type: str) -> Response:
        return await run_compartment(request, owner, owner_id, res_type)

    return api
