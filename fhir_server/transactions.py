"""Batch and transaction Bundles (R4B §3.1.0.11): ordering, id assignment, reference rewriting, all-or-nothing.

Processing order is DELETE → POST → PUT/PATCH → GET and operations; within a transaction every ``urn:uuid:``
or relative fullUrl and every conditional reference is resolved before any entry is written. Operation entries
(``POST Patient/1/$meta-add``) run through the operations registry (``fhir_server.operations.bundle`` says
which may run inside a transaction).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import Connection

from fhir_server.access import UNRESTRICTED, Access
from fhir_server.config import Settings
from fhir_server.errors import FhirError, Issue, http_status, invalid, operation_outcome
from fhir_server.operations import bundle as bundle_operations
from fhir_server.repository import PreparedCreate, Version, check_id, instant
from fhir_server.search.custom import sync_custom_parameters
from fhir_server.service import FhirService

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}


@dataclass
class Entry:
    """One request entry, with what resolution decided for it."""

    index: int
    method: str
    url: str
    full_url: str | None
    resource: dict[str, Any] | None
    request: dict[str, Any]
    target: str | None = None
    """``Type/id`` this entry writes, once known."""
    response: dict[str, Any] = field(default_factory=dict)
    operation: bundle_operations.OperationEntry | None = None
    """The operation an operation entry calls, once resolved."""

    @property
    def is_operation(self) -> bool:
        return bundle_operations.is_operation(self.url)

    @property
    def rank(self) -> int:
        """Position in the processing order: operations run with the reads, after every write."""
        return _ORDER["GET"] if self.is_operation else _ORDER[self.method]


def _entries(bundle: dict[str, Any], max_entries: int) -> list[Entry]:
    raw = bundle.get("entry") or []
    if not isinstance(raw, list):
        raise invalid("Bundle.entry must be an array.", expression=("Bundle.entry",))
    if len(raw) > max_entries:
        raise FhirError("too-costly", f"The bundle has {len(raw)} entries; at most {max_entries} are accepted.")
    entries = []
    for index, item in enumerate(raw):
        where = f"Bundle.entry[{index}]"
        request = item.get("request") if isinstance(item, dict) else None
        if not isinstance(request, dict) or not request.get("method") or not request.get("url"):
            raise invalid(f"{where} has no request with method and url.", expression=(f"{where}.request",))
        method = str(request["method"]).upper()
        if method not in _ORDER:
            raise invalid(f"{where}.request.method {method} is not supported.", expression=(f"{where}.request.method",))
        resource = item.get("resource")
        url = str(request["url"]).lstrip("/")
        if bundle_operations.is_operation(url):  # its method, resource and inputs are checked when it runs
            entries.append(Entry(index, method, url, item.get("fullUrl"), resource, request))
            continue
        if method in ("POST", "PUT") and not isinstance(resource, dict):
            raise invalid(f"{where} ({method}) has no resource.", expression=(f"{where}.resource",))
        if method == "PATCH" and resource is None:
            raise invalid(f"{where} (PATCH) needs a Binary or Parameters resource.", expression=(f"{where}.resource",))
        if (
            isinstance(resource, dict)
            and resource.get("resourceType") == "Bundle"
            and resource.get("type")
            in (
                "transaction",
                "batch",
            )
        ):
            raise invalid(f"{where} holds a nested {resource['type']}; nested transactions are not processed.")
        entries.append(Entry(index, method, url, item.get("fullUrl"), resource, request))
    return entries


class BundleProcessor:
    """Runs a transaction or batch Bundle through the FHIR service inside the caller's unit of work."""

    def __init__(self, service: FhirService, *, max_entries: int = 10_000, settings: Settings | None = None) -> None:
        self.service = service
        self.max_entries = max_entries
        self.settings = settings
        """Operation entries need the server's settings; without them they are refused."""

    def check(self, bundle: Any) -> str:
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise invalid("POST to the base URL takes a Bundle of type transaction or batch.")
        kind = bundle.get("type")
        if kind not in ("transaction", "batch"):
            raise invalid(f"Bundle.type is '{kind}'; only transaction and batch are processed here.")
        return kind

    # -- transaction -------------------------------------------------------------------------------

    def transaction(
        self,
        conn: Connection,
        bundle: dict[str, Any],
        *,
        prefer: str = "representation",
        base: str = "",
        access: Access = UNRESTRICTED,
        authorize: Callable[[str, str], None] | None = None,
    ) -> dict:
        """All or nothing; ``authorize(method, url)`` (the caller's scopes) refuses the whole bundle for one entry."""
        entries = _entries(bundle, self.max_entries)
        for entry in entries if authorize is not None else ():
            try:
                authorize(entry.method, entry.url)  # type: ignore[misc]
            except FhirError as error:
                raise _at_entry(error, entry) from None
        for entry in entries:
            if entry.is_operation:
                try:
                    entry.operation = bundle_operations.resolve(entry.method, entry.url)
                    bundle_operations.check_transaction_safe(entry.operation)
                except FhirError as error:
                    raise _at_entry(error, entry) from None
            elif entry.resource is not None and entry.method in ("POST", "PUT"):
                try:
                    self.service.validate(entry.resource)
                except FhirError as error:
                    raise _at_entry(error, entry) from None
        # Without conditions, ids, references and the new resources' rows need no statement: they are ready
        # before the first one, which on SQLite enters the writers' queue (docs/PERFORMANCE.md).
        self._lock_conditions(conn, entries)
        mapping = self._assign(conn, entries)
        for entry in entries:
            if entry.resource is not None:
                _rewrite(entry.resource, mapping, lambda ref, e=entry: self._conditional_reference(conn, ref, e))
        ordered = sorted(entries, key=lambda e: (e.rank, e.index))
        new = [e for e in ordered if e.method == "POST" and not e.is_operation and "existing" not in e.response]
        prepared = self.service.repository.prepare_creates([_new_item(e) for e in new])
        if sync_custom_parameters(conn, self.service.registry):
            prepared = []  # the stored SearchParameters changed: the rows are extracted again
        for entry in ordered:
            if entry.method == "POST" and new:
                self._create_all(conn, new, prefer, prepared)
                new = []
            if entry.response.get("response"):
                continue
            try:
                self._execute(conn, entry, prefer, base, access)
            except FhirError as error:
                raise _at_entry(error, entry) from None
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": [e.response for e in entries]}

    def _lock_conditions(self, conn: Connection, entries: list[Entry]) -> None:
        """Take every condition's lock up front, in one global order, so parallel bundles cannot deadlock."""
        keys = set()
        for entry in entries:
            if entry.is_operation:
                continue
            if entry.method == "POST" and entry.request.get("ifNoneExist"):
                keys.add(f"{entry.resource['resourceType']}?{entry.request['ifNoneExist'].lstrip('?')}")  # type: ignore[index]
            elif entry.method in ("PUT", "PATCH") and "?" in entry.url:
                keys.add(entry.url)
        for key in sorted(keys):
            self.service.repository.lock_condition(conn, key)

    def _assign(self, conn: Connection, entries: list[Entry]) -> dict[str, str]:
        """Decide the id of every written resource; map fullUrls to ``Type/id``; refuse duplicates."""
        mapping: dict[str, str] = {}
        touched: dict[str, int] = {}
        full_urls: set[str] = set()
        for entry in entries:
            if entry.full_url is not None:
                if entry.full_url in full_urls:
                    raise invalid(f"Bundle.entry[{entry.index}] repeats fullUrl {entry.full_url}.")
                full_urls.add(entry.full_url)
            if entry.is_operation:
                entry.target = entry.operation.target if entry.operation else None
            elif entry.method == "POST":
                res_type = entry.resource["resourceType"]  # type: ignore[index]
                existing = None
                condition = entry.request.get("ifNoneExist")
                if condition:
                    found = self.service.matches(conn, res_type, list(parse_qsl(condition.lstrip("?"))))
                    if len(found) > 1:
                        raise FhirError("multiple-matches", f"ifNoneExist '{condition}' matches several {res_type}s.")
                    existing = self.service.repository.load_many(conn, found)[0] if found else None
                if existing is not None:
                    entry.target = f"{res_type}/{existing.res_id}"
                    entry.response = {"existing": existing}
                else:
                    entry.target = f"{res_type}/{uuid.uuid4()}"
            elif entry.method in ("PUT", "PATCH", "DELETE") and "?" in entry.url:
                res_type, query = entry.url.split("?", 1)
                found = self.service.matches(conn, res_type, list(parse_qsl(query)), limit=2)
                if len(found) > 1 and entry.method != "DELETE":
                    raise FhirError("multiple-matches", f"Bundle.entry[{entry.index}]: '{entry.url}' matches several.")
                if found:
                    entry.target = f"{res_type}/{self.service.repository.load_many(conn, found)[0].res_id}"
                elif entry.method == "PUT":
                    body_id = (entry.resource or {}).get("id")
                    entry.target = f"{res_type}/{body_id or uuid.uuid4()}"
            elif entry.method in ("PUT", "PATCH", "DELETE"):
                entry.target = entry.url.split("?", 1)[0]
            if entry.target is not None and entry.method != "GET":
                if entry.target in touched:
                    raise invalid(
                        f"Bundle.entry[{entry.index}] and entry[{touched[entry.target]}] both touch {entry.target}."
                    )
                touched[entry.target] = entry.index
            if entry.full_url and entry.target:
                mapping[entry.full_url] = entry.target
                absolute = _ABSOLUTE.match(entry.full_url)
                if absolute and absolute["ref"] != entry.target:
                    mapping[absolute["ref"]] = entry.target
        return mapping

    def _create_all(self, conn: Connection, entries: list[Entry], prefer: str, prepared: list[PreparedCreate]) -> None:
        """The fast path: every new resource of the bundle written with bulk inserts."""
        items = [_new_item(e) for e in entries]
        for entry, (resource, res_id) in zip(entries, items, strict=True):
            try:
                self.service.prepare_write(conn, resource["resourceType"], res_id, resource, assigned=True)
            except FhirError as error:
                raise _at_entry(error, entry) from None
        versions = self.service.repository.create_many(conn, items, prepared or None)
        for entry, version in zip(entries, versions, strict=True):
            entry.response = _response(version, 201, prefer, self.service.warnings(entry.resource))  # type: ignore[arg-type]

    def _conditional_reference(self, conn: Connection, reference: str, entry: Entry) -> str:
        res_type, query = reference.split("?", 1)
        found = self.service.matches(conn, res_type, list(parse_qsl(query)))
        if len(found) != 1:
            kind = "multiple-matches" if found else "not-found"
            raise _at_entry(
                FhirError(kind, f"The conditional reference {reference} matches {len(found)} resources."), entry
            )
        return f"{res_type}/{self.service.repository.load_many(conn, found)[0].res_id}"

    def _execute(
        self, conn: Connection, entry: Entry, prefer: str, base: str = "", access: Access = UNRESTRICTED
    ) -> None:
        repo = self.service.repository
        if entry.is_operation:
            call = entry.operation or bundle_operations.resolve(entry.method, entry.url)
            body = entry.resource if entry.method == "POST" else None
            entry.response = bundle_operations.run(
                conn, call, body, service=self.service, settings=self.settings, base=base, access=access
            )
        elif entry.method == "POST":
            existing: Version | None = entry.response.pop("existing", None)
            if existing is not None:
                entry.response = _response(existing, 200, prefer)
                return
            res_id = entry.target.split("/", 1)[1]  # type: ignore[union-attr]
            resource_type = entry.resource["resourceType"]  # type: ignore[index]
            self.service.prepare_write(conn, resource_type, res_id, entry.resource, assigned=True)
            result = repo.create(conn, entry.resource, res_id=res_id, method="POST")  # type: ignore[arg-type]
            entry.response = _response(result.version, 201, prefer, self.service.warnings(entry.resource))  # type: ignore[arg-type]
        elif entry.method == "PUT":
            res_type, res_id = entry.target.split("/", 1)  # type: ignore[union-attr]
            entry.resource["id"] = res_id  # type: ignore[index]
            if_match = _version_of(entry.request.get("ifMatch"))
            # Validated with the whole bundle already: write without validating twice.
            check_id(res_id)
            self.service.prepare_write(conn, res_type, res_id, entry.resource)
            result = self.service.repository.update(conn, res_type, res_id, entry.resource, if_match=if_match)  # type: ignore[arg-type]
            warnings = self.service.warnings(entry.resource)  # type: ignore[arg-type]
            entry.response = _response(result.version, 201 if result.created else 200, prefer, warnings)
        elif entry.method == "PATCH":
            res_type, res_id = entry.target.split("/", 1)  # type: ignore[union-attr]
            patch = _patch_document(entry.resource)
            result = self.service.patch(
                conn, res_type, res_id, patch, if_match=_version_of(entry.request.get("ifMatch"))
            )
            entry.response = _response(result.version, 200, prefer)
        elif entry.method == "DELETE":
            if entry.target is None:
                entry.response = {"response": {"status": "204 No Content"}}
                return
            res_type, res_id = entry.target.split("/", 1)
            tombstone = self.service.delete(conn, res_type, res_id, if_match=_version_of(entry.request.get("ifMatch")))
            response = {"status": "204 No Content"}
            if tombstone is not None:
                response["etag"] = tombstone.etag
            entry.response = {"response": response}
        else:
            entry.response = self._read(conn, entry, access)

    def _read(self, conn: Connection, entry: Entry, access: Access) -> dict[str, Any]:
        parts = entry.url.split("?", 1)[0].split("/")
        if len(parts) == 2:
            found = self.service.read(conn, parts[0], parts[1], access=access)
        elif len(parts) == 4 and parts[2] == "_history" and parts[3].isdigit():
            found = self.service.vread(conn, parts[0], parts[1], int(parts[3]), access=access)
        else:
            raise FhirError("not-supported", f"GET {entry.url} inside a bundle: only read and vread are supported.")
        none_match = entry.request.get("ifNoneMatch")
        if none_match and none_match.strip().removeprefix("W/").strip('"') == str(found.version):
            return {"response": {"status": "304 Not Modified", "etag": found.etag}}
        return _response(found, 200, "representation")

    # -- batch ---------------------------------------------------------------------------------------

    def batch(
        self,
        conn: Connection,
        bundle: dict[str, Any],
        *,
        prefer: str = "representation",
        base: str = "",
        access: Access = UNRESTRICTED,
        authorize: Callable[[str, str], None] | None = None,
    ) -> dict:
        """Each entry on its own (a savepoint each); a failure, a scope refusal too, is reported in its entry only."""
        entries = _entries(bundle, self.max_entries)
        sync_custom_parameters(conn, self.service.registry)
        for entry in sorted(entries, key=lambda e: (e.rank, e.index)):
            savepoint = conn.begin_nested()
            try:
                if authorize is not None:
                    authorize(entry.method, entry.url)
                self._lock_conditions(conn, [entry])
                if entry.resource is not None and entry.method in ("POST", "PUT") and not entry.is_operation:
                    self.service.validate(entry.resource)
                self._assign(conn, [entry])
                if entry.resource is not None:
                    _rewrite(entry.resource, {}, lambda ref, e=entry: self._conditional_reference(conn, ref, e))
                self._execute(conn, entry, prefer, base, access)
                savepoint.commit()
            except FhirError as error:
                savepoint.rollback()
                entry.response = {"response": {"status": str(http_status(error)), "outcome": error.outcome()}}
        return {"resourceType": "Bundle", "type": "batch-response", "entry": [e.response for e in entries]}


def _new_item(entry: Entry) -> tuple[dict[str, Any], str]:
    """``(resource, id)`` of a POST entry whose id is assigned."""
    return entry.resource, entry.target.split("/", 1)[1]  # type: ignore[return-value,union-attr]


def _at_entry(error: FhirError, entry: Entry) -> FhirError:
    where = f"Bundle.entry[{entry.index}]"
    return FhirError(
        error.kind,
        f"{where} ({entry.method} {entry.url}): {error.diagnostics}",
        expression=error.expression or (where,),
        extra=error.extra,
        headers=error.headers,
    )


def _response(version: Version, status: int, prefer: str, warnings: list[Issue] | None = None) -> dict[str, Any]:
    """A response entry; the domain checks' warnings go into ``response.outcome`` whatever ``prefer`` says."""
    entry: dict[str, Any] = {"fullUrl": f"{version.res_type}/{version.res_id}"}
    if prefer == "representation":
        entry["resource"] = version.resource()
    response: dict[str, Any] = {
        "status": _STATUS_TEXT.get(status, str(status)),
        "location": version.location,
        "etag": version.etag,
        "lastModified": instant(version.ts),
    }
    if prefer == "OperationOutcome" or warnings:
        stored = (
            [Issue("informational", f"{version.location}", severity="information")]
            if prefer == "OperationOutcome"
            else []
        )
        response["outcome"] = operation_outcome([*stored, *(warnings or [])])
    entry["response"] = response
    return entry


def _version_of(etag: str | None) -> int | None:
    if not etag:
        return None
    tag = etag.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise invalid(f'ifMatch must be a version ETag like W/"3", not {etag}.')
    return int(tag)


def _patch_document(resource: Any) -> Any:
    import base64

    import orjson

    if isinstance(resource, dict) and resource.get("resourceType") == "Binary":
        try:
            return orjson.loads(base64.b64decode(resource.get("data", "")))
        except (ValueError, orjson.JSONDecodeError):
            raise invalid("The PATCH entry's Binary does not hold a JSON Patch document.") from None
    if isinstance(resource, dict) and resource.get("resourceType") == "Parameters":
        return resource
    raise FhirError("not-supported", "PATCH entries take a Binary holding a JSON Patch or a FHIRPath Patch Parameters.")


_CONDITIONAL = re.compile(r"^[A-Z][A-Za-z]+\?.")
_ABSOLUTE = re.compile(r"^https?://.+/(?P<ref>[A-Z][A-Za-z]+/[A-Za-z0-9.-]{1,64})$")
_HREF = re.compile(r'(href|src)="(urn:uuid:[0-9a-fA-F-]+|urn:oid:[0-9.]+)"')


def _rewrite(node: Any, mapping: dict[str, str], resolve_conditional) -> None:  # type: ignore[no-untyped-def]
    """Replace references to bundle fullUrls (and conditional references) with assigned ``Type/id``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                if value in mapping:
                    node[key] = mapping[value]
                elif _CONDITIONAL.match(value):
                    node[key] = resolve_conditional(value)
            elif key == "div" and isinstance(value, str) and mapping:
                node[key] = _HREF.sub(lambda m: f'{m[1]}="{mapping.get(m[2], m[2])}"', value)
            else:
                _rewrite(value, mapping, resolve_conditional)
    elif isinstance(node, list):
        for item in node:
            _rewrite(item, mapping, resolve_conditional)
