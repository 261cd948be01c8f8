"""REST interactions on both backends: create, read, vread, update, patch, delete, conditionals, headers."""

from __future__ import annotations

import uuid

import pytest

FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def new_patient(**extra):  # type: ignore[no-untyped-def]
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:mrn", "value": uuid.uuid4().hex}],
        "name": [{"family": "陈", "given": ["建国"]}],
        "gender": "male",
        "birthDate": "1958-03-12",
        **extra,
    }


def create(client, resource, **headers):  # type: ignore[no-untyped-def]
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_assigns_id_version_and_headers(client):
    response = client.post("/fhir/Patient", json=new_patient(id="client-chosen"))
    assert response.status_code == 201
    body = response.json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Location"].endswith(f"/fhir/Patient/{body['id']}/_history/1")
    assert response.headers["Last-Modified"].endswith("GMT")
    assert response.headers["Content-Type"].startswith("application/fhir+json")


def test_read_returns_what_was_stored_apart_from_id_and_meta(client):
    sent = new_patient(telecom=[{"system": "phone", "value": "13907740001"}])
    created = create(client, dict(sent))
    read = client.get(f"/fhir/Patient/{created['id']}").json()
    for key in ("id", "meta"):
        read.pop(key)
    assert read == sent


def test_update_versions_and_vread_keeps_every_version(client):
    created = create(client, new_patient())
    pid = created["id"]
    changed = {**created, "gender": "female"}
    response = client.put(f"/fhir/Patient/{pid}", json=changed)
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "2"
    assert client.get(f"/fhir/Patient/{pid}/_history/1").json()["gender"] == "male"
    assert client.get(f"/fhir/Patient/{pid}/_history/2").json()["gender"] == "female"
    assert client.get(f"/fhir/Patient/{pid}/_history/3").status_code == 404


def test_update_as_create_with_client_id(client):
    pid = f"hosp-{uuid.uuid4().hex[:10]}"
    response = client.put(f"/fhir/Patient/{pid}", json=new_patient(id=pid))
    assert response.status_code == 201
    assert response.json()["id"] == pid
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200


def test_if_match_stale_version_is_412_and_changes_nothing(client):
    created = create(client, new_patient())
    pid = created["id"]
    ok = client.put(f"/fhir/Patient/{pid}", json={**created, "gender": "female"}, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = client.put(f"/fhir/Patient/{pid}", json={**created, "gender": "other"}, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/fhir/Patient/{pid}").json()["gender"] == "female"
    assert client.delete(f"/fhir/Patient/{pid}", headers={"If-Match": 'W/"1"'}).status_code == 412


def test_delete_is_a_versioned_tombstone(client):
    created = create(client, new_patient())
    pid = created["id"]
    deleted = client.delete(f"/fhir/Patient/{pid}")
    assert deleted.status_code == 200
    assert deleted.headers["ETag"] == 'W/"2"'
    gone = client.get(f"/fhir/Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert client.get(f"/fhir/Patient/{pid}/_history/1").status_code == 200
    assert client.get(f"/fhir/Patient/{pid}/_history/2").status_code == 410
    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    assert client.delete(f"/fhir/Patient/{pid}").status_code == 200  # idempotent
    revived = client.put(f"/fhir/Patient/{pid}", json={**created})
    assert revived.status_code == 201
    assert revived.json()["meta"]["versionId"] == "3"


def test_json_patch(client):
    created = create(client, new_patient())
    pid = created["id"]
    ops = [{"op": "replace", "path": "/gender", "value": "female"}, {"op": "add", "path": "/active", "value": True}]
    response = client.patch(
        f"/fhir/Patient/{pid}",
        content=__import__("json").dumps(ops),
        headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'},
    )
    assert response.status_code == 200, response.text
    assert response.json()["gender"] == "female" and response.json()["active"] is True
    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert history["entry"][0]["request"]["method"] == "PATCH"


@pytest.mark.parametrize(
    ("ops", "status"),
    [
        ([{"op": "replace", "path": "/gender", "value": "x"}], 400),
        ([{"op": "remove", "path": "/nonexistent"}], 400),
        ({"op": "replace"}, 400),
    ],
)
def test_bad_patch_changes_nothing(client, ops, status):
    created = create(client, new_patient())
    response = client.patch(
        f"/fhir/Patient/{created['id']}",
        content=__import__("json").dumps(ops),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/fhir/Patient/{created['id']}").json()["meta"]["versionId"] == "1"


def test_conditional_create_returns_existing_match(client):
    patient = new_patient()
    value = patient["identifier"][0]["value"]
    condition = {"If-None-Exist": f"identifier=urn:test:mrn|{value}"}
    first = client.post("/fhir/Patient", json=patient, headers=condition)
    second = client.post("/fhir/Patient", json=patient, headers=condition)
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]


def test_conditional_create_with_several_matches_is_412(client):
    patient = new_patient()
    create(client, dict(patient))
    create(client, dict(patient))
    value = patient["identifier"][0]["value"]
    response = client.post("/fhir/Patient", json=patient, headers={"If-None-Exist": f"identifier={value}"})
    assert response.status_code == 412


def test_conditional_update_creates_then_updates(client):
    patient = new_patient()
    value = patient["identifier"][0]["value"]
    url = f"/fhir/Patient?identifier=urn:test:mrn|{value}"
    first = client.put(url, json=patient)
    assert first.status_code == 201
    second = client.put(url, json={**patient, "gender": "female"})
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["meta"]["versionId"] == "2"


def test_conditional_delete_single_and_multiple(client):
    family = f"删{uuid.uuid4().hex[:6]}"
    ids = [create(client, new_patient(name=[{"family": family}]))["id"] for _ in range(3)]
    response = client.delete(f"/fhir/Patient?name:exact={family}")
    assert response.status_code == 200
    for pid in ids:
        assert client.get(f"/fhir/Patient/{pid}").status_code == 410


def test_conditional_read_not_modified(client):
    created = create(client, new_patient())
    url = f"/fhir/Patient/{created['id']}"
    assert client.get(url, headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert client.get(url, headers={"If-None-Match": 'W/"2"'}).status_code == 200
    last_modified = client.get(url).headers["Last-Modified"]
    assert client.get(url, headers={"If-Modified-Since": last_modified}).status_code == 304
    assert client.get(url, headers={"If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"}).status_code == 200


@pytest.mark.parametrize(
    ("prefer", "expect"),
    [("return=minimal", None), ("return=representation", "Patient"), ("return=OperationOutcome", "OperationOutcome")],
)
def test_prefer_return(client, prefer, expect):
    response = client.post("/fhir/Patient", json=new_patient(), headers={"Prefer": prefer})
    assert response.status_code == 201
    assert "Location" in response.headers
    if expect is None:
        assert response.content == b""
    else:
        assert response.json()["resourceType"] == expect


def test_summary_and_elements(client):
    created = create(
        client,
        new_patient(text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">陈建国</div>'}),
    )
    url = f"/fhir/Patient/{created['id']}"
    elements = client.get(url, params={"_elements": "gender"}).json()
    assert set(elements) == {"resourceType", "id", "meta", "gender"}
    assert any(t["code"] == "SUBSETTED" for t in elements["meta"]["tag"])
    summary = client.get(url, params={"_summary": "true"}).json()
    assert "name" in summary and "text" not in summary
    text_only = client.get(url, params={"_summary": "text"}).json()
    assert "text" in text_only and "name" not in text_only
    data = client.get(url, params={"_summary": "data"}).json()
    assert "text" not in data and "name" in data
    pretty = client.get(url, params={"_pretty": "true"})
    assert b"\n  " in pretty.content


def test_history_type_and_system_with_paging(client):
    marker = uuid.uuid4().hex
    ids = [
        create(client, new_patient(identifier=[{"system": "urn:test:page", "value": f"{marker}-{i}"}]))["id"]
        for i in range(5)
    ]
    since = client.get(f"/fhir/Patient/{ids[0]}").json()["meta"]["lastUpdated"]
    page = client.get("/fhir/Patient/_history", params={"_since": since, "_count": 2}).json()
    seen = []
    while True:
        assert page["type"] == "history"
        seen += [e["resource"]["id"] for e in page["entry"]]
        for entry in page["entry"]:
            assert entry["response"]["etag"] == 'W/"1"'
            assert entry["request"] == {"method": "POST", "url": "Patient"}
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        assert len(page["entry"]) == 2
        # A write between page fetches must not shift what the next page holds.
        create(client, new_patient())
        page = client.get(nxt[0].replace("http://testserver", "")).json()
    assert set(ids) <= set(seen)
    assert seen[: len(ids)] == list(reversed(ids))
    system = client.get("/fhir/_history", params={"_since": since, "_count": 50}).json()
    assert set(ids) <= {e["resource"]["id"] for e in system["entry"] if "resource" in e}


def test_history_at(client):
    created = create(client, new_patient())
    pid = created["id"]
    at = created["meta"]["lastUpdated"]
    client.put(f"/fhir/Patient/{pid}", json={**created, "gender": "female"})
    history = client.get(f"/fhir/Patient/{pid}/_history", params={"_at": at}).json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["1"]


def test_capability_statement_lists_every_type(client):
    statement = client.get("/fhir/metadata").json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.3.0"
    types = {r["type"] for r in statement["rest"][0]["resource"]}
    assert {"Patient", "Observation", "Bundle", "Consent"} <= types
    assert len(types) == 141
