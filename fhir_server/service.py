"""The in-process FHIR service: REST semantics (validation, conditions, versioning) for every caller.

REST handlers and domain modules call these functions inside one unit of work (DESIGN.md rules 2 and 4).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import jsonpatch
from sqlalchemy import Connection

from fhir_server import access, fhirpath_patch
from fhir_server.access import UNRESTRICTED, Access, acting_principal, read_version
from fhir_server.errors import FhirError, Issue, invalid, precondition_failed
from fhir_server.outbox import record_writes
from fhir_server.repository import Repository, Version, WriteHook, WriteResult, check_id, expect_id
from fhir_server.search.custom import changing, check_search_parameter, sync_custom_parameters
from fhir_server.search.parameters import Registry, default_registry
from fhir_server.search.query import find
from fhir_server.validation import validate_resource


@dataclass(frozen=True)
class CreateOutcome:
    """A create, or the existing match of a conditional create (``created`` False, status 200)."""

    version: Version
    created: bool


def apply_patch(resource: dict[str, Any], patch: Any) -> dict[str, Any]:
    """A JSON Patch document (RFC 6902, a JSON array) or a FHIRPath Patch (a Parameters resource)."""
    if isinstance(patch, dict) and patch.get("resourceType") == "Parameters":
        return fhirpath_patch.apply(resource, patch)
    if not isinstance(patch, list):
        raise invalid("A patch is a JSON Patch array (RFC 6902) or a FHIRPath Patch Parameters resource.")
    try:
        return jsonpatch.apply_patch(resource, patch)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
        raise FhirError("processing", f"The JSON Patch cannot be applied: {exc}") from None


WriteCheck = Callable[[dict[str, Any]], list[Issue]]
"""A domain rule run on every resource written (e.g. resident ID numbers on Patients); errors reject it."""


BeforeWrite = Callable[[Connection, str, str, "dict[str, Any] | None"], None]
"""A named domain hook run before a resource is stored or deleted, inside the writer's unit of work.

Called as ``hook(conn, res_type, res_id, resource)`` with the resource about to be stored (``None`` for a delete)
by every write path: the interactions below, transaction and batch Bundles and bulk import. It may amend the
resource, write other resources through the repository, or raise FhirError to refuse the write. The master
patient index (``ehr_archive.mpi``) is one.
"""


def parse_query(query: str) -> list[tuple[str, str]]:
    """``identifier=a|b&_id=1`` → pairs, keeping blank values so they can be reported."""
    return parse_qsl(query.lstrip("?"), keep_blank_values=True)


class FhirService:
    """Validated, versioned, indexed access to resources of every type."""

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        allow_multiple_delete: bool = True,
        max_delete: int = 100,
        checks: Sequence[WriteCheck] = (),
        on_write: Sequence[WriteHook] = (record_writes,),
        before_write: Sequence[BeforeWrite] = (),
    ):
        self.registry = registry or default_registry()
        self.checks = tuple(checks)
        self.before_write = [access.guard_write, *before_write]  # first: only the owner changes a record
        # Access control's named hooks: writer stamping and ownership, consent rules, Provenance (docs/SECURITY.md).
        self.repository = Repository(self.registry, on_write=[*on_write, *access.WRITE_HOOKS], stamp=access.stamp_write)
        self.allow_multiple_delete = allow_multiple_delete
        self.max_delete = max_delete

    def validate(self, resource: Any, expected: str | None = None) -> str:
        """R4B validation plus the domain checks registered on this service."""
        res_type = validate_resource(resource, expected)
        check_search_parameter(self.registry, resource)
        errors = [issue for check in self.checks for issue in check(resource) if issue.severity in ("error", "fatal")]
        if errors:
            raise FhirError("invalid", f"The {res_type} breaks {len(errors)} regional rule(s).", extra=errors)
        return res_type

    def warnings(self, resource: dict[str, Any]) -> list[Issue]:
        """What the domain checks say about an accepted resource short of an error (returned to the client)."""
        return [
            issue for check in self.checks for issue in check(resource) if issue.severity in ("warning", "information")
        ]

    def prepare_write(
        self,
        conn: Connection,
        res_type: str,
        res_id: str,
        resource: dict[str, Any] | None,
        *,
        assigned: bool = False,
    ) -> None:
        """Run the before-write hooks (:data:`BeforeWrite`) for one resource about to be stored or deleted.

        ``assigned``: the server gave ``res_id`` to a new resource in this request, so no stored resource has
        it and the ownership check (``access.guard_write``, which looks up the owner of a stored one) is left
        out; a Subscription is still checked (its rules do not depend on a stored one). A client's id never is.
        """
        changing(self.registry, res_type)  # a SearchParameter: this process's next search reloads the registry
        for hook in self.before_write:
            if assigned and hook is access.guard_write and res_type != "Subscription":
                continue
            hook(conn, res_type, res_id, resource)

    # -- search used by conditional interactions -------------------------------------------------

    def matches(self, conn: Connection, res_type: str, params: list[tuple[str, str]], *, limit: int = 2) -> list[int]:
        """Matches of a condition among what the writer may read: another institution's hidden record is no match."""
        if not params:
            raise invalid(f"A conditional request on {res_type} needs search parameters.")
        sync_custom_parameters(conn, self.registry)
        restrict = Access.of(acting_principal()).restriction
        return find(conn, self.registry, res_type, params, limit=limit, restrict=restrict)

    # -- interactions ----------------------------------------------------------------------------

    def create(self, conn: Connection, resource: dict[str, Any], *, if_none_exist: str | None = None) -> CreateOutcome:
        """Create (R4B §3.1.0.5), conditionally when ``if_none_exist`` holds a search query."""
        res_type = self.validate(resource)
        sync_custom_parameters(conn, self.registry)
        if if_none_exist:
            params = parse_query(if_none_exist)
            self.repository.lock_condition(conn, f"{res_type}?{if_none_exist.lstrip('?')}")
            found = self.matches(conn, res_type, params)
            if len(found) > 1:
                raise FhirError("multiple-matches", f"If-None-Exist '{if_none_exist}' matches several {res_type}s.")
            if found:
                return CreateOutcome(self.repository.load_many(conn, found)[0], created=False)
        resource.pop("id", None)
        res_id = str(uuid.uuid4())
        self.prepare_write(conn, res_type, res_id, resource, assigned=True)
        result = self.repository.create(conn, resource, res_id=res_id, method="POST")
        return CreateOutcome(result.version, created=True)

    def update(
        self,
        conn: Connection,
        res_type: str,
        res_id: str,
        resource: dict[str, Any],
        *,
        if_match: int | None = None,
    ) -> WriteResult:
        """Update or update-as-create (R4B §3.1.0.4)."""
        check_id(res_id)
        self.validate(resource, res_type)
        expect_id(resource, res_id)
        sync_custom_parameters(conn, self.registry)
        self.prepare_write(conn, res_type, res_id, resource)
        return self.repository.update(conn, res_type, res_id, resource, if_match=if_match)

    def conditional_update(
        self, conn: Connection, res_type: str, query: str, resource: dict[str, Any], *, if_match: int | None = None
    ) -> WriteResult:
        """``PUT Type?params`` (R4B §3.1.0.4.2): update the one match, create when none, 412 when several."""
        self.validate(resource, res_type)
        self.repository.lock_condition(conn, f"{res_type}?{query}")
        found = self.matches(conn, res_type, parse_query(query))
        if len(found) > 1:
            raise FhirError("multiple-matches", f"The condition '{query}' matches several {res_type}s.")
        if not found:
            body_id = resource.get("id")
            if body_id is not None:
                check_id(body_id)
                self.prepare_write(conn, res_type, body_id, resource)
                return self.repository.update(conn, res_type, body_id, resource, if_match=if_match)
            new_id = str(uuid.uuid4())
            self.prepare_write(conn, res_type, new_id, resource, assigned=True)
            return self.repository.create(conn, resource, res_id=new_id, method="POST")
        target = self.repository.load_many(conn, found)[0]
        if resource.get("id") not in (None, target.res_id):
            raise invalid(
                f"The condition matches {res_type}/{target.res_id} but the body has id '{resource['id']}'.",
                expression=("id",),
            )
        resource["id"] = target.res_id
        self.prepare_write(conn, res_type, target.res_id, resource)
        return self.repository.update(conn, res_type, target.res_id, resource, if_match=if_match)

    def patch(
        self, conn: Connection, res_type: str, res_id: str, patch: Any, *, if_match: int | None = None
    ) -> WriteResult:
        """JSON Patch or FHIRPath Patch on the current version (R4B §3.1.0.6); validated like a PUT."""
        current = self.repository.current(conn, res_type, res_id, lock=True)
        if current is None:
            raise FhirError("not-found", f"{res_type}/{res_id} is not known to this server.")
        if if_match is not None and if_match != current.version:
            raise precondition_failed(f"{res_type}/{res_id} is at version {current.version}, not {if_match}.")
        sync_custom_parameters(conn, self.registry)
        patched = apply_patch(current.resource(), patch)
        if patched.get("resourceType") != res_type or patched.get("id") != res_id:
            raise invalid("A patch may not change resourceType or id.")
        self.validate(patched, res_type)
        self.prepare_write(conn, res_type, res_id, patched)
        return self.repository.update(conn, res_type, res_id, patched, if_match=current.version, method="PATCH")

    def conditional_patch(
        self, conn: Connection, res_type: str, query: str, patch: Any, *, if_match: int | None = None
    ) -> WriteResult:
        found = self.matches(conn, res_type, parse_query(query))
        if len(found) != 1:
            kind = "not-found" if not found else "multiple-matches"
            raise FhirError(kind, f"A conditional patch needs exactly one match; '{query}' matched {len(found)}.")
        target = self.repository.load_many(conn, found)[0]
        return self.patch(conn, res_type, target.res_id, patch, if_match=if_match)

    def delete(self, conn: Connection, res_type: str, res_id: str, *, if_match: int | None = None) -> Version | None:
        check_id(res_id)
        self.prepare_write(conn, res_type, res_id, None)
        return self.repository.delete(conn, res_type, res_id, if_match=if_match)

    def conditional_delete(self, conn: Connection, res_type: str, query: str) -> list[Version]:
        """``DELETE Type?params`` (R4B §3.1.0.7.1); several matches only when configured, up to a bound."""
        found = self.matches(conn, res_type, parse_query(query), limit=self.max_delete + 1)
        if len(found) > 1 and not self.allow_multiple_delete:
            raise FhirError("multiple-matches", f"The condition '{query}' matches several {res_type}s.")
        if len(found) > self.max_delete:
            raise FhirError(
                "too-costly", f"The condition '{query}' matches more than {self.max_delete} {res_type}s; narrow it."
            )
        deleted = []
        for version in self.repository.load_many(conn, found):
            self.prepare_write(conn, res_type, version.res_id, None)
            tombstone = self.repository.delete(conn, res_type, version.res_id)
            if tombstone is not None:
                deleted.append(tombstone)
        return deleted

    def read(self, conn: Connection, res_type: str, res_id: str, *, access: Access = UNRESTRICTED) -> Version:
        """Read (R4B §3.1.0.2); what ``access`` may not read is a 404 like a missing resource."""
        return self.repository.read(conn, res_type, res_id, readable=access.readable_column)  # one statement

    def vread(
        self, conn: Connection, res_type: str, res_id: str, version: int, *, access: Access = UNRESTRICTED
    ) -> Version:
        """Vread (R4B §3.1.0.3); the version is judged on its own content (``fhir_server.access.versions``)."""
        return read_version(conn, access, self.registry, self.repository, res_type, res_id, version)
