"""The SQL filter decides exactly as the pure consent rules, for many consents, readers, purposes and resources."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from sqlalchemy import Engine, select

from fhir_server.access import Access, acting_as
from fhir_server.access.codes import CONSENT_CATEGORY_SYSTEM, REGIONAL_SHARING, RESOURCE_TYPES_SYSTEM
from fhir_server.access.consent import Read, grants_of, permits
from fhir_server.auth.principal import Principal
from fhir_server.search.predicates import table_alias
from fhir_server.service import FhirService
from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import resources

OWNER, B, C = "Organization/owner", "Organization/b", "Organization/c"
PSY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}
ICD = "http://hl7.org/fhir/sid/icd-10"
ROLE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]}


def actor(org: str) -> dict[str, Any]:
    return {"role": ROLE, "reference": {"reference": org}}


PROVISIONS: list[dict[str, Any] | None] = [
    None,
    {"type": "deny"},
    {"type": "permit", "actor": [actor(B)]},
    {"type": "deny", "actor": [actor(B)]},
    {"type": "permit", "purpose": [{"code": "TREAT"}]},
    {"type": "permit", "period": {"start": "2020-01-01", "end": "2021-12-31"}},
    {"type": "permit", "period": {"start": "2020-01-01"}},
    {
        "type": "permit",
        "provision": [{"type": "deny", "class": [{"system": RESOURCE_TYPES_SYSTEM, "code": "Condition"}]}],
    },
    {"type": "permit", "provision": [{"type": "deny", "securityLabel": [PSY]}]},
    {"type": "permit", "provision": [{"type": "deny", "code": [{"coding": [{"system": ICD, "code": "F20"}]}]}]},
    {"type": "deny", "provision": [{"type": "permit", "actor": [actor(C)], "purpose": [{"code": "TREAT"}]}]},
    {
        "type": "permit",
        "provision": [
            {"type": "deny", "actor": [actor(B)], "class": [{"system": RESOURCE_TYPES_SYSTEM, "code": "Observation"}]}
        ],
    },
]
"""One resident per consent (None: no provision); one resident without any Consent."""


def consent(patient: str, provision: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"text": "privacy"},
        "category": [{"coding": [{"system": CONSENT_CATEGORY_SYSTEM, "code": REGIONAL_SHARING}]}],
        "patient": {"reference": f"Patient/{patient}"},
    }
    if provision is not None:
        body["provision"] = provision
    return body


def record(patient: str) -> list[tuple[dict[str, Any], frozenset, frozenset]]:
    """The resident's resources with their labels and codes (as the rules see them)."""
    subject = {"reference": f"Patient/{patient}"}
    code = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}
    return [
        ({"resourceType": "Patient", "id": patient}, frozenset(), frozenset()),
        (
            {
                "resourceType": "Observation",
                "id": f"{patient}-obs",
                "status": "final",
                "code": code,
                "subject": subject,
            },
            frozenset(),
            frozenset({("http://loinc.org", "8867-4")}),
        ),
        (
            {
                "resourceType": "Observation",
                "id": f"{patient}-psy",
                "status": "final",
                "code": code,
                "subject": subject,
                "meta": {"security": [PSY]},
            },
            frozenset({(PSY["system"], "PSY")}),
            frozenset({("http://loinc.org", "8867-4")}),
        ),
        *(
            (
                {
                    "resourceType": "Condition",
                    "id": f"{patient}-{icd.lower()}",
                    "subject": subject,
                    "code": {"coding": [{"system": ICD, "code": icd}]},
                },
                frozenset(),
                frozenset({(ICD, icd)}),
            )
            for icd in ("F20", "I10")
        ),
    ]


@pytest.fixture(scope="module")
def stored(engine: Engine) -> list[tuple[dict[str, Any] | None, str, frozenset, frozenset, dict | None]]:
    service = FhirService()
    rows = []
    with acting_as(Principal(client_id="his", organization=OWNER)), unit_of_work(engine) as conn:
        for number, provision in enumerate([*PROVISIONS, "none"]):
            patient = f"resident-{number}"
            body = None if provision == "none" else consent(patient, provision)  # type: ignore[arg-type]
            for resource, labels, codes in record(patient):
                service.update(conn, resource["resourceType"], resource["id"], resource)
                rows.append((body, f"{resource['resourceType']}/{resource['id']}", labels, codes, resource))
            if body is not None:
                service.create(conn, body)
    return rows  # type: ignore[return-value]


def test_sql_and_rules_agree(engine: Engine, stored: list) -> None:
    mismatches = []
    outcomes = {True: 0, False: 0}
    with engine.connect() as conn:
        for (body, ref, labels, codes, _), org, purpose in itertools.product(stored, (B, C, OWNER), (None, "TREAT")):
            access = Access(org=org, purpose=purpose)
            res_type, res_id = ref.split("/")
            query = select(resources.c.res_id).where(
                resources.c.res_type == res_type,
                resources.c.res_id == res_id,
                access.condition(resources, res_type),
            )
            seen = conn.execute(query).first() is not None
            read = Read(org=org, res_type=res_type, at=access.at, purpose=purpose, labels=labels, codes=codes)
            expected = org == OWNER or (body is not None and permits(grants_of(body), read))
            outcomes[expected] += 1
            if seen != expected:
                mismatches.append((ref, org, purpose, seen, expected))
    assert mismatches == []
    assert outcomes[True] > 50 and outcomes[False] > 50  # both decisions are exercised


def test_untyped_condition_agrees_with_typed(engine: Engine, stored: list) -> None:
    """System-level queries (type unknown) decide as type-level ones."""
    for org in (B, C):
        access = Access(org=org)
        with engine.connect() as conn:
            refs = [ref for _, ref, *_ in stored]
            untyped = {
                f"{row.res_type}/{row.res_id}"
                for row in conn.execute(
                    select(resources.c.res_type, resources.c.res_id).where(access.condition(resources, None))
                )
            }
            typed = set()
            for ref in refs:
                res_type, res_id = ref.split("/")
                query = select(resources.c.res_id).where(
                    resources.c.res_type == res_type,
                    resources.c.res_id == res_id,
                    access.condition(resources, res_type),
                )
                if conn.execute(query).first() is not None:
                    typed.add(ref)
        assert {ref for ref in untyped if ref in refs} == typed


def test_a_residents_own_app_reads_that_record_only(engine: Engine, stored: list) -> None:
    access = Access(org=None, patient="resident-1")  # resident-1's consent shares nothing
    with engine.connect() as conn:
        query = select(resources.c.res_type, resources.c.res_id).where(access.condition(resources, None))
        seen = {f"{row.res_type}/{row.res_id}" for row in conn.execute(query)}
    own = {
        ref for _, ref, *_ in stored if ref.split("/")[1] == "resident-1" or ref.split("/")[1].startswith("resident-1-")
    }
    assert own <= seen
    assert not {ref for _, ref, *_ in stored if ref not in own} & seen


def test_access_survives_a_background_job() -> None:
    saved = Access(org="Organization/b", purpose="TREAT").to_json()
    restored = Access.from_json(saved)
    assert (restored.org, restored.purpose, restored.restricted) == ("Organization/b", "TREAT", True)
    assert Access.from_json(Access(org=None, restricted=False).to_json()).restriction is None


def test_one_cached_statement_answers_each_caller_by_its_own_values(engine: Engine, stored: list) -> None:
    """The condition's SQL is compiled once per shape and reused; only the caller's values differ."""
    shared_with_b = "resident-2-obs"  # resident-2 consents to sharing with B only
    seen = []
    with engine.connect() as conn:
        for org in (B, C, OWNER, C, B):
            query = select(resources.c.res_id).where(
                resources.c.res_type == "Observation",
                resources.c.res_id == shared_with_b,
                Access(org=org).condition(resources, "Observation"),
            )
            seen.append(conn.execute(query).first() is not None)
    assert seen == [True, False, True, False, True]


def test_the_condition_on_an_alias_decides_as_on_the_table(engine: Engine, stored: list) -> None:
    """Chains, ``_has`` and ``_include`` put the condition on an alias of ``resources``."""
    other = table_alias(resources, 1)
    for org in (B, C):
        access = Access(org=org)
        with engine.connect() as conn:
            on_table = set(conn.execute(select(resources.c.res_pk).where(access.condition(resources, None))).scalars())
            on_alias = set(conn.execute(select(other.c.res_pk).where(access.condition(other, None))).scalars())
        assert on_alias == on_table
        assert on_table  # the caller sees something, and not everything
        with engine.connect() as conn:
            assert len(on_table) < len(conn.execute(select(resources.c.res_pk)).all())


READERS = [
    Access(org=B),
    Access(org=C, purpose="TREAT"),
    Access(org=OWNER),
    Access(org=None),
    Access(org=None, patient="resident-1"),
    Access(org=B, patient="resident-2"),
    Access(org=B, break_glass=True),
    Access(org=None, restricted=False),
]


@pytest.mark.parametrize("access", READERS, ids=lambda a: f"{a.org}-{a.patient}-{a.purpose}-{a.break_glass}")
def test_the_check_of_one_read_decides_as_the_condition(engine: Engine, stored: list, access: Access) -> None:
    """A read by id asks :meth:`Access.readable` about the row it found: the same decision as the condition."""
    decided = {True: 0, False: 0}
    with engine.connect() as conn:
        rows = conn.execute(select(resources.c.res_pk, resources.c.res_type, resources.c.owner_org)).all()
        for row in rows:
            condition = access.restriction
            expected = (
                condition is None
                or conn.execute(
                    select(resources.c.res_pk).where(
                        resources.c.res_pk == row.res_pk, condition(resources, row.res_type)
                    )
                ).first()
                is not None
            )
            assert access.readable(conn, row.res_type, row.res_pk, row.owner_org) == expected, row
            decided[expected] += 1
    if access.org is not None:  # an institution reads its own records or consented ones
        assert decided[True] > 0


def test_the_check_of_one_read_hides_deleted_resources_from_others(engine: Engine, stored: list) -> None:
    service = FhirService()
    with acting_as(Principal(client_id="his", organization=OWNER)), unit_of_work(engine) as conn:
        service.update(conn, "Basic", "gone-soon", {"resourceType": "Basic", "id": "gone-soon", "code": {"text": "n"}})
        service.delete(conn, "Basic", "gone-soon")
    with engine.connect() as conn:
        row = conn.execute(
            select(resources.c.res_pk, resources.c.owner_org).where(resources.c.res_id == "gone-soon")
        ).one()
        assert Access(org=OWNER).readable(conn, "Basic", row.res_pk, row.owner_org)
        assert not Access(org=B).readable(conn, "Basic", row.res_pk, row.owner_org)
