"""One AuditEvent per request: interaction, action, outcome, entities and residents, on both backends."""

from __future__ import annotations

import base64

from fastapi.testclient import TestClient

from tests.fhir_server.audit.conftest import FHIR, AuditReader, entity_refs, token_for


def _patient(client: TestClient, **extra: object) -> str:
    response = client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "female", **extra}, headers=FHIR)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _observation(client: TestClient, pid: str) -> str:
    body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
    }
    response = client.post("/fhir/Observation", json=body, headers=FHIR)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _subtype(event: dict) -> str:
    return event["subtype"][0]["code"]


def test_each_interaction_is_one_event_with_its_action_entities_and_resident(open_client):
    audit = AuditReader(open_client.app)
    pid = _patient(open_client)
    oid = _observation(open_client, pid)
    observation = open_client.get(f"/fhir/Observation/{oid}").json()
    patch = [{"op": "replace", "path": "/status", "value": "amended"}]
    cases = [
        ("read", "R", lambda: open_client.get(f"/fhir/Observation/{oid}")),
        ("vread", "R", lambda: open_client.get(f"/fhir/Observation/{oid}/_history/1")),
        ("history-instance", "R", lambda: open_client.get(f"/fhir/Observation/{oid}/_history")),
        ("update", "U", lambda: open_client.put(f"/fhir/Observation/{oid}", json=observation, headers=FHIR)),
        (
            "patch",
            "U",
            lambda: open_client.patch(
                f"/fhir/Observation/{oid}", json=patch, headers={"Content-Type": "application/json-patch+json"}
            ),
        ),
        ("operation", "E", lambda: open_client.get(f"/fhir/Patient/{pid}/$everything")),
        ("delete", "D", lambda: open_client.delete(f"/fhir/Observation/{oid}")),
    ]
    for interaction, action, call in cases:
        mark = audit.mark()
        response = call()
        assert response.status_code in (200, 201), (interaction, response.text)
        event = audit.one_since(mark)
        assert _subtype(event) == interaction
        assert event["action"] == action and event["outcome"] == "0", interaction
        assert event["type"]["code"] == "rest"
        assert entity_refs(event, "1") == [f"Patient/{pid}"], interaction
        if interaction != "operation":
            assert entity_refs(event, "4") == [f"Observation/{oid}"], interaction


def test_create_records_the_new_resource_and_its_resident(open_client):
    audit = AuditReader(open_client.app)
    mark = audit.mark()
    pid = _patient(open_client)
    event = audit.one_since(mark)
    assert (_subtype(event), event["action"]) == ("create", "C")
    assert entity_refs(event, "1") == [f"Patient/{pid}"]
    mark = audit.mark()
    oid = _observation(open_client, pid)
    event = audit.one_since(mark)
    assert entity_refs(event, "4") == [f"Observation/{oid}"] and entity_refs(event, "1") == [f"Patient/{pid}"]


def test_search_records_the_query_and_every_resident_in_the_results(open_client):
    audit = AuditReader(open_client.app)
    first, second = _patient(open_client, gender="other"), _patient(open_client, gender="other")
    for pid in (first, second):
        _observation(open_client, pid)
    mark = audit.mark()
    bundle = open_client.get("/fhir/Observation", params={"subject": f"Patient/{first},Patient/{second}"}).json()
    assert bundle["total"] == 2
    event = audit.one_since(mark)
    assert (_subtype(event), event["action"]) == ("search-type", "E")
    assert sorted(entity_refs(event, "1")) == sorted([f"Patient/{first}", f"Patient/{second}"])
    [query] = [e for e in event["entity"] if e["role"]["code"] == "24"]
    assert base64.b64decode(query["query"]).decode() == f"subject=Patient%2F{first}%2CPatient%2F{second}"

    mark = audit.mark()  # _elements leaves out the subject: the residents still come from the stored resources
    open_client.get("/fhir/Observation", params={"subject": f"Patient/{first}", "_elements": "status"})
    assert entity_refs(audit.one_since(mark), "1") == [f"Patient/{first}"]

    mark = audit.mark()  # POST _search: the parameters come from the form body
    response = open_client.post(
        "/fhir/Patient/_search",
        content=f"_id={first}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.json()["total"] == 1
    event = audit.one_since(mark)
    assert _subtype(event) == "search-type" and entity_refs(event, "1") == [f"Patient/{first}"]
    [query] = [e for e in event["entity"] if e["role"]["code"] == "24"]
    assert base64.b64decode(query["query"]).decode() == f"_id={first}"


def test_compartment_search_and_history_name_the_resident(open_client):
    audit = AuditReader(open_client.app)
    pid = _patient(open_client)
    _observation(open_client, pid)
    for url, interaction in (
        (f"/fhir/Patient/{pid}/Observation", "search-type"),
        ("/fhir/Observation/_history?_count=1000", "history-type"),
        ("/fhir/_history?_count=1000", "history-system"),
    ):
        mark = audit.mark()
        assert open_client.get(url).status_code == 200
        event = audit.one_since(mark)
        assert _subtype(event) == interaction and event["action"] in ("E", "R")
        assert f"Patient/{pid}" in entity_refs(event, "1"), url


def test_transaction_and_batch_record_what_they_wrote(open_client):
    audit = AuditReader(open_client.app)
    pid = _patient(open_client)
    for kind in ("transaction", "batch"):
        bundle = {
            "resourceType": "Bundle",
            "type": kind,
            "entry": [
                {
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"text": "体温"},
                        "subject": {"reference": f"Patient/{pid}"},
                    },
                    "request": {"method": "POST", "url": "Observation"},
                }
            ],
        }
        mark = audit.mark()
        response = open_client.post("/fhir", json=bundle, headers=FHIR)
        assert response.status_code == 200, response.text
        location = response.json()["entry"][0]["response"]["location"]
        event = audit.one_since(mark)
        assert (_subtype(event), event["action"]) == (kind, "E")
        assert entity_refs(event, "4") == ["/".join(location.split("/")[:2])]
        assert entity_refs(event, "1") == [f"Patient/{pid}"]


def test_failures_are_audited_with_their_outcome(open_client):
    audit = AuditReader(open_client.app)
    mark = audit.mark()
    assert open_client.get("/fhir/Patient/no-such-resident").status_code == 404
    event = audit.one_since(mark)
    assert (_subtype(event), event["outcome"]) == ("read", "4")
    assert entity_refs(event, "1") == ["Patient/no-such-resident"]
    assert event["outcomeDesc"].startswith("404 GET")
    mark = audit.mark()
    assert open_client.post("/fhir/Patient", content=b"{not json", headers=FHIR).status_code == 400
    event = audit.one_since(mark)
    assert (_subtype(event), event["action"], event["outcome"]) == ("create", "C", "4")


def test_metadata_is_not_audited(open_client):
    audit = AuditReader(open_client.app)
    mark = audit.mark()
    assert open_client.get("/fhir/metadata").status_code == 200
    assert audit.since(mark) == []


def test_expunge_is_a_delete_with_permanent_erasure(open_client):
    audit = AuditReader(open_client.app)
    pid = _patient(open_client)
    mark = audit.mark()
    assert open_client.post(f"/fhir/Patient/{pid}/$expunge").status_code == 200
    event = audit.one_since(mark)
    assert (_subtype(event), event["action"]) == ("operation", "D")
    assert event["subtype"][1]["code"] == "$expunge"
    [erased] = [e for e in event["entity"] if e.get("lifecycle")]
    assert erased["what"]["reference"] == f"Patient/{pid}" and erased["lifecycle"]["code"] == "14"


def test_the_caller_is_the_agent_with_its_institution_address_and_purpose(secured_client):
    audit = AuditReader(secured_client.app)
    headers, client_id = token_for(secured_client, "Organization/wz-hospital-1", "system/Patient.cruds")
    pid = _patient_with(secured_client, headers)
    mark = audit.mark()
    response = secured_client.get(f"/fhir/Patient/{pid}", headers={**headers, "X-Purpose-Of-Use": "TREAT"})
    assert response.status_code == 200
    event = audit.one_since(mark)
    requestor = event["agent"][0]
    assert requestor["requestor"] is True
    assert requestor["who"]["identifier"]["value"] == client_id
    assert requestor["network"]["address"] == "testclient"
    assert {"reference": "Organization/wz-hospital-1"} in [agent["who"] for agent in event["agent"]]
    assert event["purposeOfUse"][0]["coding"][0]["code"] == "TREAT"
    assert "meta" not in event


def test_break_glass_is_flagged(secured_client):
    audit = AuditReader(secured_client.app)
    headers, _ = token_for(secured_client, "Organization/wz-12349", "system/Patient.cruds")
    pid = _patient_with(secured_client, headers)
    mark = audit.mark()
    secured_client.get(
        f"/fhir/Patient/{pid}", headers={**headers, "X-Break-Glass-Reason": "120 ambulance: caller unconscious"}
    )
    event = audit.one_since(mark)
    assert event["purposeOfUse"][0]["coding"][0]["code"] == "ETREAT"
    assert event["meta"]["security"][0]["code"] == "BTG"
    assert event["extension"][0]["valueString"] == "120 ambulance: caller unconscious"


def test_failed_authentication_and_authorization_are_audited(secured_client):
    audit = AuditReader(secured_client.app)
    mark = audit.mark()
    assert secured_client.get("/fhir/Patient/p1").status_code == 401
    event = audit.one_since(mark)
    assert (event["outcome"], event["agent"][0]["who"]["identifier"]["value"]) == ("4", "anonymous")
    assert event["outcomeDesc"].startswith("401 ")
    mark = audit.mark()
    assert secured_client.get("/fhir/Patient/p1", headers={"Authorization": "Bearer forged.token.x"}).status_code == 401
    assert audit.one_since(mark)["outcome"] == "4"

    headers, client_id = token_for(secured_client, "Organization/wz-clinic-7", "system/Observation.rs")
    mark = audit.mark()
    assert secured_client.get("/fhir/Patient/p1", headers=headers).status_code == 403
    event = audit.one_since(mark)
    assert event["outcome"] == "4" and event["outcomeDesc"].startswith("403 ")
    assert event["agent"][0]["who"]["identifier"]["value"] == client_id
    assert entity_refs(event, "1") == ["Patient/p1"]


def _patient_with(client: TestClient, headers: dict[str, str]) -> str:
    body = {"resourceType": "Patient", "gender": "male"}
    response = client.post("/fhir/Patient", json=body, headers={**FHIR, **headers})
    assert response.status_code == 201, response.text
    return response.json()["id"]
