"""Institutions, consent and break-glass through the REST API, with real tokens, on both backends."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest

from fhir_server.access.codes import CONSENT_CATEGORY_SYSTEM, REGIONAL_SHARING, RESOURCE_TYPES_SYSTEM
from fhir_server.subscriptions.criteria import parse_subscription
from fhir_server.subscriptions.matching import matching_ids
from tests.fhir_server.access.conftest import EMERGENCY, SUBSCRIPTION, Exchange, Institution
from tests.fhir_server.bulk.helpers import download, kickoff, wait_complete

HEART_RATE = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}
BODY_WEIGHT = {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}
TEMPERATURE = {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]}
PSY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}


def patient(res_id: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": res_id, "gender": "female", "birthDate": "1950-03-01"}


def observation(res_id: str, subject: str, code: dict[str, Any] = HEART_RATE, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": res_id,
        "status": "final",
        "code": code,
        "subject": {"reference": f"Patient/{subject}"},
        "effectiveDateTime": "2026-05-01T08:00:00+08:00",
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
        **extra,
    }


def consent(res_id: str, subject: str, provision: dict[str, Any] | None = None, status: str = "active") -> dict:
    body: dict[str, Any] = {
        "resourceType": "Consent",
        "id": res_id,
        "status": status,
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [{"coding": [{"system": CONSENT_CATEGORY_SYSTEM, "code": REGIONAL_SHARING}]}],
        "patient": {"reference": f"Patient/{subject}"},
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
    }
    if provision is not None:
        body["provision"] = provision
    return body


RECIPIENT = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]}


def deny_actor(organization: str) -> dict[str, Any]:
    actor = {"role": RECIPIENT, "reference": {"reference": organization}}
    return {"type": "permit", "provision": [{"type": "deny", "actor": [actor]}]}


class World:
    def __init__(self, exchange: Exchange) -> None:
        self.a = exchange.institution("Organization/hosp-a")
        self.b = exchange.institution("Organization/hosp-b")
        self.c = exchange.institution("Organization/hosp-c")
        self.d = exchange.institution("Organization/clinic-d")
        self.em = exchange.institution(EMERGENCY, scopes="system/*.rs")
        self.unaffiliated = exchange.institution(None, scopes="system/*.rs")
        self.exchange = exchange
        for res_id in ("r1", "r2", "r3", "r4", "r5", "r6", "r7"):
            self.a.put(patient(res_id))
        for org in (self.a, self.b, self.c):
            name = org.organization.split("-")[-1]  # type: ignore[union-attr]
            for resident in ("r1", "r2"):
                for n in (1, 2):
                    org.put(observation(f"obs-{name}-{resident}-{n}", resident))
            org.put(observation(f"weight-{name}-r3", "r3", BODY_WEIGHT))
        self.a.put(consent("consent-r1", "r1"))
        self.a.put(consent("consent-r3", "r3", deny_actor("Organization/clinic-d")))


@pytest.fixture(scope="module")
def world(exchange: Exchange) -> World:
    return World(exchange)


def pages(who: Institution, url: str, **headers: str) -> tuple[list[str], set[int | None]]:
    """Every match of a search, following next links; and the totals the pages reported."""
    seen: list[str] = []
    totals: set[int | None] = set()
    while url:
        response = who.get(url, **headers)
        assert response.status_code == 200, response.text
        bundle = response.json()
        totals.add(bundle.get("total"))
        seen += [
            f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in bundle.get("entry", [])
            if e["search"]["mode"] == "match"
        ]
        url = next((_path(link["url"]) for link in bundle["link"] if link["relation"] == "next"), "")
    return seen, totals


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def ids(bundle: dict[str, Any], mode: str | None = None) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if mode is None or e.get("search", {}).get("mode") == mode
    }


def observations(orgs: str, residents: str) -> set[str]:
    return {f"Observation/obs-{o}-{r}-{n}" for o in orgs.split() for r in residents.split() for n in (1, 2)}


# -- reads of one resource ------------------------------------------------------------------------


def test_institution_reads_what_it_owns(world: World) -> None:
    assert world.b.get("/fhir/Observation/obs-b-r2-1").status_code == 200
    assert world.a.get("/fhir/Patient/r2").status_code == 200


def test_other_institution_without_consent_gets_404_like_a_missing_resource(world: World) -> None:
    hidden = world.d.get("/fhir/Observation/obs-a-r2-1")
    missing = world.d.get("/fhir/Observation/no-such-observation")
    assert hidden.status_code == missing.status_code == 404
    assert "obs-a-r2-1 is not known to this server" in hidden.text
    assert world.d.get("/fhir/Patient/r2").status_code == 404
    assert world.d.get("/fhir/Observation/obs-a-r2-1/_history/1").status_code == 404
    assert world.d.get("/fhir/Observation/obs-a-r2-1/_history").status_code == 404


def test_consent_shares_a_resident_record(world: World) -> None:
    assert world.d.get("/fhir/Observation/obs-a-r1-1").status_code == 200
    assert world.d.get("/fhir/Patient/r1").status_code == 200
    assert world.d.get("/fhir/Observation/obs-c-r1-2/_history/1").status_code == 200


def test_a_client_of_no_institution_reads_no_resident_data(world: World) -> None:
    assert world.unaffiliated.get("/fhir/Patient/r1").status_code == 404
    assert world.unaffiliated.get("/fhir/Observation?code=8867-4").json()["total"] == 0


def test_search_without_consent_finds_nothing(world: World) -> None:
    bundle = world.d.get("/fhir/Observation?subject=Patient/r2").json()
    assert bundle["total"] == 0
    assert "entry" not in bundle


# -- search across institutions -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reader", "expected"),
    [
        ("d", observations("a b c", "r1")),
        ("a", observations("a", "r2") | observations("a b c", "r1")),
        ("b", observations("b", "r2") | observations("a b c", "r1")),
    ],
)
def test_search_spanning_institutions_pages_and_totals_are_exact(world: World, reader: str, expected: set[str]) -> None:
    who: Institution = getattr(world, reader)
    seen, totals = pages(who, "/fhir/Observation?code=http://loinc.org|8867-4&_count=2")
    assert sorted(seen) == sorted(expected)  # each once, none missing
    assert totals == {len(expected)}
    seen, totals = pages(who, "/fhir/Observation?code=8867-4&_count=2&_sort=-_lastUpdated&_total=accurate")
    assert sorted(seen) == sorted(expected)
    assert totals == {len(expected)}
    summary = who.get("/fhir/Observation?code=8867-4&_summary=count").json()
    assert summary["total"] == len(expected)


def test_system_and_compartment_search_are_filtered(world: World) -> None:
    seen, totals = pages(world.d, "/fhir?_type=Observation,Patient&_count=3")
    assert not any("-r2-" in ref or ref == "Patient/r2" for ref in seen)
    assert observations("a b c", "r1") <= set(seen)
    assert totals == {len(seen)}
    compartment = world.d.get("/fhir/Patient/r2/Observation").json()
    assert compartment["total"] == 0
    assert world.d.get("/fhir/Patient/r1/Observation").json()["total"] == 6


def test_chains_and_has_reach_only_readable_resources(world: World) -> None:
    # B's own observation, but the patient it refers to is A's and unshared: a chain may not test it
    chained = "/fhir/Observation?_id=obs-b-r2-1,obs-b-r1-1&subject:Patient.birthdate=1950-03-01"
    assert ids(world.b.get(chained).json()) == {"Observation/obs-b-r1-1"}
    # A's own patient, but the observation referring to it is B's and unshared
    has = "/fhir/Patient?_id=r2&_has:Observation:subject:_id=obs-b-r2-1"
    assert world.a.get(has).json()["total"] == 0
    assert world.a.get("/fhir/Patient?_id=r2&_has:Observation:subject:_id=obs-a-r2-1").json()["total"] == 1
    assert world.a.get("/fhir/Patient?_id=r2&_has:Observation:subject:code=8867-4").json()["total"] == 1


def test_history_is_filtered(world: World) -> None:
    url = "/fhir/Observation/_history?_count=5"
    refs: set[str] = set()
    while url:
        bundle = world.d.get(url).json()
        refs |= {e["fullUrl"].split("/fhir/", 1)[1] for e in bundle.get("entry", [])}
        url = next((_path(link["url"]) for link in bundle["link"] if link["relation"] == "next"), "")
    assert observations("a b c", "r1") <= refs
    assert not any("-r2-" in ref for ref in refs)


def test_denial_of_one_institution(world: World) -> None:
    weights = "/fhir/Observation?code=29463-7"
    assert world.d.get(weights).json()["total"] == 0
    assert world.d.get("/fhir/Patient/r3").status_code == 404
    assert world.b.get(weights).json()["total"] == 3
    assert world.d.get("/fhir/Observation/weight-a-r3").status_code == 404


def test_denial_of_a_category(world: World) -> None:
    world.a.put(
        consent(
            "consent-r4",
            "r4",
            {
                "type": "permit",
                "provision": [
                    {"type": "deny", "class": [{"system": RESOURCE_TYPES_SYSTEM, "code": "Condition"}]},
                    {"type": "deny", "securityLabel": [PSY]},
                ],
            },
        )
    )
    world.a.put(observation("plain-r4", "r4", TEMPERATURE))
    world.a.put(observation("psy-r4", "r4", TEMPERATURE, meta={"security": [PSY]}))
    world.a.put(
        {
            "resourceType": "Condition",
            "id": "cond-r4",
            "subject": {"reference": "Patient/r4"},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}]},
        }
    )
    assert world.d.get("/fhir/Observation/plain-r4").status_code == 200
    assert world.d.get("/fhir/Observation/psy-r4").status_code == 404
    assert world.d.get("/fhir/Condition/cond-r4").status_code == 404
    found = world.d.get("/fhir/Patient/r4/*?_count=100").json()
    clinical = {ref for ref in ids(found) if not ref.startswith(("Provenance/", "Patient/"))}
    assert clinical == {"Observation/plain-r4", "Consent/consent-r4"}
    goldens = [e["resource"] for e in found["entry"] if e["resource"]["resourceType"] == "Patient"]  # r4's consent
    assert all([link["other"]["reference"] for link in g["link"]] == ["Patient/r4"] for g in goldens)
    assert found["total"] == len(ids(found))
    assert world.a.get("/fhir/Patient/r4/Condition").json()["total"] == 1


def test_purpose_of_use(world: World) -> None:
    world.a.put(consent("consent-r5", "r5", {"type": "permit", "purpose": [{"code": "TREAT"}]}))
    world.a.put(observation("obs-r5", "r5", TEMPERATURE))
    assert world.d.get("/fhir/Observation/obs-r5").status_code == 404
    assert world.d.get("/fhir/Observation/obs-r5", purpose="HRESCH").status_code == 404
    assert world.d.get("/fhir/Observation/obs-r5", purpose="TREAT").status_code == 200


def test_consent_period_past_is_not_shared(world: World) -> None:
    world.a.put(consent("consent-r6", "r6", {"type": "permit", "period": {"start": "2020-01-01", "end": "2021-01-01"}}))
    world.a.put(observation("obs-r6", "r6", TEMPERATURE))
    assert world.d.get("/fhir/Observation/obs-r6").status_code == 404
    world.a.put(consent("consent-r6", "r6", {"type": "permit", "period": {"start": "2020-01-01"}}))
    assert world.d.get("/fhir/Observation/obs-r6").status_code == 200


def test_withdrawal_takes_effect_on_the_next_request(world: World) -> None:
    world.a.put(consent("consent-r7", "r7"))
    world.a.put(observation("obs-r7", "r7", TEMPERATURE))
    search = "/fhir/Observation?subject=Patient/r7"
    assert world.d.get(search).json()["total"] == 1
    world.a.put(consent("consent-r7", "r7", status="inactive"))
    assert world.d.get(search).json()["total"] == 0
    assert world.d.get("/fhir/Observation/obs-r7").status_code == 404
    world.a.put(consent("consent-r7", "r7"))
    assert world.d.get(search).json()["total"] == 1
    assert world.a.delete("/fhir/Consent/consent-r7").status_code == 200
    assert world.d.get(search).json()["total"] == 0
    world.a.put(consent("consent-r7", "r7", status="rejected"))
    assert world.d.get(search).json()["total"] == 0


# -- includes, operations, bundles ----------------------------------------------------------------


def test_include_and_revinclude_are_filtered(world: World) -> None:
    bundle = world.b.get("/fhir/Observation?code=8867-4&_include=Observation:subject&_count=50").json()
    assert ids(bundle, "include") == {"Patient/r1"}  # r2 is A's patient, unshared
    bundle = world.a.get("/fhir/Patient?_id=r2&_revinclude=Observation:subject").json()
    assert ids(bundle, "include") == observations("a", "r2")
    bundle = world.d.get("/fhir/Patient?_id=r1,r2&_revinclude=Observation:subject").json()
    assert ids(bundle, "match") == {"Patient/r1"}
    assert bundle["total"] == 1
    assert ids(bundle, "include") == observations("a b c", "r1")


def test_everything_is_filtered(world: World) -> None:
    seen, totals = pages(world.d, "/fhir/Patient/r1/$everything?_count=2")
    assert observations("a b c", "r1") <= set(seen)
    assert not any("-r2-" in ref for ref in seen)
    assert totals == {len(seen)}
    assert world.d.get("/fhir/Patient/r2/$everything").status_code == 404
    assert world.b.get("/fhir/Patient/r2/$everything").status_code == 404  # B may not see A's patient
    own, _ = pages(world.a, "/fhir/Patient/r2/$everything")
    assert {ref for ref in own if ref.startswith("Observation/")} == observations("a", "r2")


def test_lastn_is_filtered(world: World) -> None:
    bundle = world.d.get("/fhir/Observation/$lastn?max=10&code=8867-4").json()
    assert ids(bundle) == observations("a b c", "r1")


def test_bulk_export_is_filtered(world: World) -> None:
    status = kickoff(world.d, "/fhir/Patient/$export", _type="Patient,Observation")
    files = download(world.d, wait_complete(world.d, status))
    exported = {f"{r['resourceType']}/{r['id']}" for found in files.values() for r in found}
    heart_rates = {
        f"Observation/{r['id']}" for r in files.get("Observation", []) if r["code"]["coding"][0]["code"] == "8867-4"
    }
    assert heart_rates == observations("a b c", "r1")
    assert "Patient/r1" in exported
    assert not {"Patient/r2", "Patient/r3"} & exported
    assert not any("-r2-" in ref for ref in exported)


def test_bundle_reads_are_filtered(world: World) -> None:
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Observation/obs-a-r2-1"}},
            {"request": {"method": "GET", "url": "Observation/obs-a-r1-1"}},
        ],
    }
    response = world.d.post("/fhir", batch)
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses[0].startswith("404")
    assert statuses[1].startswith("200")


def test_deleted_resources_are_their_owners_only(world: World) -> None:
    world.a.put(observation("gone-r1", "r1", TEMPERATURE))
    assert world.d.get("/fhir/Observation/gone-r1").status_code == 200
    assert world.a.delete("/fhir/Observation/gone-r1").status_code == 200
    assert world.a.get("/fhir/Observation/gone-r1").status_code == 410
    assert world.d.get("/fhir/Observation/gone-r1").status_code == 404
    assert world.d.get("/fhir/Observation/gone-r1/_history").status_code == 404


def test_conditional_interactions_match_only_readable_records(world: World) -> None:
    body = observation("ignored", "unknown-resident")
    del body["id"]
    hidden = world.b.http.post(
        "/fhir/Observation", json=body, headers=world.b.headers({"If-None-Exist": "_id=obs-a-r2-1"})
    )
    assert hidden.status_code == 201  # A's unshared record is no match: nothing of it is returned
    assert hidden.json()["id"] != "obs-a-r2-1"
    shared = world.d.http.post(
        "/fhir/Observation", json=body, headers=world.d.headers({"If-None-Exist": "_id=obs-a-r1-1"})
    )
    assert shared.status_code == 200
    assert shared.json()["id"] == "obs-a-r1-1"
    assert world.b.delete("/fhir/Observation?_id=obs-a-r2-1").status_code == 200
    assert world.a.get("/fhir/Observation/obs-a-r2-1").status_code == 200  # not deleted by B


def test_subscriptions_match_only_what_the_subscriber_may_read(world: World) -> None:
    subscription = SUBSCRIPTION  # heart rates: Observation?code=8867-4
    engine = world.exchange.app.state.context.engine  # type: ignore[attr-defined]
    registry = world.exchange.app.state.context.service.registry  # type: ignore[attr-defined]
    candidates = ["obs-a-r1-1", "obs-a-r2-1", "obs-d-none"]
    with engine.connect() as conn:
        for_d = replace(parse_subscription(subscription), owner="Organization/clinic-d")
        assert matching_ids(conn, registry, for_d, candidates) == {"obs-a-r1-1"}
        for_a = replace(for_d, owner="Organization/hosp-a")
        assert matching_ids(conn, registry, for_a, candidates) == {"obs-a-r1-1", "obs-a-r2-1"}
        exchange_own = replace(for_d, owner=None)
        assert matching_ids(conn, registry, exchange_own, candidates) == {"obs-a-r1-1", "obs-a-r2-1"}


def test_an_institutions_subscription_stays_within_its_clients_scopes(world: World) -> None:
    subscription = SUBSCRIPTION
    patients_only = world.exchange.institution("Organization/hosp-a", "system/Patient.rs system/Subscription.cruds")
    refused = patients_only.post("/fhir/Subscription", {**subscription, "criteria": "Observation?code=8867-4"})
    assert refused.status_code == 403, refused.text
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert "would notify every write of Observation" in refused.text
    assert "system/Observation.rs" in refused.text
    allowed = patients_only.post("/fhir/Subscription", {**subscription, "criteria": "Patient?gender=female"})
    assert allowed.status_code == 201, allowed.text
    moved = patients_only.http.put(
        f"/fhir/Subscription/{allowed.json()['id']}",
        json={**allowed.json(), "criteria": "Observation?code=8867-4"},
        headers=patients_only.headers(),
    )
    assert moved.status_code == 403, moved.text
    assert patients_only.get(f"/fhir/Subscription/{allowed.json()['id']}").json()["criteria"] == "Patient?gender=female"

    labs = world.exchange.institution(
        "Organization/hosp-a", "system/Observation.rs?category=laboratory system/Subscription.cruds"
    )
    every = labs.post("/fhir/Subscription", {**subscription, "criteria": "Observation?code=8867-4"})
    assert every.status_code == 403, every.text
    assert "beyond this client's constrained scopes" in every.text
    assert "add category=laboratory to its criteria" in every.text
    within = labs.post(
        "/fhir/Subscription", {**subscription, "criteria": "Observation?code=8867-4&category=laboratory"}
    )
    assert within.status_code == 201, within.text


# -- break-glass ----------------------------------------------------------------------------------


def test_break_glass_reads_beyond_consent(world: World) -> None:
    reason = "120 call 2026-0042: unconscious resident, allergies needed"
    assert world.em.get("/fhir/Observation/obs-a-r2-1").status_code == 404
    assert world.em.get("/fhir/Observation/obs-a-r2-1", reason=reason).status_code == 200
    bundle = world.em.get("/fhir/Observation?subject=Patient/r2", reason=reason).json()
    assert bundle["total"] == 6
    seen, _ = pages(world.em, "/fhir/Patient/r2/$everything?_count=4", reason=reason)
    assert observations("a b c", "r2") <= set(seen)


def test_break_glass_needs_a_reason(world: World) -> None:
    response = world.em.get("/fhir/Observation/obs-a-r2-1", reason="  ")
    assert response.status_code == 403
    assert "X-Break-Glass-Reason" in response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_break_glass_only_for_emergency_services(world: World) -> None:
    response = world.d.get("/fhir/Observation/obs-a-r2-1", reason="curious")
    assert response.status_code == 403
    assert "emergency services" in response.text


def test_break_glass_keeps_scope_checks_and_never_writes(world: World) -> None:
    body = observation("em-write", "r2")
    del body["id"]
    headers = world.em.headers({"X-Break-Glass-Reason": "emergency"})
    assert world.em.http.post("/fhir/Observation", json=body, headers=headers).status_code == 403


# -- $meta at type and system level -----------------------------------------------------------------

SHARED_TAG = {"system": "https://example.org/tags", "code": "shared-flag"}
PRIVATE_TAG = {"system": "https://example.org/tags", "code": "private-flag"}
PRIVATE_LABEL = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}


def flag(res_id: str, subject: str, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Flag",
        "id": res_id,
        "meta": meta,
        "status": "active",
        "code": {"text": "Fall risk"},
        "subject": {"reference": f"Patient/{subject}"},
    }


def meta_in_use(who: Institution, url: str) -> tuple[set[str], set[str]]:
    response = who.get(url)
    assert response.status_code == 200, response.text
    meta = response.json()["parameter"][0]["valueMeta"]
    return {t["code"] for t in meta.get("tag", [])}, {s["code"] for s in meta.get("security", [])}


@pytest.fixture(scope="module")
def flags(world: World) -> World:
    world.a.put(flag("flag-meta-r1", "r1", {"tag": [SHARED_TAG]}))
    world.a.put(flag("flag-meta-r2", "r2", {"tag": [PRIVATE_TAG], "security": [PRIVATE_LABEL]}))
    return world


def test_type_meta_lists_only_what_the_caller_may_read(flags: World) -> None:
    tags, labels = meta_in_use(flags.d, "/fhir/Flag/$meta")
    assert "shared-flag" in tags  # r1 consented to sharing
    assert "private-flag" not in tags and "R" not in labels  # r2 did not
    tags, labels = meta_in_use(flags.unaffiliated, "/fhir/Flag/$meta")
    assert not {"shared-flag", "private-flag"} & tags and "R" not in labels


def test_type_meta_lists_the_owners_own_tags(flags: World) -> None:
    tags, labels = meta_in_use(flags.a, "/fhir/Flag/$meta")
    assert {"shared-flag", "private-flag"} <= tags
    assert "R" in labels


def test_system_meta_is_filtered_too(flags: World) -> None:
    tags, _ = meta_in_use(flags.d, "/fhir/$meta")
    assert "shared-flag" in tags and "private-flag" not in tags
    tags, _ = meta_in_use(flags.a, "/fhir/$meta")
    assert {"shared-flag", "private-flag"} <= tags
