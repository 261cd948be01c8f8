"""The MPI's operations on both backends: $match, $ihe-pix, $mpi-link, $mpi-not-duplicate, $merge, $unmerge."""

from __future__ import annotations

from typing import Any

import pytest

from ehr_archive.identifiers import RESIDENT_ID_SYSTEM, mrn_system
from ehr_archive.mpi import MPI_SYSTEM
from tests.conftest import auth_headers
from tests.ehr_archive.conftest import patient, resident_id, unique_org
from tests.ehr_archive.test_mpi_linking import create, golden_id, read, review_tasks, seealso

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


def call(client, code: str, *parameters: dict[str, Any]) -> Any:  # type: ignore[no-untyped-def]
    return client.post(f"/fhir/Patient/${code}", json={"resourceType": "Parameters", "parameter": list(parameters)})


def ref(name: str, res_id: str) -> dict[str, Any]:
    return {"name": name, "valueReference": {"reference": f"Patient/{res_id}"}}


def match(client, query: dict[str, Any], *extra: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = call(client, "match", {"name": "resource", "resource": query}, *extra)
    assert response.status_code == 200, response.text
    return response.json()


def grades(bundle: dict[str, Any]) -> list[tuple[str, str, float]]:
    return [
        (e["resource"]["id"], e["search"]["extension"][0]["valueCode"], e["search"]["score"])
        for e in bundle["entry"]
        if e["search"]["mode"] == "match"
    ]


# -- $match -----------------------------------------------------------------------------------------------------


def test_match_scores_and_grades_goldens(mpi_client) -> None:
    rid = resident_id("19470214", 101, male=False)
    known = create(
        mpi_client,
        patient(unique_org(), "M-1", family="欧阳", given="秀兰", born="1947-02-14", gender="female", rid=rid),
    )
    query = patient(unique_org(), "Q", family="欧阳", given="秀兰", born="1947-02-14", gender="female", rid=rid)
    query.pop("identifier")
    query["identifier"] = [{"system": RESIDENT_ID_SYSTEM, "value": rid}]

    certain = match(mpi_client, query)
    [(found, grade, score)] = grades(certain)
    assert (found, grade, score) == (golden_id(known), "certain", 1.0)
    assert certain["type"] == "searchset" and certain["total"] == 1
    assert certain["entry"][0]["search"]["extension"][0]["url"] == MATCH_GRADE

    query.pop("identifier")
    [(found, grade, score)] = grades(match(mpi_client, query))
    assert (found, grade) == (golden_id(known), "probable")
    assert 0.9 < score < 1.0

    none = match(mpi_client, query, {"name": "onlyCertainMatches", "valueBoolean": True})
    assert grades(none) == [] and none["total"] == 0


def test_match_count_and_only_certain_with_several_certain(mpi_client) -> None:
    rid = resident_id("19520520", 111)
    first = create(mpi_client, patient(unique_org(), "C-1", family="蒋", given="德华", born="1952-05-20", rid=rid))
    second = create(
        mpi_client, patient(unique_org(), "C-2", family="蒋", given="德华", born="1952-05-20", phone="13977400111")
    )
    query = patient(unique_org(), "Q", family="蒋", given="德华", born="1952-05-20", phone="13977400111")

    both = grades(match(mpi_client, query))
    assert {g for g, _, _ in both} == {golden_id(first), golden_id(second)}
    assert [s for _, _, s in both] == sorted((s for _, _, s in both), reverse=True)
    assert len(grades(match(mpi_client, query, {"name": "count", "valueInteger": 1}))) == 1

    # the same number in two goldens (a reviewer kept them apart): two certain matches, so none is returned
    third = create(mpi_client, patient(unique_org(), "C-3", family="蒋", given="德华", born="1952-05-20", rid=rid))
    assert golden_id(third) == golden_id(first)
    apart = call(
        mpi_client, "mpi-not-duplicate", ref("source-patient", third["id"]), ref("golden-patient", golden_id(first))
    )
    assert apart.status_code == 200, apart.text
    query["identifier"] = [{"system": RESIDENT_ID_SYSTEM, "value": rid}]
    assert [g for _, g, _ in grades(match(mpi_client, query))][:2] == ["certain", "certain"]
    certain = match(mpi_client, query, {"name": "onlyCertainMatches", "valueBoolean": True})
    assert grades(certain) == []
    assert certain["entry"][0]["resource"]["issue"][0]["code"] == "multiple-matches"


@pytest.mark.parametrize(
    ("parameters", "status", "text"),
    [
        ([], 400, "resource"),
        ([{"name": "resource", "resource": {"resourceType": "Observation", "status": "final"}}], 400, "Patient"),
        ([{"name": "resource", "resource": {"resourceType": "Patient", "gender": "x"}}], 400, "gender"),
        (
            [{"name": "resource", "resource": {"resourceType": "Patient"}}, {"name": "count", "valueInteger": 0}],
            400,
            "count",
        ),
    ],
)
def test_match_refuses_bad_input(mpi_client, parameters, status, text) -> None:
    response = call(mpi_client, "match", *parameters)

    assert response.status_code == status, response.text
    assert text in response.text


def test_match_is_declared_in_the_capability_statement(mpi_client) -> None:
    statement = mpi_client.get("/fhir/metadata").json()
    patient_rest = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    names = {o["name"] for o in patient_rest.get("operation", [])}

    assert {"match", "ihe-pix", "merge", "unmerge", "mpi-link", "mpi-not-duplicate"} <= names
    assert mpi_client.get("/fhir/OperationDefinition/Patient-match").json()["code"] == "match"


# -- $ihe-pix ---------------------------------------------------------------------------------------------------


def test_pix_cross_references_every_record_of_the_resident(mpi_client) -> None:
    rid = resident_id("19600101", 121)
    first_org, second_org = unique_org(), unique_org()
    first = create(mpi_client, patient(first_org, "X-1", family="潘", given="永福", born="1960-01-01", rid=rid))
    second = create(mpi_client, patient(second_org, "X-2", family="潘", given="永福", born="1960-01-01", rid=rid))

    every = mpi_client.get("/fhir/Patient/$ihe-pix", params={"sourceIdentifier": f"{mrn_system(first_org)}|X-1"}).json()
    only_second = mpi_client.get(
        "/fhir/Patient/$ihe-pix",
        params={"sourceIdentifier": f"{mrn_system(first_org)}|X-1", "targetSystem": mrn_system(second_org)},
    ).json()

    identifiers = [p["valueIdentifier"] for p in every["parameter"] if p["name"] == "targetIdentifier"]
    ids = {p["valueReference"]["reference"] for p in every["parameter"] if p["name"] == "targetId"}
    assert {"system": mrn_system(second_org), "value": "X-2"} in identifiers
    assert {"system": RESIDENT_ID_SYSTEM, "value": rid} in identifiers
    assert {"system": mrn_system(first_org), "value": "X-1"} not in identifiers
    assert ids == {f"Patient/{golden_id(first)}", f"Patient/{first['id']}", f"Patient/{second['id']}"}
    assert only_second["parameter"] == [
        {"name": "targetIdentifier", "valueIdentifier": {"system": mrn_system(second_org), "value": "X-2"}},
        {"name": "targetId", "valueReference": {"reference": f"Patient/{second['id']}"}},
    ]


def test_pix_errors_follow_iti_83(mpi_client) -> None:
    org = unique_org()
    create(mpi_client, patient(org, "E-1", family="骆", given="明", born="1999-09-09"))

    unknown_patient = mpi_client.get("/fhir/Patient/$ihe-pix", params={"sourceIdentifier": f"{mrn_system(org)}|nobody"})
    unknown_domain = mpi_client.get("/fhir/Patient/$ihe-pix", params={"sourceIdentifier": "urn:oid:1.2.3|E-1"})
    unknown_target = mpi_client.get(
        "/fhir/Patient/$ihe-pix",
        params={"sourceIdentifier": f"{mrn_system(org)}|E-1", "targetSystem": "urn:oid:9.9.9"},
    )
    no_value = mpi_client.get("/fhir/Patient/$ihe-pix", params={"sourceIdentifier": mrn_system(org)})
    missing = mpi_client.get("/fhir/Patient/$ihe-pix")

    assert unknown_patient.status_code == 404
    assert unknown_patient.json()["issue"][0]["code"] == "not-found"
    assert unknown_domain.status_code == 400
    assert unknown_domain.json()["issue"][0] == {
        "severity": "error",
        "code": "code-invalid",
        "diagnostics": "sourceIdentifier Assigning Authority not found",
        "expression": ["sourceIdentifier"],
    }
    assert unknown_target.status_code == 403
    assert "targetSystem not found" in unknown_target.text
    assert no_value.status_code == 400
    assert missing.status_code == 400


# -- review decisions -------------------------------------------------------------------------------------------


def test_link_puts_the_record_in_the_golden_and_completes_the_task(mpi_client) -> None:
    rid = resident_id("19630908", 131)
    known = create(mpi_client, patient(unique_org(), "K-1", family="邓", given="振华", born="1963-09-08", rid=rid))
    unsure = create(mpi_client, patient(unique_org(), "K-2", family="邓", given="振华", born="1963-09-08"))
    [task] = review_tasks(mpi_client, unsure["id"])
    lonely_golden = golden_id(unsure)

    response = call(
        mpi_client, "mpi-link", ref("source-patient", unsure["id"]), ref("golden-patient", golden_id(known))
    )

    assert response.status_code == 200, response.text
    linked = read(mpi_client, unsure["id"])
    assert golden_id(linked) == golden_id(known)
    assert linked["meta"]["versionId"] == "2"
    assert seealso(read(mpi_client, golden_id(known))) == {f"Patient/{known['id']}", f"Patient/{unsure['id']}"}
    assert read(mpi_client, lonely_golden)["active"] is False
    done = mpi_client.get(f"/fhir/Task/{task['id']}").json()
    assert done["status"] == "completed"
    assert done["output"][0]["valueCode"] == "linked"
    provenance = mpi_client.get(f"/fhir/Provenance?target=Patient/{unsure['id']}").json()
    assert provenance["entry"][0]["resource"]["activity"]["coding"][0] == {
        "system": MPI_SYSTEM,
        "code": "link",
        "display": "Link a record to a golden Patient",
    }
    # a manual link survives the record's next update
    again = {**linked, "telecom": [{"system": "phone", "value": "13800000000"}]}
    assert golden_id(mpi_client.put(f"/fhir/Patient/{unsure['id']}", json=again).json()) == golden_id(known)


def test_not_duplicate_takes_the_record_out_and_keeps_it_out(mpi_client) -> None:
    rid = resident_id("19700707", 141)
    first = create(mpi_client, patient(unique_org(), "U-1", family="植", given="伟", born="1970-07-07", rid=rid))
    second = create(mpi_client, patient(unique_org(), "U-2", family="植", given="伟", born="1970-07-07", rid=rid))
    shared = golden_id(first)
    assert golden_id(second) == shared

    response = call(mpi_client, "mpi-not-duplicate", ref("source-patient", second["id"]), ref("golden-patient", shared))

    assert response.status_code == 200, response.text
    moved = read(mpi_client, second["id"])
    assert golden_id(moved) != shared
    assert seealso(read(mpi_client, shared)) == {f"Patient/{first['id']}"}
    again = mpi_client.put(f"/fhir/Patient/{second['id']}", json={**moved, "gender": "male"}).json()
    assert golden_id(again) == golden_id(moved)


@pytest.mark.parametrize("code", ["mpi-link", "mpi-not-duplicate"])
def test_review_decisions_refuse_wrong_patients(mpi_client, code) -> None:
    first = create(mpi_client, patient(unique_org(), "W-1", family="岑", given="一", born="1944-04-04"))
    second = create(mpi_client, patient(unique_org(), "W-2", family="岑", given="二", born="1945-05-05"))

    not_golden = call(mpi_client, code, ref("source-patient", first["id"]), ref("golden-patient", second["id"]))
    golden_source = call(
        mpi_client, code, ref("source-patient", golden_id(first)), ref("golden-patient", golden_id(second))
    )
    unknown = call(mpi_client, code, ref("source-patient", "no-such"), ref("golden-patient", golden_id(second)))
    missing = call(mpi_client, code, ref("source-patient", first["id"]))
    as_get = mpi_client.get(f"/fhir/Patient/${code}")

    assert not_golden.status_code == 422 and "not a golden" in not_golden.text
    assert golden_source.status_code == 422
    assert unknown.status_code == 404
    assert missing.status_code == 400
    assert as_get.status_code == 405


# -- $merge / $unmerge ------------------------------------------------------------------------------------------


def _history(client, res_id: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    return [e["resource"] for e in client.get(f"/fhir/Patient/{res_id}/_history").json()["entry"]]


def test_merge_and_unmerge_round_trip_keeps_every_record_and_version(mpi_client) -> None:
    org = unique_org()
    survivor = create(
        mpi_client, patient(org, "0012345678", family="陈", given="建国", rid=resident_id("19580312", 151))
    )
    duplicate = create(mpi_client, patient(org, "0012399999", family="陈", given="建囯", born="1958-03-21"))
    before = read(mpi_client, duplicate["id"])
    old_golden = golden_id(duplicate)

    preview = call(
        mpi_client,
        "merge",
        ref("source-patient", duplicate["id"]),
        ref("target-patient", survivor["id"]),
        {"name": "preview", "valueBoolean": True},
    )
    assert preview.status_code == 200, preview.text
    assert "Preview only" in preview.text
    assert read(mpi_client, duplicate["id"]) == before

    merged = call(mpi_client, "merge", ref("source-patient", duplicate["id"]), ref("target-patient", survivor["id"]))
    assert merged.status_code == 200, merged.text
    result = next(p["resource"] for p in merged.json()["parameter"] if p["name"] == "result")
    assert {"other": {"reference": f"Patient/{duplicate['id']}"}, "type": "replaces"} in result["link"]
    assert {"system": mrn_system(org), "value": "0012399999", "use": "old"} in result["identifier"]
    gone = read(mpi_client, duplicate["id"])
    assert gone["active"] is False
    assert {"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"} in gone["link"]
    assert golden_id(gone) == golden_id(survivor)
    assert read(mpi_client, old_golden)["active"] is False
    again = call(mpi_client, "merge", ref("source-patient", duplicate["id"]), ref("target-patient", survivor["id"]))
    assert again.status_code == 422

    undone = call(mpi_client, "unmerge", ref("source-patient", duplicate["id"]))
    assert undone.status_code == 200, undone.text
    restored = read(mpi_client, duplicate["id"])
    assert {k: v for k, v in restored.items() if k != "meta"} == {k: v for k, v in before.items() if k != "meta"}
    assert [v["meta"]["versionId"] for v in _history(mpi_client, duplicate["id"])] == ["3", "2", "1"]
    kept = read(mpi_client, survivor["id"])
    assert all(link["type"] != "replaces" for link in kept["link"])
    assert {"system": mrn_system(org), "value": "0012399999", "use": "old"} not in kept["identifier"]
    assert read(mpi_client, old_golden)["active"] is True
    assert seealso(read(mpi_client, old_golden)) == {f"Patient/{duplicate['id']}"}
    activities = {
        e["resource"]["activity"]["coding"][0]["code"]
        for e in mpi_client.get(f"/fhir/Provenance?target=Patient/{duplicate['id']}").json()["entry"]
    }
    assert activities == {"merge", "unmerge"}
    assert call(mpi_client, "unmerge", ref("source-patient", duplicate["id"])).status_code == 422


def test_merge_of_two_goldens_moves_their_records_and_unmerge_moves_them_back(mpi_client) -> None:
    first = create(mpi_client, patient(unique_org(), "GM-1", family="冯", given="子健", born="1930-01-30"))
    second = create(mpi_client, patient(unique_org(), "GM-2", family="冯", given="子建", born="1930-03-01"))
    source, target = golden_id(first), golden_id(second)

    merged = call(mpi_client, "merge", ref("source-patient", source), ref("target-patient", target))

    assert merged.status_code == 200, merged.text
    assert golden_id(read(mpi_client, first["id"])) == target
    assert seealso(read(mpi_client, target)) == {f"Patient/{first['id']}", f"Patient/{second['id']}"}
    old = read(mpi_client, source)
    assert old["active"] is False
    assert {"other": {"reference": f"Patient/{target}"}, "type": "replaced-by"} in old["link"]

    assert call(mpi_client, "unmerge", ref("source-patient", source)).status_code == 200
    assert golden_id(read(mpi_client, first["id"])) == source
    assert read(mpi_client, source)["active"] is True
    assert seealso(read(mpi_client, target)) == {f"Patient/{second['id']}"}


def test_merge_by_identifiers_and_refusals(mpi_client) -> None:
    org = unique_org()
    first = create(mpi_client, patient(org, "MI-1", family="甘", given="甜", born="1991-01-01", gender="female"))
    second = create(mpi_client, patient(org, "MI-2", family="甘", given="恬", born="1991-01-01", gender="female"))

    def ident(name: str, value: str) -> dict[str, Any]:
        return {"name": name, "valueIdentifier": {"system": mrn_system(org), "value": value}}

    unknown = call(
        mpi_client, "merge", ident("source-patient-identifier", "MI-9"), ident("target-patient-identifier", "MI-1")
    )
    itself = call(mpi_client, "merge", ref("source-patient", first["id"]), ref("target-patient", first["id"]))
    mixed = call(mpi_client, "merge", ref("source-patient", first["id"]), ref("target-patient", golden_id(second)))
    nameless = call(mpi_client, "merge", ref("target-patient", first["id"]))
    by_identifier = call(
        mpi_client, "merge", ident("source-patient-identifier", "MI-2"), ident("target-patient-identifier", "MI-1")
    )

    assert unknown.status_code == 404
    assert itself.status_code == 400
    assert mixed.status_code == 400
    assert nameless.status_code == 400
    assert by_identifier.status_code == 200, by_identifier.text
    assert read(mpi_client, second["id"])["active"] is False


# -- warnings -----------------------------------------------------------------------------------------------------


def test_identifier_warnings_are_returned_on_a_successful_write(mpi_client) -> None:
    rid = resident_id("19580312", 161)
    body = patient(unique_org(), "WN-1", born="1958-03-13", gender="female", rid=rid)

    response = mpi_client.post("/fhir/Patient", json=body, headers={"Prefer": "return=OperationOutcome"})
    entry = {"resource": body, "request": {"method": "POST", "url": "Patient"}}
    bundle = mpi_client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]})
    quiet = mpi_client.post(
        "/fhir",
        json={
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": patient(unique_org(), "WN-2", family="何", given="平", born="1977-07-17"),
                    "request": {"method": "POST", "url": "Patient"},
                }
            ],
        },
    )

    assert response.status_code == 201
    issues = response.json()["issue"]
    assert issues[0]["severity"] == "information"
    assert {(i["severity"], i["code"]) for i in issues[1:]} == {("warning", "business-rule")}
    assert any("birth date 1958-03-12" in i["diagnostics"] for i in issues)
    assert any("sex male" in i["diagnostics"] for i in issues)
    outcome = bundle.json()["entry"][0]["response"]["outcome"]
    assert [i["severity"] for i in outcome["issue"]] == ["warning", "warning"]
    assert "outcome" not in quiet.json()["entry"][0]["response"]


def test_an_update_of_a_merged_away_record_keeps_it_merged(mpi_client) -> None:
    org = unique_org()
    survivor = create(mpi_client, patient(org, "MA-1", family="宁", given="静", born="1968-08-18", gender="female"))
    prior = create(mpi_client, patient(org, "MA-2", family="宁", given="婧", born="1968-08-18", gender="female"))
    assert (
        call(mpi_client, "merge", ref("source-patient", prior["id"]), ref("target-patient", survivor["id"])).status_code
        == 200
    )
    merged = read(mpi_client, prior["id"])

    updated = mpi_client.put(
        f"/fhir/Patient/{prior['id']}", json={**merged, "telecom": [{"system": "phone", "value": "13500000000"}]}
    )

    assert updated.status_code == 200, updated.text
    assert golden_id(updated.json()) == golden_id(survivor)
    query = patient(unique_org(), "Q", family="宁", given="婧", born="1968-08-18", gender="female")
    assert [g for g, _, _ in grades(match(mpi_client, query))] == [golden_id(survivor)]


@pytest.mark.parametrize(
    ("code", "names"),
    [
        ("merge", ("source-patient", "target-patient")),
        ("unmerge", ("source-patient",)),
        ("mpi-link", ("source-patient", "golden-patient")),
        ("mpi-not-duplicate", ("source-patient", "golden-patient")),
    ],
)
def test_an_institution_may_not_link_or_merge_residents_records(backend, mpi_client, code, names) -> None:  # type: ignore[no-untyped-def]
    org = unique_org()
    first = create(mpi_client, patient(org, "0012300001", family="黄", given="德明", rid=resident_id("19470707", 161)))
    second = create(mpi_client, patient(org, "0012300002", family="黄", given="德名", born="1947-07-17"))
    ids = {"source-patient": second["id"], "target-patient": first["id"], "golden-patient": golden_id(first)}
    institution = auth_headers(backend, "system/Patient.cruds", organization=f"Organization/{org}")

    response = mpi_client.post(
        f"/fhir/Patient/${code}",
        json={"resourceType": "Parameters", "parameter": [ref(name, ids[name]) for name in names]},
        headers=institution,
    )

    assert response.status_code == 403, response.text
    assert "identity stewards" in response.json()["issue"][0]["diagnostics"]
    assert read(mpi_client, second["id"]) == second
