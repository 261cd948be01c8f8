"""``$validate`` (R4B resource-operation-validate): is a resource valid, for a create, an update or a delete?

The answer is always 200 with an OperationOutcome: an ``information`` issue when the resource is valid, its
problems otherwise. A 4xx means the validation itself could not run (bad inputs, an unknown ``profile``).
A resource is checked as a write would check it (R4B structure, required bindings, regional rules), then
against the profile named by ``profile`` and those its ``meta.profile`` claims (StructureDefinitions posted
to this server; what :mod:`fhir_server.operations.profile_check` covers). A claimed profile that is not
known here is a warning, not an error.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from fhir_server.errors import FhirError, Issue, operation_outcome
from fhir_server.operations.base import Invocation, Operation
from fhir_server.operations.conformance import canonical_resource, value_set_codes
from fhir_server.operations.inputs import bad_input
from fhir_server.operations.profile_check import CORE, Profile, ProfileChecker

MODES = ("create", "update", "delete", "profile")

DECLARATION: dict[str, Any] = {
    "id": "Resource-validate",
    "name": "Validate",
    "title": "Validate a resource",
    "code": "validate",
    "resource": ["Resource"],
    "system": False,
    "type": True,
    "instance": True,
    "affectsState": False,
    "base": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    "description": (
        "Checks a resource as a create or update would, and against profiles posted to this server "
        "(cardinality, types, fixed and pattern values, required bindings, invariants, value and pattern "
        "slicing). Always answers 200 with an OperationOutcome."
    ),
    "parameter": [
        {
            "name": "resource",
            "use": "in",
            "min": 0,
            "max": "1",
            "type": "Resource",
            "documentation": "The resource; may be left out at instance level (the stored version is checked).",
        },
        {
            "name": "mode",
            "use": "in",
            "min": 0,
            "max": "1",
            "type": "code",
            "documentation": "create | update | delete | profile.",
            "binding": {
                "strength": "required",
                "valueSet": "http://hl7.org/fhir/ValueSet/resource-validation-mode|4.3.0",
            },
        },
        {
            "name": "profile",
            "use": "in",
            "min": 0,
            "max": "1",
            "type": "uri",
            "documentation": "The canonical URL of a StructureDefinition stored on this server.",
        },
        {"name": "return", "use": "out", "min": 1, "max": "1", "type": "OperationOutcome"},
    ],
}


def validate(call: Invocation, conn: Connection) -> dict[str, Any]:
    mode = call.one("mode")
    if mode is not None and mode not in MODES:
        raise bad_input("mode", f"mode={mode} is not one of {', '.join(MODES)}.")
    res_type = call.res_type or ""
    if mode == "delete":
        return operation_outcome(_deletable(call, conn, res_type))
    resource = call.one("resource")
    if resource is None:
        if call.res_id is None:
            raise bad_input("resource", "$validate needs the resource: a 'resource' parameter or the resource as body.")
        resource = call.service.read(conn, res_type, call.res_id).resource()
    issues = _base_issues(call, resource, res_type)
    if mode == "update":
        issues += _update_issues(call, resource)
    issues += _profile_issues(call, conn, resource)
    if not any(issue.severity in ("error", "fatal") for issue in issues):
        issues.insert(0, Issue("informational", f"The {res_type} is valid.", severity="information"))
    return operation_outcome(issues)


def _deletable(call: Invocation, conn: Connection, res_type: str) -> list[Issue]:
    if call.res_id is None:
        raise bad_input("mode", "mode=delete checks the deletion of one resource: call [type]/[id]/$validate.")
    current = call.service.repository.current(conn, res_type, call.res_id)
    if current is None or current.deleted:
        state = "is not known" if current is None else "is already deleted"
        return [Issue("not-found", f"{res_type}/{call.res_id} {state}; there is nothing to delete.")]
    return [Issue("informational", f"{res_type}/{call.res_id} can be deleted.", severity="information")]


def _base_issues(call: Invocation, resource: dict[str, Any], res_type: str) -> list[Issue]:
    try:
        call.service.validate(resource, res_type)
    except FhirError as error:
        return error.issues
    return []


def _update_issues(call: Invocation, resource: dict[str, Any]) -> list[Issue]:
    body_id = resource.get("id")
    if body_id is None:
        return [Issue("required", "An update needs the resource's id.", expression=("id",))]
    if call.res_id is not None and body_id != call.res_id:
        message = f"The resource's id '{body_id}' does not match the id '{call.res_id}' in the URL."
        return [Issue("invalid", message, expression=("id",))]
    return []


def _profile_issues(call: Invocation, conn: Connection, resource: dict[str, Any]) -> list[Issue]:
    res_type = resource.get("resourceType")
    wanted: list[tuple[str, bool]] = []
    if call.one("profile"):
        wanted.append((call.one("profile"), True))
    meta = resource.get("meta")
    claimed = meta.get("profile") if isinstance(meta, dict) else None
    for url in claimed if isinstance(claimed, list) else []:
        if isinstance(url, str) and url not in (u for u, _ in wanted):
            wanted.append((url, False))
    issues: list[Issue] = []
    for url, explicit in wanted:
        structure = canonical_resource(conn, call.service, "StructureDefinition", url)
        if structure is None:
            if url.partition("|")[0] == f"{CORE}{res_type}":
                continue  # the core definition: base validation has checked it
            if explicit:
                raise bad_input("profile", f"The profile {url} is not known here; post its StructureDefinition first.")
            issues.append(
                Issue("not-found", f"Profile {url} (meta.profile) is not known here; not checked.", severity="warning")
            )
            continue
        if structure.get("kind") != "resource" or not structure.get("type"):
            message = f"{url} does not profile a resource (kind {structure.get('kind')})."
            if explicit:
                raise bad_input("profile", message)
            issues.append(Issue("not-supported", message, severity="warning"))
            continue
        checker = ProfileChecker(Profile(structure), lambda vs: value_set_codes(conn, call.service, vs))
        issues += checker.check(resource)
    return issues


OPERATION = Operation(DECLARATION, validate)
