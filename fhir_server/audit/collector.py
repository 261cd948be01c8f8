"""What a request touched, collected while it runs: the central response helpers report here for the audit trail.

The audit middleware puts one ``AccessCollector`` on ``request.state.audit``; ``resource_response``,
``write_response``, search, history, operations and transactions add the resources they answer with and the
residents (Patient compartment) those resources belong to. Nothing here touches the database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import orjson
from starlette.requests import HTTPConnection

from fhir_server import definitions
from fhir_server.auth.principal import SYSTEM, Principal

if TYPE_CHECKING:
    from fhir_server.repository import Version

_ALWAYS = ("subject", "patient")
_FRAGMENT = orjson.Fragment
_PLAIN_PATIENT_REFERENCE = re.compile(rb'"(Patient/[^"/\\]+)"')
"""A JSON string that is exactly ``Patient/{id}``: in stored canonical JSON every mention of a resident is one."""
_QUOTE_PLUS = str.maketrans(
    {
        code: "+" if code == 32 else f"%{code:02X}"
        for code in range(128)
        if not (chr(code).isalnum() or chr(code) in "_.-~")
    }
)
"""``quote_plus(text, safe="")`` of an ASCII text as one ``str.translate`` (RFC 3986 unreserved characters kept,
space as ``+``, every other character as ``%XX``)."""


class AccessCollector:
    """Resources and residents one request touched, in the order first seen."""

    __slots__ = ("erased", "interaction", "patients", "query", "resources", "state")

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        """The request's ``state`` (where authentication leaves the principal)."""
        self.resources: dict[str, None] = {}
        self.patients: dict[str, None] = {}
        self.interaction: str | None = None
        """Set by a handler when the URL alone cannot tell (``batch`` rather than ``transaction``)."""
        self.query: str | None = None
        """The search as the server understood it (a POST ``_search`` has its parameters in the body)."""
        self.erased = False

    @property
    def principal(self) -> Principal:
        """The caller; the exchange itself when no authentication ran."""
        return self.state.get("principal") or SYSTEM

    def resource(self, resource: dict[str, Any], *, entity: bool = True) -> None:
        """A resource answered or written: itself (unless ``entity`` is false) and the residents it concerns."""
        res_type = resource.get("resourceType")
        res_id = resource.get("id")
        if not isinstance(res_type, str) or not isinstance(res_id, str):
            return
        if entity:
            self.resources[f"{res_type}/{res_id}"] = None
        for patient in patients_of(resource):
            self.patients[patient] = None

    def stored(self, version: Version, *, entity: bool = False) -> None:
        """A stored version answered as its JSON (not parsed for the answer): like :meth:`resource`, parsing the
        body only when it may name a resident not seen yet. Every reference to a resident holds ``Patient/``
        (canonical JSON escapes neither letters nor ``/``); when each of those is a plain ``"Patient/{id}"`` of a
        resident already noted, the resource adds none."""
        body = version.body
        if body is None:
            return
        if entity:
            self.resources[f"{version.res_type}/{version.res_id}"] = None
        if version.res_type == "Patient":  # a Patient concerns itself
            self.patients[f"Patient/{version.res_id}"] = None
            return
        named = _PLAIN_PATIENT_REFERENCE.findall(body)
        if len(named) == body.count(b"Patient/") and all(n.decode() in self.patients for n in named):
            return
        for patient in patients_of(orjson.loads(body)):
            self.patients[patient] = None

    def bundle(self, bundle: dict[str, Any]) -> None:
        """The residents of every resource in a Bundle answered (search, history, ``$everything``), and the
        resources a transaction or batch wrote (``response.location``)."""
        for entry in bundle.get("entry") or ():
            resource = entry.get("resource")
            response = entry.get("response")
            if not response:
                if resource.__class__ is _FRAGMENT:
                    continue  # stored JSON, reported by the operation that loaded it (``$everything``)
            else:
                location = response.get("location")
                if isinstance(location, str) and "/" in location and "://" not in location:
                    self.reference("/".join(location.split("/")[:2]))
            if isinstance(resource, dict):
                if resource.get("resourceType") == "Bundle":
                    self.bundle(resource)
                else:
                    self.resource(resource, entity=False)

    def reference(self, reference: str) -> None:
        self.resources[reference] = None
        patient = patient_reference(reference)
        if patient is not None and reference.startswith("Patient/"):
            self.patients[patient] = None

    def expunged(self, references: list[str]) -> None:
        """Resources removed for good (``$expunge``)."""
        for reference in references:
            self.reference(reference)
        self.erased = True


def collector_of(connection: HTTPConnection) -> AccessCollector | None:
    """The request's collector, or None when auditing is off."""
    state = connection.scope.get("state")
    return state.get("audit") if state else None


def principal_of(connection: HTTPConnection) -> Principal:
    """The caller of a request (``request.state.principal``), the exchange itself when authentication is off."""
    state = connection.scope.get("state")
    return (state.get("principal") if state else None) or SYSTEM


@cache
def _patient_fields(res_type: str) -> tuple[str, ...]:
    """Top-level elements that may reference the resident: the Patient compartment's parameters (R4B)."""
    members = definitions.compartment("Patient").get(res_type, [])
    return tuple(dict.fromkeys([*_ALWAYS, *members]))


def patients_of(resource: dict[str, Any]) -> list[str]:
    """``Patient/{id}`` of each resident a resource belongs to (itself for a Patient), from its references."""
    res_type = resource.get("resourceType")
    if res_type == "Patient":
        res_id = resource.get("id")
        return [f"Patient/{res_id}"] if isinstance(res_id, str) else []
    found: list[str] = []
    for name in _patient_fields(res_type) if isinstance(res_type, str) else _ALWAYS:
        value = resource.get(name)
        for item in value if isinstance(value, list) else (value,):
            if isinstance(item, dict) and isinstance(item.get("reference"), str):
                patient = patient_reference(item["reference"])
                if patient is not None and patient not in found:
                    found.append(patient)
    return found


def patient_reference(reference: str) -> str | None:
    """``Patient/{id}`` from a relative, versioned or absolute reference to a Patient; None otherwise."""
    parts = reference.split("/")
    for index in range(len(parts) - 1):
        if parts[index] == "Patient" and parts[index + 1]:
            return f"Patient/{parts[index + 1]}"
    return None


def note_resource(connection: HTTPConnection, resource: dict[str, Any]) -> None:
    """A resource the request answers with (before ``_summary``/``_elements`` shaping)."""
    collector = collector_of(connection)
    if collector is not None:
        collector.resource(resource)


def note_version(connection: HTTPConnection, version: Version) -> None:
    """A version the request wrote or answers with (its JSON is parsed only while auditing)."""
    collector = collector_of(connection)
    if collector is None or version.body is None:
        return
    if version.res_type == "Patient":  # a Patient concerns itself: no need to parse it
        reference = f"Patient/{version.res_id}"
        collector.resources[reference] = None
        collector.patients[reference] = None
    else:
        collector.resource(version.resource())


def note_bundle(connection: HTTPConnection, bundle: dict[str, Any]) -> None:
    """The residents of a Bundle the request answers with, and the locations a transaction wrote."""
    collector = collector_of(connection)
    if collector is not None:
        collector.bundle(bundle)


def note_search(
    connection: HTTPConnection,
    params: list[tuple[str, str]],
    bundle: dict[str, Any],
    shaped: Iterable[Version] | None = None,
) -> None:
    """A search: its parameters (a POST ``_search`` has them in the body) and the residents of its results,
    taken from the stored versions (``shaped``) when given: the answer then holds stored JSON or shaped views."""
    collector = collector_of(connection)
    if collector is None:
        return
    collector.query = query_text(params)
    if shaped is None:
        collector.bundle(bundle)
    else:
        for version in shaped:
            collector.stored(version)


def query_text(params: list[tuple[str, str]]) -> str:
    """``urllib.parse.urlencode(params)``, ASCII texts quoted in one ``str.translate`` each rather than character
    by character (the audit records every search's parameters)."""
    return "&".join(f"{_quoted(name)}={_quoted(value)}" for name, value in params)


def _quoted(text: str) -> str:
    return text.translate(_QUOTE_PLUS) if text.isascii() else quote_plus(text, safe="")
