"""Which scope each FHIR request needs: the interaction read off method and path (SMART App Launch 2.0 §Scopes).

``c`` create, ``r`` read/vread/history, ``u`` update/patch, ``d`` delete, ``s`` search. Operations need read on
their type (write, ``u``, when they change data; ``$expunge`` delete). Searches whose types are only known from
the body or ``_type`` (system search), bundles (per entry) and ``$export`` (the exported types) are checked by
their handlers through ``fhir_server.auth.enforce``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server import definitions
from fhir_server.auth.scopes import Grants, needed_scope, permission_name
from fhir_server.errors import FhirError
from fhir_server.operations import find_operation

_WRITES = {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}
_DEFERRED_OPERATIONS = frozenset({"export", "access-log"})
"""Operations that check the caller themselves: ``$export`` (its types), ``$access-log`` (the resident's own app)."""
_ALL = "*"


@dataclass(frozen=True)
class Need:
    """One type and permission a request needs."""

    res_type: str
    permission: str
    constrainable: bool = False
    """The handler narrows the interaction to a v2 scope's constraint (``?category=…``), so such a scope suffices."""


def _op(method: str, res_type: str | None, code: str, instance: bool) -> list[Need]:
    if code in _DEFERRED_OPERATIONS or code.startswith("export-"):
        return []
    target = res_type or _ALL
    if code == "everything" and res_type == "Patient":
        return [Need("Patient", "r"), *(Need(t, "r") for t in sorted(definitions.compartment("Patient")))]
    try:
        operation = find_operation(code, res_type, instance=instance)
    except FhirError:
        return []  # the route answers 404 for an unknown operation
    if code == "expunge":
        return [Need(target, "d")]
    return [Need(target, "u" if operation.affects_state and method != "GET" else "r")]


def needs_of(method: str, parts: list[str]) -> list[Need]:
    """The needs of ``method [base]/parts…`` (``parts`` is the path below ``/fhir``), before the handler runs.

    An empty list where the handler checks for itself (system search, bundles, ``$export``) or the route answers
    404/405 anyway. The websocket channel needs read on Subscription.
    """
    method = "GET" if method == "HEAD" else method
    n = len(parts)
    if n == 0:
        return []  # system search (types from _type, checked by the search handler) or a bundle (per entry)
    first = parts[0]
    if first.startswith("$"):
        return _op(method, None, first[1:], False)
    if first == "_history":
        return [Need(_ALL, "r")]
    if first in ("_search", "metadata", "websocket"):
        return [Need("Subscription", "r")] if first == "websocket" else []
    if first not in definitions.resource_types():
        return []
    if n == 1:
        if method == "GET":
            return [Need(first, "s", constrainable=True)]
        permission = _WRITES.get(method)
        return [Need(first, permission, constrainable=method == "POST")] if permission else []
    second = parts[1]
    if n == 2 and second == "_search":
        return [Need(first, "s", constrainable=True)]
    if n == 2 and second == "_history":
        return [Need(first, "r")]
    if second.startswith("$"):
        return _op(method, first, second[1:], False)
    if n == 2:
        if method == "GET":
            return [Need(first, "r", constrainable=True)]
        permission = _WRITES.get(method) if method != "POST" else None  # POST [type]/[id] is no interaction
        return [Need(first, permission, constrainable=True)] if permission else []
    third = parts[2]
    if third.startswith("$"):
        return _op(method, first, third[1:], True)
    if third == "_history":
        return [Need(first, "r", constrainable=n == 4)]
    members = definitions.compartment(first)
    if members and (third == "*" or third in members):
        types = sorted(members) if third == "*" else [third]
        return [Need(t, "s", constrainable=len(types) == 1) for t in types]
    return []


def forbidden(need: Need, grants: Grants | None = None, *, constrained: bool = False) -> FhirError:
    """403 naming the scope that was missing."""
    what = "every resource type" if need.res_type == _ALL else need.res_type
    message = (
        f"Insufficient scope: {permission_name(need.permission)} on {what} needs the scope "
        f"{needed_scope(need.res_type, need.permission)}"
    )
    if constrained:
        message += " without a ?param=value constraint (constrained scopes cover search, read, create, update, "
        message += "patch and delete of one type only)"
    if grants is not None and grants.patient_scopes and need.permission not in "rs":
        message += "; patient/ scopes grant read and search only, a resident's app cannot write"
    return FhirError("forbidden", message + ".")


__all__ = ["Need", "forbidden", "needs_of"]
