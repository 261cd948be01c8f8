"""The AuditEvent of one request, after IHE Basic Audit Log Patterns (BALP 1.1, RESTful interactions).

Type ``rest`` (audit-event-type) with the FHIR interaction as subtype; the client is the requesting agent (DICOM
Source Role ID) with its institution and user; the exchange is the destination and the source; entities are the
resources touched, each resident concerned (role 1 Patient) and, for searches, the query (role 24, base64).
A break-glass access carries purposeOfUse ETREAT, the security label BTG and the stated reason as an extension.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

import orjson

from fhir_server.repository import instant
from fhir_server.search.parameters import LOCAL_BASE

EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/dicom-audit-lifecycle"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
PURPOSE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
CLIENT_SYSTEM = LOCAL_BASE + "sid/client"
"""Identifier system of registered clients (``AuditEvent.agent.who.identifier``)."""
USER_SYSTEM = LOCAL_BASE + "sid/user"
BREAK_GLASS_EXTENSION = LOCAL_BASE + "StructureDefinition/break-glass-reason"
EXCHANGE = "Wuzhou Health Information Exchange"

# The action of each FHIR interaction (BALP: create C, read R, update U, delete D, search and operations E).
ACTIONS = {
    "create": "C",
    "read": "R",
    "vread": "R",
    "history": "R",
    "history-instance": "R",
    "history-type": "R",
    "history-system": "R",
    "update": "U",
    "patch": "U",
    "delete": "D",
    "search": "E",
    "search-type": "E",
    "search-system": "E",
    "capabilities": "E",
    "transaction": "E",
    "batch": "E",
    "operation": "E",
}


def outcome_code(status: int) -> str:
    """HTTP status → AuditEvent.outcome: 0 success, 4 refused or bad request, 8 server failure."""
    if status < 400:
        return "0"
    if status < 500:
        return "4"
    return "8"


@dataclass
class Access:
    """What one request did and who made it: everything an AuditEvent is built from."""

    interaction: str
    status: int
    recorded: int
    """Microseconds since the Unix epoch (UTC)."""
    method: str
    path: str
    client_id: str | None = None
    organization: str | None = None
    user: str | None = None
    purpose_of_use: str | None = None
    break_glass_reason: str | None = None
    remote_address: str | None = None
    action: str | None = None
    """Overrides the interaction's action (``$expunge`` is a D)."""
    operation: str | None = None
    """``$code`` of an operation."""
    query: str | None = None
    resources: list[str] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    erased: bool = False
    """The resources were permanently removed (``$expunge``: DICOM lifecycle 14)."""

    @property
    def effective_action(self) -> str:
        return self.action or ACTIONS.get(self.interaction, "E")


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


_TYPE = _coding(EVENT_TYPE, "rest", "RESTful Operation")
_SOURCE = {"observer": {"display": EXCHANGE}, "type": [_coding(SOURCE_TYPE, "4", "Application Server")]}
_CLIENT_ROLE = {"coding": [_coding(DICOM, "110153", "Source Role ID")]}
_PROVIDER_ROLE = {"coding": [_coding(ROLE_CLASS, "PROV", "healthcare provider")]}
_USER_ROLE = {
    "coding": [_coding("http://terminology.hl7.org/CodeSystem/extra-security-role-type", "humanuser", "human user")]
}
_DESTINATION = {
    "type": {"coding": [_coding(DICOM, "110152", "Destination Role ID")]},
    "who": {"display": EXCHANGE},
    "requestor": False,
}
_BREAK_GLASS_LABEL = {"security": [_coding(ACT_CODE, "BTG", "break the glass")]}
_SYSTEM_OBJECT = _coding(ENTITY_TYPE, "2", "System Object")
_PERSON = _coding(ENTITY_TYPE, "1", "Person")
_DOMAIN_RESOURCE = _coding(OBJECT_ROLE, "4", "Domain Resource")
_PATIENT_ROLE = _coding(OBJECT_ROLE, "1", "Patient")
_QUERY_ROLE = _coding(OBJECT_ROLE, "24", "Query")
_ERASED = _coding(LIFECYCLE, "14", "Permanent erasure / Physical destruction")
"""Parts every event shares, built once: events are only serialised, never changed in place."""


@lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    """``YYYY-MM-DDThh:mm:ss`` of a whole second (events come in time order: the same second is asked again)."""
    return instant(seconds * 1_000_000)[:19]


def recorded_instant(micros: int) -> str:
    """``instant(micros)`` (R4B instant in UTC with microseconds), the date part formatted once per second."""
    seconds, fraction = divmod(micros, 1_000_000)
    return f"{_second(seconds)}.{fraction:06d}Z"


@cache
def _interaction(code: str) -> dict[str, str]:
    return _coding(INTERACTION, code, code)


@cache
def _purpose(code: str) -> list[dict[str, Any]]:
    return [{"coding": [_coding(PURPOSE, code)]}]


def audit_event(access: Access) -> dict[str, Any]:
    """The AuditEvent resource (R4B) of one access; ``id`` is set when it takes its place in the chain."""
    subtype = [_interaction(access.interaction)]
    if access.operation:
        subtype.append({"code": access.operation, "display": f"{access.method} {access.path}"})
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": _TYPE,
        "subtype": subtype,
        "action": access.effective_action,
        "recorded": recorded_instant(access.recorded),
        "outcome": outcome_code(access.status),
        "outcomeDesc": f"{access.status} {access.method} {access.path}",
    }
    purpose = "ETREAT" if access.break_glass_reason else access.purpose_of_use
    if purpose:
        event["purposeOfUse"] = _purpose(purpose)
    if access.break_glass_reason:
        event["meta"] = _BREAK_GLASS_LABEL
        event["extension"] = [{"url": BREAK_GLASS_EXTENSION, "valueString": access.break_glass_reason}]
    event["agent"] = _agents(access.client_id, access.remote_address, purpose, access.organization, access.user)
    event["source"] = _SOURCE
    entities = _entities(access)
    if entities:
        event["entity"] = entities
    return event


@lru_cache(maxsize=1024)
def _agents(
    client_id: str | None, remote_address: str | None, purpose: str | None, organization: str | None, user: str | None
) -> list[dict[str, Any]]:
    """The agents of a caller's events, built once per caller (events are only serialised: they may share it)."""
    client: dict[str, Any] = {
        "type": _CLIENT_ROLE,
        "who": {"identifier": {"system": CLIENT_SYSTEM, "value": client_id or "anonymous"}},
        "requestor": True,
    }
    if remote_address:
        client["network"] = {"address": remote_address, "type": "2"}
    if purpose:
        client["purposeOfUse"] = _purpose(purpose)
    agents = [client]
    if organization:
        agents.append({"type": _PROVIDER_ROLE, "who": {"reference": organization}, "requestor": False})
    if user:
        agents.append(
            {
                "type": _USER_ROLE,
                "who": {"identifier": {"system": USER_SYSTEM, "value": user}},
                "requestor": True,
            }
        )
    agents.append(_DESTINATION)
    return agents


def _entities(access: Access) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    patients = set(access.patients)
    for reference in access.resources:
        if reference in patients and not access.erased:
            continue
        entity: dict[str, Any] = {"what": {"reference": reference}, "type": _SYSTEM_OBJECT, "role": _DOMAIN_RESOURCE}
        if access.erased:
            entity["lifecycle"] = _ERASED
        entities.append(entity)
    for patient in access.patients:
        entities.append({"what": {"reference": patient}, "type": _PERSON, "role": _PATIENT_ROLE})
    if access.query is not None:
        entities.append(
            {
                "type": _SYSTEM_OBJECT,
                "role": _QUERY_ROLE,
                "query": base64.b64encode(access.query.encode()).decode(),
            }
        )
    return entities


_SORTED = orjson.OPT_SORT_KEYS


def _json(value: Any) -> bytes:
    """Canonical JSON of one value, as ``chain.canonical`` writes it (sorted keys)."""
    return orjson.dumps(value, option=_SORTED)


_COMMON_TAIL = b'"resourceType":"AuditEvent","source":' + _json(_SOURCE) + b',"subtype":'
_TYPE_END = b',"type":' + _json(_TYPE) + b"}"
_RESOURCE_ENTITY = (
    b'{"role":' + _json(_DOMAIN_RESOURCE) + b',"type":' + _json(_SYSTEM_OBJECT) + b',"what":{"reference":'
)
_PATIENT_ENTITY = b'{"role":' + _json(_PATIENT_ROLE) + b',"type":' + _json(_PERSON) + b',"what":{"reference":'
_QUERY_ENTITY = b'","role":' + _json(_QUERY_ROLE) + b',"type":' + _json(_SYSTEM_OBJECT) + b"}"


@lru_cache(maxsize=1024)
def _agents_json(
    client_id: str | None, remote_address: str | None, purpose: str | None, organization: str | None, user: str | None
) -> bytes:
    return _json(_agents(client_id, remote_address, purpose, organization, user))


@cache
def _subtype_json(code: str) -> bytes:
    return _json([_interaction(code)])


def canonical_parts(access: Access) -> tuple[bytes, bytes]:
    """The canonical JSON (sorted keys) of ``audit_event(access)`` with an ``id``, around that id:
    ``head + b'"id":"' + id + b'",' + tail``. Composed of the members' own canonical JSON (the parts every event
    shares serialised once), so that the writer neither builds nor sorts the event."""
    purpose = "ETREAT" if access.break_glass_reason else access.purpose_of_use
    head = [
        b'{"action":',
        _json(access.effective_action),
        b',"agent":',
        _agents_json(access.client_id, access.remote_address, purpose, access.organization, access.user),
        b",",
    ]
    entities = _entities_json(access)
    if entities:
        head += (b'"entity":[', b",".join(entities), b"],")
    if access.break_glass_reason:
        head += (b'"extension":', _json([{"url": BREAK_GLASS_EXTENSION, "valueString": access.break_glass_reason}]))
        head.append(b",")
    tail = [b'"meta":', _json(_BREAK_GLASS_LABEL), b","] if access.break_glass_reason else []
    tail += (
        b'"outcome":"',
        outcome_code(access.status).encode(),
        b'","outcomeDesc":',
        _json(f"{access.status} {access.method} {access.path}"),
        b",",
    )
    if purpose:
        tail += (b'"purposeOfUse":', _json(_purpose(purpose)), b",")
    tail += (b'"recorded":"', recorded_instant(access.recorded).encode(), b'",', _COMMON_TAIL)
    if access.operation:
        subtype = [
            _interaction(access.interaction),
            {"code": access.operation, "display": f"{access.method} {access.path}"},
        ]
        tail.append(_json(subtype))
    else:
        tail.append(_subtype_json(access.interaction))
    tail.append(_TYPE_END)
    return b"".join(head), b"".join(tail)


def _entities_json(access: Access) -> list[bytes]:
    """The canonical JSON of each of ``_entities(access)``."""
    if access.erased:
        return [_json(entity) for entity in _entities(access)]
    found: list[bytes] = []
    patients = access.patients
    skipped = set(patients) if patients else ()
    for reference in access.resources:
        if reference not in skipped:
            found.append(_RESOURCE_ENTITY + _json(reference) + b"}}")
    for patient in patients:
        found.append(_PATIENT_ENTITY + _json(patient) + b"}}")
    if access.query is not None:
        found.append(b'{"query":"' + base64.b64encode(access.query.encode()) + _QUERY_ENTITY)
    return found
