"""The SQL condition decides as the pure consent rules (:func:`~fhir_server.access.consent.permits`) for random
consents: nested provisions, denials of an institution, periods, purposes, classes, labels and codes, recorded on
any of the records the master patient index links to one person, and resources about more than one resident."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, insert, select

from fhir_server.access import Access, acting_as
from fhir_server.access.codes import CONSENT_CATEGORY_SYSTEM, REGIONAL_SHARING, RESOURCE_TYPES_SYSTEM
from fhir_server.access.consent import Grant, Read, grants_of, permits
from fhir_server.auth.principal import Principal
from fhir_server.service import FhirService
from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import mpi_records, resources

OWNER, B, C = "Organization/owner", "Organization/b", "Organization/c"
PSY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}
ICD = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
ROLE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]}
PERIODS = [
    {"start": "2019-01-01", "end": "2020-12-31"},  # over
    {"start": "2020-01-01"},  # running
    {"start": "2099-01-01"},  # not yet
    {"end": "2099-12-31"},  # running, with an end
]
SEEDS = (1, 2, 3)
READERS = [(B, None), (B, "TREAT"), (C, None), (C, "ETREAT")]


@dataclass(frozen=True)
class Stored:
    """One resource as the rules see it: who owns it, the residents it is about, its labels and codes."""

    res_type: str
    res_id: str
    owner: str
    residents: tuple[str, ...]
    labels: frozenset = frozenset()
    codes: frozenset = frozenset()


def random_provision(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    provision: dict[str, Any] = {}
    if depth == 0 or rng.random() < 0.8:
        provision["type"] = rng.choice(("permit", "deny"))
    if rng.random() < 0.35:
        orgs = rng.sample((B, C, "Organization/elsewhere"), rng.randint(1, 2))
        provision["actor"] = [{"role": ROLE, "reference": {"reference": org}} for org in orgs]
    if rng.random() < 0.3:
        types = rng.sample(("Observation", "Condition", "Patient", "Consent"), rng.randint(1, 2))
        provision["class"] = [{"system": RESOURCE_TYPES_SYSTEM, "code": t} for t in types]
    if rng.random() < 0.2:
        provision["securityLabel"] = [PSY]
    if rng.random() < 0.2:
        code = rng.choice(((ICD, "F20"), (LOINC, "8867-4"), (None, "F20")))
        coding = {"code": code[1]} if code[0] is None else {"system": code[0], "code": code[1]}
        provision["code"] = [{"coding": [coding]}]
    if rng.random() < 0.25:
        provision["purpose"] = [{"code": p} for p in rng.sample(("TREAT", "ETREAT", "HRESCH"), rng.randint(1, 2))]
    if rng.random() < 0.25:
        provision["period"] = rng.choice(PERIODS)
    if depth < 3 and rng.random() < 0.6:
        provision["provision"] = [random_provision(rng, depth + 1) for _ in range(rng.randint(1, 2))]
    return provision


def consent(patient: str, rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active" if rng.random() < 0.9 else "inactive",
        "scope": {"text": "privacy"},
        "category": [{"coding": [{"system": CONSENT_CATEGORY_SYSTEM, "code": REGIONAL_SHARING}]}],
        "patient": {"reference": f"Patient/{patient}"},
    }
    if rng.random() < 0.85:
        body["provision"] = random_provision(rng)
    return body


def observation(res_id: str, subject: str, performer: str | None, psy: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": res_id,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{subject}"},
    }
    if performer is not None:
        body["performer"] = [{"reference": f"Patient/{performer}"}]
    if psy:
        body["meta"] = {"security": [PSY]}
    return body


class World:
    """Random persons: one unlinked record, or a golden and the records the index links to it."""

    def __init__(self, conn: Connection, seed: int) -> None:
        self.rng = rng = random.Random(seed)
        self.conn = conn
        self.service = FhirService()
        self.stored: list[Stored] = []
        self.records: dict[str, list[str]] = {}  # every record id → the person's records
        self.grants: dict[str, list[Grant]] = {}  # record id → the rules of Consents on it
        persons = []
        for number in range(12):
            if rng.random() < 0.3:
                ids = [f"s{seed}-p{number}"]
            else:
                golden = f"s{seed}-g{number}"
                sources = [f"s{seed}-p{number}-{k}" for k in range(rng.randint(1, 3))]
                conn.execute(
                    insert(mpi_records),
                    [
                        {
                            "source_id": source,
                            "golden_id": golden,
                            "link_kind": "auto",
                            "active": True,
                            "demographics": "{}",
                            "updated_at": 0,
                        }
                        for source in sources
                    ],
                )
                ids = [golden, *sources]
            persons.append(ids)
            for record_id in ids:
                self.records[record_id] = ids
        for ids in persons:
            for record_id in ids:
                owner = rng.choice((OWNER, OWNER, B))
                self.write(owner, {"resourceType": "Patient", "id": record_id}, (record_id,))
            for record_id in ids[1:] or ids:  # an institution's records (a golden holds none)
                self.write_record(record_id, persons)
            for _ in range(rng.choice((0, 1, 1, 2))):
                self.write_consent(rng.choice(ids))

    def write(self, owner: str, body: dict[str, Any], residents: tuple[str, ...], **seen: frozenset) -> None:
        with acting_as(Principal(client_id=f"his of {owner}", organization=owner)):
            if "id" in body:
                self.service.update(self.conn, body["resourceType"], body["id"], body)
                res_id = body["id"]
            else:
                res_id = self.service.create(self.conn, body).version.res_id
        self.stored.append(Stored(body["resourceType"], res_id, owner, residents, **seen))

    def write_record(self, record_id: str, persons: list[list[str]]) -> None:
        rng = self.rng
        owner = rng.choice((OWNER, B))
        heart_rate = frozenset({(LOINC, "8867-4")})
        for kind in ("plain", "psy", "shared"):
            performer = rng.choice(rng.choice(persons)) if kind == "shared" else None
            body = observation(f"{record_id}-{kind}", record_id, performer, psy=kind == "psy")
            labels = frozenset({(PSY["system"], PSY["code"])}) if kind == "psy" else frozenset()
            residents = (record_id,) if performer is None else (record_id, performer)
            self.write(owner, body, residents, labels=labels, codes=heart_rate)
        icd = rng.choice(("F20", "I10"))
        condition = {
            "resourceType": "Condition",
            "id": f"{record_id}-{icd.lower()}",
            "subject": {"reference": f"Patient/{record_id}"},
            "code": {"coding": [{"system": ICD, "code": icd}]},
        }
        self.write(owner, condition, (record_id,), codes=frozenset({(ICD, icd)}))

    def write_consent(self, record_id: str) -> None:
        body = consent(record_id, self.rng)
        self.write(OWNER, body, (record_id,))
        self.grants.setdefault(record_id, []).extend(grants_of(body))

    def expected(self, item: Stored, org: str, purpose: str | None, at: int) -> bool:
        if item.owner == org:
            return True
        read = Read(org=org, res_type=item.res_type, at=at, purpose=purpose, labels=item.labels, codes=item.codes)
        return all(
            permits([grant for record_id in self.records[resident] for grant in self.grants.get(record_id, [])], read)
            for resident in item.residents
        )


@pytest.fixture(scope="module")
def worlds(engine: Engine) -> list[World]:
    built = []
    with unit_of_work(engine) as conn:
        for seed in SEEDS:
            built.append(World(conn, seed))
    return built


def test_random_consents_decide_as_the_rules(engine: Engine, worlds: list[World]) -> None:
    """Every resource, every reader: the untyped condition, the typed one and the check of one read agree with
    :func:`permits` over the rules of all the records of every resident the resource is about."""
    mismatches = []
    decided = {True: 0, False: 0}
    with engine.connect() as conn:
        for org, purpose in READERS:
            access = Access(org=org, purpose=purpose)
            untyped = {
                (row.res_type, row.res_id)
                for row in conn.execute(
                    select(resources.c.res_type, resources.c.res_id).where(access.condition(resources, None))
                )
            }
            typed: set[tuple[str, str]] = set()
            for res_type in ("Patient", "Observation", "Condition", "Consent"):
                query = select(resources.c.res_id).where(
                    resources.c.res_type == res_type, access.condition(resources, res_type)
                )
                typed.update((res_type, res_id) for res_id in conn.execute(query).scalars())
            for world in worlds:
                for item in world.stored:
                    key = (item.res_type, item.res_id)
                    expected = world.expected(item, org, purpose, access.at)
                    decided[expected] += 1
                    row = conn.execute(
                        select(resources.c.res_pk, resources.c.owner_org).where(
                            resources.c.res_type == item.res_type, resources.c.res_id == item.res_id
                        )
                    ).one()
                    one_read = access.readable(conn, item.res_type, row.res_pk, row.owner_org)
                    if (key in untyped, key in typed, one_read) != (expected,) * 3:
                        mismatches.append((org, purpose, key, key in untyped, key in typed, one_read, expected))
    assert mismatches == []
    assert decided[True] > 100 and decided[False] > 100  # both decisions are exercised
