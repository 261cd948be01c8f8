"""``Patient/$everything`` (R4B patient-operation-everything): a patient's record, paged.

The record is the patient, the members of the official Patient compartment (through the search parameters of
the CompartmentDefinition, read from the reference index) and what those resources refer to, one level out,
among :data:`REFERENCED_TYPES`. References are followed where a search parameter indexes them. At type level
it is every patient's record. ``start``/``end`` keep compartment resources whose care date (:func:`care_date`)
overlaps the range, and those without one; ``_since`` and ``_type`` filter what is returned. Pages are cut by
keyset on the resource's storage key: however long the paging takes and whatever is updated meanwhile, no
resource comes twice and none present throughout is missed; every page carries the accurate ``total``, and
there is no cap. Each page evaluates the record again (cost grows with the record, not with the page number
beyond that): fine for one patient, an export-sized job at type level on a large archive.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection, and_, case, exists, func, or_, select, union

from fhir_server import definitions
from fhir_server.operations.base import Invocation, Operation
from fhir_server.operations.inputs import bad_input, position_cursor, read_position_cursor, text_value
from fhir_server.repository import Version
from fhir_server.search.values import search_date
from fhir_server.storage.tables import date_index, reference_index, resources

REFERENCED_TYPES = (
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "Medication",
    "Device",
    "Substance",
)
"""Resources outside the compartment that its members refer to and that belong in the record."""

_CARE_DATES = {
    "Condition": "onset-date",
    "MedicationRequest": "authoredon",
    "MedicationStatement": "effective",
    "MedicationAdministration": "effective-time",
    "MedicationDispense": "whenhandedover",
    "ServiceRequest": "authored",
    "CommunicationRequest": "authored",
    "RequestGroup": "authored",
    "QuestionnaireResponse": "authored",
    "Specimen": "collected",
    "Claim": "created",
    "ExplanationOfBenefit": "created",
    "DocumentManifest": "created",
    "Media": "created",
    "Communication": "sent",
    "ImagingStudy": "started",
    "Goal": "start-date",
    "NutritionOrder": "datetime",
    "DeviceRequest": "event-date",
    "Provenance": "when",
    "ChargeItem": "occurrence",
    "Account": "period",
    "VisionPrescription": "datewritten",
}

DECLARATION: dict[str, Any] = {
    "id": "Patient-everything",
    "name": "Everything",
    "title": "Fetch a patient's record",
    "code": "everything",
    "resource": ["Patient"],
    "system": False,
    "type": True,
    "instance": True,
    "affectsState": False,
    "base": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    "description": (
        "The patient, the resources of the Patient compartment (R4B CompartmentDefinition) and the "
        "practitioners, organizations, locations, medications, devices and substances they refer to; "
        "a searchset Bundle paged by keyset, with total."
    ),
    "parameter": [
        {
            "name": "start",
            "use": "in",
            "min": 0,
            "max": "1",
            "type": "date",
            "documentation": "Care dates on or after this date (resources without a care date are kept).",
        },
        {"name": "end", "use": "in", "min": 0, "max": "1", "type": "date", "documentation": "Care dates up to."},
        {
            "name": "_since",
            "use": "in",
            "min": 0,
            "max": "1",
            "type": "instant",
            "documentation": "Only resources updated at or after this instant.",
        },
        {
            "name": "_type",
            "use": "in",
            "min": 0,
            "max": "*",
            "type": "code",
            "documentation": "Only resources of these types (comma-separated or repeated).",
        },
        {"name": "_count", "use": "in", "min": 0, "max": "1", "type": "positiveInt", "documentation": "Page size."},
        {"name": "return", "use": "out", "min": 1, "max": "1", "type": "Bundle"},
    ],
}


def care_date(res_type: str) -> str:
    """The date search parameter holding the care date of a compartment type (R4B clinical-date by default)."""
    return _CARE_DATES.get(res_type, "date")


def everything(call: Invocation, conn: Connection) -> dict[str, Any]:
    if call.res_id is not None:
        call.service.read(conn, "Patient", call.res_id, access=call.access)  # 404/410: unknown, hidden, deleted
    count = min(call.one("_count", call.settings.default_page_size), call.settings.max_page_size)
    after = read_position_cursor("everything", call.cursor) if call.cursor else 0
    members = record(call.res_id, _range(call, "start", 0), _range(call, "end", 1))
    r = resources.c
    where = [r.res_pk.in_(select(members.c.res_pk)), r.deleted.is_(False)]
    restrict = call.access.restriction
    if restrict is not None:  # what the caller may read of the record, in the SQL: totals and pages exact
        where.append(restrict(resources, None))
    types = _types(call.all("_type"))
    if types:
        where.append(r.res_type.in_(types))
    since = call.one("_since")
    if since is not None:
        where.append(r.ts >= _range_of("_since", since)[0])
    total = conn.execute(select(func.count()).select_from(resources).where(*where)).scalar_one()
    page = list(
        conn.execute(select(r.res_pk).where(*where, r.res_pk > after).order_by(r.res_pk).limit(count + 1)).scalars()
    )
    more = len(page) > count
    versions = call.service.repository.load_many(conn, page[:count])
    return _bundle(call, versions, total, position_cursor("everything", page[count - 1]) if more else None)


def record(patient_id: str | None, start: int | None, end: int | None) -> Any:
    """``SELECT res_pk`` of the record of one patient (or of every patient): patient, compartment, referenced."""
    r = resources.alias("patient")
    patients = select(r.c.res_pk, r.c.res_id).where(r.c.res_type == "Patient", r.c.deleted.is_(False))
    if patient_id is not None:
        patients = patients.where(r.c.res_id == patient_id)
    link = reference_index.alias("link")
    target = (
        link.c.target_id == patient_id
        if patient_id is not None
        else link.c.target_id.in_(select(patients.subquery().c.res_id))
    )
    member_of = or_(
        *(
            and_(link.c.res_type == t, link.c.param.in_(params))
            for t, params in definitions.compartment("Patient").items()
        )
    )
    compartment = select(link.c.res_pk).where(link.c.target_type == "Patient", target, member_of)
    if start is not None or end is not None:
        compartment = compartment.where(_care_in_range(link.c.res_pk, start, end))
    sources = union(select(patients.subquery().c.res_pk), compartment).subquery("sources")
    out = reference_index.alias("out")
    referenced_row = resources.alias("referenced")
    referenced = select(referenced_row.c.res_pk).where(
        out.c.res_pk.in_(select(sources.c.res_pk)),
        out.c.target_type.in_(REFERENCED_TYPES),
        referenced_row.c.res_type == out.c.target_type,
        referenced_row.c.res_id == out.c.target_id,
        referenced_row.c.deleted.is_(False),
    )
    return union(select(sources.c.res_pk), referenced).subquery("record")


def _care_in_range(res_pk: Any, start: int | None, end: int | None) -> Any:
    """No care date, or one overlapping [start, end]."""
    d = date_index.alias("care")
    is_care_date = d.c.param == case(_CARE_DATES, value=d.c.res_type, else_="date")
    overlap = [d.c.res_pk == res_pk, is_care_date]
    if start is not None:
        overlap.append(d.c.high >= start)
    if end is not None:
        overlap.append(d.c.low <= end)
    return or_(~exists().where(d.c.res_pk == res_pk, is_care_date), exists().where(*overlap))


def _range(call: Invocation, name: str, side: int) -> int | None:
    value = call.one(name)
    return None if value is None else _range_of(name, value)[side]


def _range_of(name: str, value: str) -> tuple[int, int]:
    span = search_date(value)
    if span is None:
        raise bad_input(name, f"{name}={value} is not a date this server can compare.")
    return span


def _types(values: list[str]) -> list[str]:
    types = [t.strip() for value in values for t in value.split(",") if t.strip()]
    unknown = [t for t in types if t not in definitions.resource_types()]
    if unknown:
        raise bad_input("_type", f"_type names unknown resource types: {', '.join(unknown)}.")
    return types


def _bundle(call: Invocation, versions: list[Version], total: int, next_cursor: str | None) -> dict[str, Any]:
    params = [(name, text_value(value)) for name, values in call.inputs.items() for value in values]
    url = f"{call.base}/{call.path}"

    def link(relation: str, cursor: str | None) -> dict[str, str]:
        query = urlencode([*params, *([("_cursor", cursor)] if cursor else [])])
        return {"relation": relation, "url": url + (f"?{query}" if query else "")}

    links = [link("self", call.cursor), link("first", None)]
    if next_cursor:
        links.append(link("next", next_cursor))
    entries = [
        {
            "fullUrl": f"{call.base}/{version.res_type}/{version.res_id}",
            "resource": version.resource(),
            "search": {"mode": "include" if version.res_type in REFERENCED_TYPES else "match"},
        }
        for version in versions
    ]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links}
    if entries:
        bundle["entry"] = entries
    return bundle


OPERATION = Operation(DECLARATION, everything, paged=True)
