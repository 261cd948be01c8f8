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
(``orjson.Fragment``, never parsed); the audit trail gets the residents from the loaded versions, checked
once per page.
"""

from __future__ import annotations

import base64
import json
import re
from functools import cache
from typing import Any
from urllib.parse import urlencode

import orjson
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Connection,
    Select,
    Text,
    and_,
    any_,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    union,
)

from fhir_server import definitions
from fhir_server.audit.collector import _PLAIN_PATIENT_REFERENCE, AccessCollector
from fhir_server.operations.base import Invocation, Operation
from fhir_server.operations.inputs import bad_input, text_value
from fhir_server.repository import Version
from fhir_server.search.values import search_date
from fhir_server.storage.codec import decode_body
from fhir_server.storage.tables import (
    date_index,
    reference_index,
    resource_versions,
    resources,
    search_param_ids,
)

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
        where.append(restrict(resources, None))  # (PostgreSQL sessions run without JIT: storage.engine)
    types = _types(call.all("_type"))
    if types:
        where.append(r.res_type.in_(types))
    since = call.one("_since")
    if since is not None:
        where.append(r.ts >= _range_of("_since", since)[0])
    if call.res_id is not None:
        # A later page needs only the keys after its start; a cursor without the total counts those before.
        from_key = after if known_total is not None else 0
        in_record = _among(conn, r.res_pk, record_keys(conn, call.res_id, start, end, from_key))
    else:
        in_record = r.res_pk.in_(select(record(None, start, end).c.res_pk))
    keys = select(r.res_pk).where(in_record, *where).order_by(r.res_pk)
    if known_total is None and call.res_id is not None:  # the record's keys once: the total is their number
        rest = conn.execute(keys.where(r.res_pk > after)).scalars().all()
        total = len(rest) + _before(conn, keys, after)
    else:
        rest = conn.execute(keys.where(r.res_pk > after).limit(count + 1)).scalars().all()
        total = known_total if known_total is not None else _count(conn, keys)
    page = rest[: count + 1]
    more = len(page) > count
    stored = _stored(conn, page[:count])
    return _bundle(call, stored, total, _cursor(page[count - 1], total) if more else None)


def _stored(conn: Connection, pks: list[int]) -> list[tuple[Any, ...]]:
    """The current versions of a page's resources in key order, as tuples of :class:`Version`'s fields with the
    canonical JSON: one statement, the keys bound as one parameter; a resource deleted since its key was read
    (PostgreSQL, read committed) is left out."""
    if not pks:
        return []
    r, v = resources.c, resource_versions.c
    rows = conn.execute(
        select(r.res_type, r.res_id, r.version, v.ts, v.method, v.body, r.res_pk)
        .join_from(resources, resource_versions, and_(v.res_pk == r.res_pk, v.version == r.version))
        .where(_among(conn, r.res_pk, pks), r.deleted.is_(False))
        .order_by(r.res_pk)
    ).all()
    return [(*row[:5], decode_body(row[5]), row[6]) for row in rows if row[5] is not None]


def record_keys(conn: Connection, patient_id: str, start: int | None, end: int | None, after: int = 0) -> list[int]:
    """``res_pk`` of one patient's record above ``after`` (a later page's start): the patient and its compartment
    (``ix_reference_target``), then what the whole record refers to among :data:`REFERENCED_TYPES`, read from
    its own reference rows (``ix_reference_res``), never from every reference to those types in the archive."""
    r = resources.c
    patient = select(r.res_pk).where(r.res_type == "Patient", r.res_id == patient_id, r.deleted.is_(False))
    link = reference_index.alias("link")
    named = search_param_ids.c
    member_of = select(named.param_id).where(
        _among(conn, named.res_type + "." + named.param, _compartment_params(), Text())
    )
    links = select(link.c.res_pk).where(
        link.c.target_type == "Patient", link.c.target_id == patient_id, link.c.param_id.in_(member_of)
    )
    if start is not None or end is not None:
        links = links.where(_care_in_range(link.c.res_pk, start, end))
    sources = set(conn.execute(patient).scalars().all())
    sources.update(conn.execute(links).scalars().all())
    if not sources:
        return []
    out = reference_index.c
    targets: dict[str, set[str]] = {}
    # Distinct targets only: the rows stay in the database. The type is filtered here, not in SQL: with a
    # `target_type IN (…)` term SQLite plans through ix_reference_target, every reference to those types.
    for target_type, target_id in conn.execute(
        select(out.target_type, out.target_id).distinct().where(_among(conn, out.res_pk, sorted(sources)))
    ).all():
        if target_type in REFERENCED_TYPES:
            targets.setdefault(target_type, set()).add(target_id)
    sources = {key for key in sources if key > after}
    if not targets:
        return sorted(sources)
    referenced = select(r.res_pk).where(
        or_(*(and_(r.res_type == t, r.res_id.in_(sorted(ids))) for t, ids in sorted(targets.items()))),
        r.deleted.is_(False),
        r.res_pk > after,
    )
    return sorted(sources.union(conn.execute(referenced).scalars().all()))


@cache
def _compartment_params() -> list[str]:
    """``Type.param`` of each search parameter that makes a resource of its type a member of the Patient
    compartment."""
    return sorted(f"{t}.{param}" for t, params in definitions.compartment("Patient").items() for param in params)


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


def _among(conn: Connection, column: Any, values: list[Any], element: Any = None) -> Any:
    """``column`` is one of ``values``: integers, or codes of type ``element`` (no quote, no backslash). They are
    bound as one text parameter, so the statement stays small and cacheable whatever the record's size: a JSON
    array read by ``json_each`` on SQLite; on PostgreSQL an array literal, parsed by the server (the driver would
    dump a list element by element), compared with ``= ANY``, which probes an index."""
    if conn.dialect.name == "postgresql":
        listed = ",".join(f'"{v}"' for v in values) if element is not None else ",".join(map(str, values))
        return column == any_(cast(literal("{" + listed + "}"), ARRAY(BigInteger() if element is None else element)))
    each = func.json_each(literal(json.dumps(values))).table_valued("value")
    return column.in_(select(each.c.value))


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


def _bundle(call: Invocation, stored: list[tuple[Any, ...]], total: int, next_cursor: str | None) -> dict[str, Any]:
    params = [(name, text_value(value)) for name, values in call.inputs.items() for value in values]
    url = f"{call.base}/{call.path}"

    def link(relation: str, cursor: str | None) -> dict[str, str]:
        query = urlencode([*params, *([("_cursor", cursor)] if cursor else [])])
        return {"relation": relation, "url": url + (f"?{query}" if query else "")}

    links = [link("self", call.cursor), link("first", None)]
    if next_cursor:
        links.append(link("next", next_cursor))
    if call.stored_json and call.audit is not None:
        _note_residents(call.audit, stored)
    match, include = {"mode": "match"}, {"mode": "include"}
    base = call.base
    entries = [
        {
            "fullUrl": f"{base}/{res_type}/{res_id}",
            "resource": orjson.Fragment(body) if call.stored_json else orjson.loads(body),
            "search": include if res_type in REFERENCED_TYPES else match,
        }
        for res_type, res_id, _, _, _, body, _ in stored
    ]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links}
    if entries:
        bundle["entry"] = entries
    return bundle


def _note_residents(audit: AccessCollector, stored: list[tuple[Any, ...]]) -> None:
    """The residents of a page answered as stored JSON, for the audit trail: what :meth:`AccessCollector.stored`
    notes entry by entry, in the same order, with one look at the whole page. When every mention of a resident in
    the page is a plain ``"Patient/{id}"``, the entries after the point where each of those is noted add nothing
    but the page's Patients themselves."""
    others = b"\n".join(row[5] for row in stored if row[0] != "Patient")
    named = _PLAIN_PATIENT_REFERENCE.findall(others)
    plain = others.count(b"Patient/") == len(named)
    residents = {n.decode() for n in named}
    done = 0
    for row in stored:
        if plain and audit.patients.keys() >= residents:
            break
        audit.stored(Version(*row))
        done += 1
    for row in stored[done:]:
        if row[0] == "Patient":
            audit.patients[f"Patient/{row[1]}"] = None


OPERATION = Operation(DECLARATION, everything, paged=True)
