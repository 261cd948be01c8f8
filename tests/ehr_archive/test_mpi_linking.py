"""Every institution's Patient is filed in the MPI on write (both backends): goldens, links, review Tasks."""

from __future__ import annotations

from typing import Any

from ehr_archive.identifiers import RESIDENT_ID_SYSTEM
from ehr_archive.mpi import GOLDEN_CODE, MPI_SYSTEM
from tests.conftest import auth_headers
from tests.ehr_archive.conftest import patient, resident_id, unique_org

GOLDEN_TAG = f"{MPI_SYSTEM}|{GOLDEN_CODE}"


def create(client, body: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = client.post("/fhir/Patient", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def golden_id(record: dict[str, Any]) -> str:
    refers = [link["other"]["reference"] for link in record.get("link", []) if link["type"] == "refer"]
    assert len(refers) == 1, record.get("link")
    return refers[0].removeprefix("Patient/")


def read(client, res_id: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = client.get(f"/fhir/Patient/{res_id}")
    assert response.status_code == 200, response.text
    return response.json()


def seealso(golden: dict[str, Any]) -> set[str]:
    return {link["other"]["reference"] for link in golden.get("link", []) if link["type"] == "seealso"}


def review_tasks(client, source_id: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    response = client.get(f"/fhir/Task?focus=Patient/{source_id}&code={MPI_SYSTEM}|potential-duplicate")
    assert response.status_code == 200, response.text
    return [entry["resource"] for entry in response.json().get("entry", [])]


def test_same_resident_id_from_two_institutions_makes_one_golden(mpi_client) -> None:
    rid = resident_id("19580312", 11)
    first = create(mpi_client, patient(unique_org(), "A-1", rid=rid, phone="13907740001"))
    second = create(mpi_client, patient(unique_org(), "B-1", given="建囯", rid=rid, phone="13907740002"))

    assert golden_id(first) == golden_id(second)
    golden = read(mpi_client, golden_id(first))
    assert golden["meta"]["tag"][0]["code"] == GOLDEN_CODE
    assert seealso(golden) == {f"Patient/{first['id']}", f"Patient/{second['id']}"}
    assert {"system": RESIDENT_ID_SYSTEM, "value": rid, "use": "official"} in golden["identifier"]
    assert [i for i in golden["identifier"] if "/mrn/" in i["system"]] == []  # MRNs stay on the records
    assert golden["name"][0]["given"] == ["建囯"]  # the most recent record's name
    assert {t["value"] for t in golden["telecom"]} == {"13907740001", "13907740002"}
    assert review_tasks(mpi_client, second["id"]) == []


def test_a_resident_nobody_knows_gets_a_golden_of_their_own(mpi_client) -> None:
    record = create(
        mpi_client, patient(unique_org(), "N-1", family="覃", given="秀英", born="1971-06-02", gender="female")
    )

    golden = read(mpi_client, golden_id(record))
    assert seealso(golden) == {f"Patient/{record['id']}"}
    assert golden["active"] is True
    assert golden["name"] == record["name"]
    assert review_tasks(mpi_client, record["id"]) == []


def test_a_probable_match_gets_its_own_golden_and_a_review_task_with_evidence(mpi_client) -> None:
    rid = resident_id("19630908", 21)
    known = create(mpi_client, patient(unique_org(), "P-1", family="莫", given="振华", born="1963-09-08", rid=rid))
    unsure = create(mpi_client, patient(unique_org(), "P-2", family="莫", given="振华", born="1963-09-08"))

    assert golden_id(unsure) != golden_id(known)
    [task] = review_tasks(mpi_client, unsure["id"])
    assert task["status"] == "requested"
    assert task["focus"] == {"reference": f"Patient/{unsure['id']}"}
    assert task["for"] == {"reference": f"Patient/{golden_id(unsure)}"}
    inputs = {
        i["type"]["coding"][0]["code"]: next(v for k, v in i.items() if k.startswith("value")) for i in task["input"]
    }
    assert inputs["candidate"] == {"reference": f"Patient/{golden_id(known)}"}
    assert inputs["grade"] == "probable"
    assert inputs["score"] > 5
    assert inputs["evidence-name"].startswith("exact")
    assert inputs["evidence-birth_date"].startswith("exact")
    assert inputs["evidence-resident_id"].startswith("missing")


def test_an_update_that_changes_identity_relinks_the_record(mpi_client) -> None:
    rid, other_rid = resident_id("19800101", 31), resident_id("19900707", 32, male=False)
    anchor = create(mpi_client, patient(unique_org(), "R-1", family="韦", given="国强", born="1980-01-01", rid=rid))
    moving = create(mpi_client, patient(unique_org(), "R-2", family="韦", given="国强", born="1980-01-01", rid=rid))
    assert golden_id(anchor) == golden_id(moving)
    elsewhere = create(
        mpi_client,
        patient(unique_org(), "R-3", family="梁", given="美玲", born="1990-07-07", gender="female", rid=other_rid),
    )

    changed = patient(unique_org(), "R-2", family="梁", given="美玲", born="1990-07-07", gender="female", rid=other_rid)
    changed["id"] = moving["id"]
    response = mpi_client.put(f"/fhir/Patient/{moving['id']}", json=changed)
    assert response.status_code == 200, response.text

    assert golden_id(response.json()) == golden_id(elsewhere)
    assert f"Patient/{moving['id']}" not in seealso(read(mpi_client, golden_id(anchor)))
    assert f"Patient/{moving['id']}" in seealso(read(mpi_client, golden_id(elsewhere)))


def test_a_record_changed_after_it_was_a_candidate_is_compared_as_it_is_now(mpi_client) -> None:
    rid, new_rid = resident_id("19660415", 51), resident_id("19660415", 52)
    first = create(mpi_client, patient(unique_org(), "S-1", family="莫", given="桂兰", born="1966-04-15", rid=rid))
    other = create(mpi_client, patient(unique_org(), "S-2", family="莫", given="桂兰", born="1966-04-15", rid=new_rid))
    assert golden_id(other) != golden_id(first)  # the first record was its candidate, with the first ID number
    changed = patient(unique_org(), "S-1", family="莫", given="桂兰", born="1966-04-15", rid=new_rid)
    changed["id"] = first["id"]
    moved = mpi_client.put(f"/fhir/Patient/{first['id']}", json=changed)
    assert moved.status_code == 200, moved.text
    assert golden_id(moved.json()) == golden_id(other)

    third = create(mpi_client, patient(unique_org(), "S-3", family="莫", given="桂兰", born="1966-04-15", rid=rid))

    assert golden_id(third) != golden_id(other)  # nobody carries the first ID number any more


def test_an_update_that_no_longer_fits_its_golden_leaves_it(mpi_client) -> None:
    rid = resident_id("19750505", 41)
    anchor = create(mpi_client, patient(unique_org(), "L-1", family="黄", given="志明", born="1975-05-05", rid=rid))
    record = create(mpi_client, patient(unique_org(), "L-2", family="黄", given="志明", born="1975-05-05", rid=rid))
    changed = patient(unique_org(), "L-2", family="蒙", given="丽娟", born="2001-12-30", gender="female")
    changed["id"] = record["id"]

    updated = mpi_client.put(f"/fhir/Patient/{record['id']}", json=changed).json()

    assert golden_id(updated) != golden_id(anchor)
    assert seealso(read(mpi_client, golden_id(updated))) == {f"Patient/{record['id']}"}


def test_deleting_a_record_takes_it_out_of_its_golden(mpi_client) -> None:
    record = create(
        mpi_client, patient(unique_org(), "D-1", family="钟", given="小红", born="2010-02-02", gender="female")
    )
    golden = golden_id(record)

    assert mpi_client.delete(f"/fhir/Patient/{record['id']}").status_code == 200

    emptied = read(mpi_client, golden)
    assert emptied["active"] is False
    assert "link" not in emptied


def test_institutions_cannot_write_golden_patients(mpi_client) -> None:
    record = create(mpi_client, patient(unique_org(), "G-1", family="卢", given="春生", born="1966-06-06"))
    golden = read(mpi_client, golden_id(record))

    put = mpi_client.put(f"/fhir/Patient/{golden['id']}", json={**golden, "gender": "female"})
    tagged = mpi_client.post("/fhir/Patient", json={**patient(unique_org(), "G-2"), "meta": golden["meta"]})
    deleted = mpi_client.delete(f"/fhir/Patient/{golden['id']}")
    patched = mpi_client.patch(
        f"/fhir/Patient/{golden['id']}",
        json=[{"op": "replace", "path": "/gender", "value": "female"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": {**golden}, "request": {"method": "PUT", "url": f"Patient/{golden['id']}"}}],
    }
    in_bundle = mpi_client.post("/fhir", json=bundle)

    for response in (put, tagged, deleted, patched, in_bundle):
        assert response.status_code == 403, response.text
        assert "golden" in response.json()["issue"][0]["diagnostics"]
    assert read(mpi_client, golden["id"])["meta"]["versionId"] == golden["meta"]["versionId"]


def test_patients_of_a_transaction_are_filed_together(mpi_client) -> None:
    rid = resident_id("19550303", 51, male=False)
    entries = [
        {
            "fullUrl": f"urn:uuid:00000000-0000-4000-8000-00000000005{n}",
            "resource": patient(
                unique_org(),
                f"T-{n}",
                family="李",
                given="桂芳",
                born="1955-03-03",
                gender="female",
                rid=rid,
            ),
            "request": {"method": "POST", "url": "Patient"},
        }
        for n in range(2)
    ]
    response = mpi_client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert response.status_code == 200, response.text
    first, second = (e["resource"] for e in response.json()["entry"])

    assert golden_id(first) == golden_id(second)
    assert seealso(read(mpi_client, golden_id(first))) == {f"Patient/{first['id']}", f"Patient/{second['id']}"}


def test_a_record_filed_in_a_transaction_is_found_by_its_golden_link(mpi_client) -> None:
    """A Bundle's new resources are indexed before its unit of work; a record the MPI linked since, again."""
    p_url = "urn:uuid:00000000-0000-4000-8000-000000000071"
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": p_url},
    }
    entries = [
        {
            "fullUrl": p_url,
            "resource": patient(unique_org(), "L-1", family="韦", born="1966-07-07", rid=resident_id("19660707", 71)),
            "request": {"method": "POST", "url": "Patient"},
        },
        {"resource": observation, "request": {"method": "POST", "url": "Observation"}},
    ]
    response = mpi_client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert response.status_code == 200, response.text
    record, stored_observation = (e["resource"] for e in response.json()["entry"])

    linked = mpi_client.get("/fhir/Patient", params={"link": f"Patient/{golden_id(record)}"}).json()
    assert [e["resource"]["id"] for e in linked["entry"]] == [record["id"]]
    about = mpi_client.get("/fhir/Observation", params={"subject": f"Patient/{record['id']}"}).json()
    assert [e["resource"]["id"] for e in about["entry"]] == [stored_observation["id"]]


def test_pdqm_search_finds_goldens_and_records_by_pinyin(mpi_client) -> None:
    rid = resident_id("19881010", 61)
    record = create(mpi_client, patient(unique_org(), "S-1", family="覃", given="振宇", born="1988-10-10", rid=rid))

    every = mpi_client.get("/fhir/Patient?name-pinyin=qinzhenyu&birthdate=1988-10-10").json()
    goldens = mpi_client.get(f"/fhir/Patient?name-pinyin=qzy&birthdate=1988-10-10&_tag={GOLDEN_TAG}").json()
    sources = mpi_client.get(f"/fhir/Patient?name-pinyin=qin&birthdate=1988-10-10&_tag:not={GOLDEN_TAG}").json()

    found = {e["resource"]["id"] for e in every["entry"]}
    assert found == {record["id"], golden_id(record)}
    assert [e["resource"]["id"] for e in goldens["entry"]] == [golden_id(record)]
    assert [e["resource"]["id"] for e in sources["entry"]] == [record["id"]]


def test_goldens_written_during_an_institutions_write_belong_to_the_exchange(backend, mpi_client) -> None:
    org = unique_org()
    headers = auth_headers(backend, "system/*.cruds", organization=f"Organization/{org}")
    response = mpi_client.post(
        "/fhir/Patient", json=patient(org, "O-1", family="邱", given="海燕", born="1982-08-08"), headers=headers
    )
    assert response.status_code == 201, response.text
    record = response.json()

    golden = read(mpi_client, golden_id(record))
    refused = mpi_client.put(f"/fhir/Patient/{golden['id']}", json=golden, headers=headers)

    assert record["meta"]["source"].endswith(org) or org in record["meta"]["source"]
    assert "source" not in golden["meta"]
    assert refused.status_code == 403
