"""``Patient/$everything`` (R4B patient-operation-everything): a patient's record, paged.

The record is the patient, the members of the official Patient compartment (through the search parameters of
the CompartmentDefinition, read from the reference index) and what those resources refer to, one level out,
among :data:`REFERENCED_TYPES`. References are followed where a search parameter indexes them. At type level
it is every patient's record. ``start``/``end`` keep compartment resources whose care date (:func:`care_date`)
overlaps the range, and those without one; ``_since`` and ``_type`` filter what is returned. Pages are cut by
keyset on the resource's storage key: however long the paging takes and whatever is updated meanwhile, no
resource comes twice and none present throughout is missed. For one patient the record's keys are read once
per request, starting from the patient's own reference rows (:func:`record_keys`); the first page counts them
and its cursor carries that total to the later pages, so a page evaluates the record once and never counts
again. At type level the record of every patient is one statement (:func:`record`), counted on the first page:
an export-sized job on a large archive. Through the REST API the entries are the stored canonical JSON
(``orjson.Fragment``, never parsed); the audit trail gets the residents from the loaded versions.
"""

from __future__ import annotations

import base64
import json
import re
from functools import cache
from typing import Any
from urllib.parse import urlencode

import orjson
from sqlalchemy import ARRAY, BigInteger, Connection, Select, and_, case, exists, func, literal, or_, select, union

from fhir_server import definitions
from fhir_server.operations.base import Invocation, Operation
from fhir_server.operations.inputs import bad_input, text_value
from fhir_server.repository import Version
from fhir_server.search.values import search_date
from fhir_server.storage.tables import date_index, reference_index, resources, search_param_ids

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
    after, known_total = _read_cursor(call.cursor) if call.cursor else (0, None)
    start, end = _range(call, "start", 0), _range(call, "end", 1)
    r = resources.c
    where = [r.deleted.is_(False)]
    restrict = call.access.restriction
    if restrict is not None:  # what the caller may read of the record, in the SQL: totals and pages exact
        where.append(restrict(resources, None))
    types = _types(call.all("_type"))
    if types:
        where.append(r.res_type.in_(types))
    since = call.one("_since")
    if since is not None:
        where.append(r.ts >= _range_of("_since", since)[0])
    if call.res_id is not None:
        members = _pk_set(conn, record_keys(conn, call.res_id, start, end))
    else:
        members = select(record(None, start, end).c.res_pk)
    keys = select(r.res_pk).where(r.res_pk.in_(members), *where).order_by(r.res_pk)
    if known_total is None and call.res_id is not None:  # the record's keys once: the total is their number
        rest = list(conn.execute(keys.where(r.res_pk > after)).scalars())
        total = len(rest) + _before(conn, keys, after)
    else:
        rest = list(conn.execute(keys.where(r.res_pk > after).limit(count + 1)).scalars())
        total = known_total if known_total is not None else _count(conn, keys)
    page = rest[: count + 1]
    more = len(page) > count
    versions = call.service.repository.load_many(conn, page[:count])
    return _bundle(call, versions, total, _cursor(page[count - 1], total) if more else None)


def record_keys(conn: Connection, patient_id: str, start: int | None, end: int | None) -> list[int]:
    """``res_pk`` of one patient's record: the patient and its compartment (``ix_reference_target``), then what
    those resources refer to among :data:`REFERENCED_TYPES`, read from their own reference rows
    (``ix_reference_res``), never from every reference to those types in the archive."""
    r = resources.c
    patient = select(r.res_pk).where(r.res_type == "Patient", r.res_id == patient_id, r.deleted.is_(False))
    link = reference_index.alias("link")
    named = search_param_ids.c
    links = (
        select(link.c.res_pk, named.res_type, named.param)
        .join_from(link, search_param_ids, named.param_id == link.c.param_id)
        .where(link.c.target_type == "Patient", link.c.target_id == patient_id)
    )
    if start is not None or end is not None:
        links = links.where(_care_in_range(link.c.res_pk, start, end))
    members = _compartment_params()
    sources = set(conn.execute(patient).scalars())
    sources.update(pk for pk, res_type, param in conn.execute(links) if param in members.get(res_type, ()))
    if not sources:
        return []
    out = reference_index.c
    targets: dict[str, set[str]] = {}
    # Distinct targets only: the rows stay in the database. The type is filtered here, not in SQL: with a
    # `target_type IN (…)` term SQLite plans through ix_reference_target, every reference to those types.
    for target_type, target_id in conn.execute(
        select(out.target_type, out.target_id).distinct().where(out.res_pk.in_(_pk_set(conn, sorted(sources))))
    ):
        if target_type in REFERENCED_TYPES:
            targets.setdefault(target_type, set()).add(target_id)
    if not targets:
        return sorted(sources)
    referenced = select(r.res_pk).where(
        or_(*(and_(r.res_type == t, r.res_id.in_(sorted(ids))) for t, ids in sorted(targets.items()))),
        r.deleted.is_(False),
    )
    return sorted(sources.union(conn.execute(referenced).scalars()))


@cache
def _compartment_params() -> dict[str, frozenset[str]]:
    """The search parameters that make a resource of each type a member of the Patient compartment."""
    return {t: frozenset(params) for t, params in definitions.compartment("Patient").items()}


def compartment(patient_id: str | None, start: int | None, end: int | None) -> Select:
    """``res_pk`` of the members of a patient's compartment (of every patient's when ``patient_id`` is None)."""
    link = reference_index.alias("link")
    if patient_id is not None:
        target = link.c.target_id == patient_id
    else:
        p = resources.alias("patient")
        target = link.c.target_id.in_(select(p.c.res_id).where(p.c.res_type == "Patient", p.c.deleted.is_(False)))
    named = search_param_ids.c
    member_of = link.c.param_id.in_(
        select(named.param_id).where(
            or_(
                *(
                    and_(named.res_type == t, named.param.in_(params))
                    for t, params in definitions.compartment("Patient").items()
                )
            )
        )
    )
    query = select(link.c.res_pk).where(link.c.target_type == "Patient", target, member_of)
    if start is not None or end is not None:
        query = query.where(_care_in_range(link.c.res_pk, start, end))
    return query


def record(patient_id: str | None, start: int | None, end: int | None) -> Any:
    """``SELECT res_pk`` of the record of one patient (or of every patient): patient, compartment, referenced."""
    r = resources.alias("patient")
    patients = select(r.c.res_pk).where(r.c.res_type == "Patient", r.c.deleted.is_(False))
    if patient_id is not None:
        patients = patients.where(r.c.res_id == patient_id)
    sources = union(patients, compartment(patient_id, start, end)).subquery("sources")
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


def _pk_set(conn: Connection, pks: list[int]) -> Any:
    """A list of keys as one bound parameter (a JSON array on SQLite, a bigint array on PostgreSQL): the
    statement stays small and cacheable whatever the record's size."""
    if conn.dialect.name == "postgresql":
        return select(func.unnest(literal(pks, ARRAY(BigInteger))))
    each = func.json_each(literal(json.dumps(pks))).table_valued("value")
    return select(each.c.value)


def _count(conn: Connection, keys: Select) -> int:
    return conn.execute(select(func.count()).select_from(keys.order_by(None).subquery())).scalar_one()


def _before(conn: Connection, keys: Select, after: int) -> int:
    """How many of the record's keys a page started after ``after`` has left behind (0 on the first page)."""
    if after == 0:
        return 0
    return _count(conn, keys.where(resources.c.res_pk <= after))


def _cursor(last_pk: int, total: int) -> str:
    """The next page's ``_cursor``: where it starts and the record's total, counted once for all its pages."""
    return base64.urlsafe_b64encode(f"everything.{last_pk}.{total}".encode()).decode().rstrip("=")


def _read_cursor(token: str) -> tuple[int, int | None]:
    """(last key, total) of a :func:`_cursor`; a bare position (``everything.N``) has the total recounted."""
    try:
        kind, _, value = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().partition(".")
    except (ValueError, UnicodeDecodeError):
        kind, value = "", ""
    if kind == "everything" and re.fullmatch(r"\d+(\.\d+)?", value):
        after, _, total = value.partition(".")
        return int(after), int(total) if total else None
    raise bad_input("_cursor", "The paging cursor is not one this server issued; start again from the first page.")


def _care_in_range(res_pk: Any, start: int | None, end: int | None) -> Any:
    """No care date, or one overlapping [start, end]."""
    d = date_index.alias("care")
    named = search_param_ids.c
    care_dates = select(named.param_id).where(named.param == case(_CARE_DATES, value=named.res_type, else_="date"))
    is_care_date = (d.c.param_id + 0).in_(care_dates)  # probed by res_pk, not by a (param_id, high) range
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
    if call.stored_json and call.audit is not None:
        for version in versions:
            call.audit.stored(version)
    entries = [
        {
            "fullUrl": f"{call.base}/{version.res_type}/{version.res_id}",
            "resource": orjson.Fragment(version.body) if call.stored_json else version.resource(),
            "search": {"mode": "include" if version.res_type in REFERENCED_TYPES else "match"},
        }
        for version in versions
        if version.body is not None  # deleted since the keys were read (PostgreSQL, read committed)
    ]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links}
    if entries:
        bundle["entry"] = entries
    return bundle


OPERATION = Operation(DECLARATION, everything, paged=True)
