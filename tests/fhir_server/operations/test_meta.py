"""``$meta``, ``$meta-add`` and ``$meta-delete`` on both backends."""

from __future__ import annotations

import uuid

import pytest

from tests.fhir_server.operations.conftest import FHIR

TAG = {"system": "https://hie.wuzhou.gov.cn/fhir/CodeSystem/test-tag", "code": "followup", "display": "Follow up"}
LABEL = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
PROFILE = "https://hie.wuzhou.gov.cn/fhir/StructureDefinition/test-resident"


def _meta(response) -> dict:
    assert response.status_code == 200, response.text
    [parameter] = response.json()["parameter"]
    assert parameter["name"] == "return"
    return parameter["valueMeta"]


def _change(client, url: str, **meta: list) -> dict:
    body = {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": meta}]}
    return _meta(client.post(url, json=body, headers=FHIR))


def _patient(client, **extra) -> str:
    response = client.post("/fhir/Patient", json={"resourceType": "Patient", **extra}, headers=FHIR)
    return response.json()["id"]


def test_meta_of_an_instance(client):
    pid = _patient(client, meta={"tag": [TAG]})
    meta = _meta(client.get(f"/fhir/Patient/{pid}/$meta"))
    assert meta["tag"] == [TAG] and meta["versionId"] == "1"
    assert client.get("/fhir/Patient/missing/$meta").status_code == 404
    client.delete(f"/fhir/Patient/{pid}")
    assert client.get(f"/fhir/Patient/{pid}/$meta").status_code == 410


def test_meta_add_writes_one_new_version_and_reindexes(client):
    pid = _patient(client, meta={"tag": [TAG]})
    meta = _change(client, f"/fhir/Patient/{pid}/$meta-add", tag=[TAG], security=[LABEL], profile=[PROFILE])
    assert meta["versionId"] == "2"
    assert meta["tag"] == [TAG] and meta["security"] == [LABEL] and meta["profile"] == [PROFILE]
    history = client.get(f"/fhir/Patient/{pid}/_history").json()
    assert [entry["request"]["method"] for entry in history["entry"]] == ["PATCH", "POST"]
    assert client.get(f"/fhir/Patient/{pid}").json()["meta"]["security"] == [LABEL]
    found = client.get("/fhir/Patient", params={"_security": f"{LABEL['system']}|R", "_id": pid}).json()
    assert found["total"] == 1

    again = _change(client, f"/fhir/Patient/{pid}/$meta-add", tag=[{**TAG, "display": "another display"}])
    assert again["versionId"] == "2"  # nothing new: no version written


def test_meta_delete_removes_by_system_and_code(client):
    pid = _patient(client, meta={"tag": [TAG], "security": [LABEL], "profile": [PROFILE]})
    meta = _change(client, f"/fhir/Patient/{pid}/$meta-delete", tag=[{**TAG, "display": "x"}], profile=[PROFILE])
    assert meta["versionId"] == "2"
    assert "tag" not in meta and "profile" not in meta and meta["security"] == [LABEL]
    assert _change(client, f"/fhir/Patient/{pid}/$meta-delete", tag=[TAG])["versionId"] == "2"
    found = client.get("/fhir/Patient", params={"_tag": f"{TAG['system']}|followup", "_id": pid}).json()
    assert found["total"] == 0


def test_meta_at_type_and_system_level_lists_what_is_in_use(client):
    marker = {"system": "https://hie.wuzhou.gov.cn/fhir/CodeSystem/test-tag", "code": uuid.uuid4().hex}
    profile = f"{PROFILE}-{marker['code']}"
    _patient(client, meta={"tag": [marker]})
    client.post(
        "/fhir/Organization", json={"resourceType": "Organization", "meta": {"profile": [profile]}}, headers=FHIR
    )
    patients = _meta(client.get("/fhir/Patient/$meta"))
    assert marker in patients["tag"]
    assert profile not in patients.get("profile", [])
    everything = _meta(client.get("/fhir/$meta"))
    assert marker in everything["tag"] and profile in everything["profile"]
    deleted = _patient(client, meta={"tag": [{**marker, "code": "gone"}]})
    client.delete(f"/fhir/Patient/{deleted}")
    assert {**marker, "code": "gone"} not in _meta(client.get("/fhir/Patient/$meta"))["tag"]


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("$meta-add", {"resourceType": "Parameters"}, 400, "$meta-add needs the parameter 'meta'"),
        ("$meta-delete", None, 400, "$meta-delete needs the parameter 'meta'"),
        (
            "$meta-add",
            {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueString": "x"}]},
            400,
            "send it as valueMeta",
        ),
        (
            "$meta-add",
            {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": {"tag": {"code": "x"}}}]},
            400,
            "is not a valid Meta",
        ),
        (
            "$meta-add",
            {"resourceType": "Parameters", "parameter": [{"name": "tag", "valueCoding": TAG}]},
            400,
            "Unknown parameter 'tag'",
        ),
    ],
)
def test_bad_meta_changes(client, path, body, status, words):
    pid = _patient(client)
    response = client.post(f"/fhir/Patient/{pid}/{path}", json=body, headers=FHIR)
    assert response.status_code == status, response.text
    assert words in response.json()["issue"][0]["diagnostics"]
    assert client.get(f"/fhir/Patient/{pid}").json()["meta"]["versionId"] == "1"


def test_meta_changes_of_missing_or_deleted_resources(client):
    body = {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": {"tag": [TAG]}}]}
    assert client.post("/fhir/Patient/missing/$meta-add", json=body, headers=FHIR).status_code == 404
    pid = _patient(client)
    client.delete(f"/fhir/Patient/{pid}")
    assert client.post(f"/fhir/Patient/{pid}/$meta-add", json=body, headers=FHIR).status_code == 410
    assert client.post("/fhir/Patient/$meta-add", json=body, headers=FHIR).status_code == 404
