"""``Observation/$lastn`` (R4B observation-operation-lastn): the latest ``max`` observations of each code.

The observations are those a search with the same parameters finds (``patient``, ``subject``, ``category``,
``code``, ``date`` and every other Observation search parameter, checked like a search). They are grouped
by subject and by coding of ``Observation.code`` (an observation with several codings counts in each of
their groups, once in the answer); within a group the most recent ``effective[x]`` comes first, observations
without one last. Observations whose code has no coding belong to no group. The answer is one searchset
Bundle; more than ``HIE_MAX_PAGE_SIZE`` observations is a 413 asking to narrow the search.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection, and_, func, select

from fhir_server.errors import FhirError
from fhir_server.operations.base import Invocation, Operation
from fhir_server.operations.inputs import bad_input
from fhir_server.search.custom import sync_custom_parameters
from fhir_server.search.param_ids import lookup
from fhir_server.search.query import filtered
from fhir_server.search.request import RESULT_PARAMETERS, parse_request
from fhir_server.storage.tables import date_index, reference_index, token_index

DECLARATION: dict[str, Any] = {
    "id": "Observation-lastn",
    "name": "LastN",
    "title": "Last N observations of each code",
    "code": "lastn",
    "resource": ["Observation"],
    "system": False,
    "type": True,
    "instance": False,
    "affectsState": False,
    "base": "http://hl7.org/fhir/OperationDefinition/Observation-lastn",
    "description": (
        "The most recent max observations of each code and subject among those a search with the other "
        "parameters (any Observation search parameter) finds."
    ),
    "parameter": [
        {
            "name": "max",
            "use": "in",
            "min": 0,
            "max": "1",
            "type": "positiveInt",
            "documentation": "How many observations of each code (default 1).",
        },
        {"name": "return", "use": "out", "min": 1, "max": "1", "type": "Bundle"},
    ],
}


def lastn(call: Invocation, conn: Connection) -> dict[str, Any]:
    limit = call.one("max", 1)
    for name, _ in call.search:
        if name.split(":", 1)[0] in RESULT_PARAMETERS:
            raise bad_input(name, f"$lastn takes search criteria and max, not the result parameter '{name}'.")
    registry = call.service.registry
    sync_custom_parameters(conn, registry)
    request = parse_request(registry, ("Observation",), call.search, base_url=call.base)
    matching = filtered(conn, request, restrict=call.access.restriction).subquery("matching")
    code = token_index.alias("code")
    subject = reference_index.alias("subject")
    when = date_index.alias("effective")
    effective = (
        select(when.c.res_pk, func.max(when.c.high).label("high"))
        .where(when.c.param_id == lookup(conn, "Observation", "date"))
        .group_by(when.c.res_pk)
        .subquery("latest")
    )
    subject_key = func.coalesce(subject.c.target_type + "/" + subject.c.target_id, subject.c.url, "")
    rank = (
        func.row_number()
        .over(
            partition_by=(subject_key, code.c.system, code.c.code),
            order_by=(effective.c.high.desc().nulls_last(), matching.c.res_pk.desc()),
        )
        .label("rank")
    )
    ranked = (
        select(matching.c.res_pk, subject_key.label("subject"), code.c.system, code.c.code, rank)
        .select_from(
            matching.join(
                code, and_(code.c.res_pk == matching.c.res_pk, code.c.param_id == lookup(conn, "Observation", "code"))
            )
            .outerjoin(
                subject,
                and_(
                    subject.c.res_pk == matching.c.res_pk,
                    subject.c.param_id == lookup(conn, "Observation", "subject"),
                ),
            )
            .outerjoin(effective, effective.c.res_pk == matching.c.res_pk)
        )
        .where(code.c.code.is_not(None))
        .subquery("ranked")
    )
    rows = conn.execute(
        select(ranked.c.res_pk)
        .where(ranked.c.rank <= limit)
        .order_by(ranked.c.subject, ranked.c.system, ranked.c.code, ranked.c.rank)
    ).scalars()
    pks = list(dict.fromkeys(rows))
    bound = call.settings.max_page_size
    if len(pks) > bound:
        raise FhirError(
            "too-costly", f"$lastn finds {len(pks)} observations, more than {bound}; narrow it (patient, category)."
        )
    versions = call.service.repository.load_many(conn, pks)
    query = urlencode([*call.search, *([("max", str(limit))] if call.inputs.get("max") else [])])
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(versions),
        "link": [{"relation": "self", "url": f"{call.base}/{call.path}" + (f"?{query}" if query else "")}],
    }
    if versions:
        bundle["entry"] = [
            {
                "fullUrl": f"{call.base}/Observation/{version.res_id}",
                "resource": version.resource(),
                "search": {"mode": "match"},
            }
            for version in versions
        ]
    return bundle


OPERATION = Operation(DECLARATION, lastn, accepts_search=True)
