"""``$expunge`` on both backends: refused unless allowed, removes versions and index rows, audited."""

from __future__ import annotations

import orjson
from sqlalchemy import func, select

from fhir_server.storage.tables import INDEX_TABLES, audit_log, resource_versions, resources
from tests.fhir_server.operations.conftest import FHIR


def _create(client, resource: dict) -> str:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR)
    assert response.status_code == 201
    return response.json()["id"]


def _rows(engine, res_type: str, res_id: str) -> int:
    """Rows left in every table for one resource."""
    with engine.connect() as conn:
        pk = conn.execute(
            select(resources.c.res_pk).where(resources.c.res_type == res_type, resources.c.res_id == res_id)
        ).scalar()
        if pk is None:
            return 0
        tables = [resource_versions, *INDEX_TABLES.values()]
        return 1 + sum(
            conn.execute(select(func.count()).select_from(t).where(t.c.res_pk == pk)).scalar_one() for t in tables
        )


def _counts(response) -> tuple[int, int]:
    assert response.status_code == 200, response.text
    values = {p["name"]: p["valueInteger"] for p in response.json()["parameter"]}
    return values["count"], values["versions"]


def _audits(client, reference: str) -> list[dict]:
    """The audit trail's events that record ``reference`` as permanently erased (DICOM lifecycle 14)."""
    client.app.state.audit.flush()
    with client.app.state.context.engine.connect() as conn:
        events = [orjson.loads(row.event) for row in conn.execute(select(audit_log.c.event).order_by(audit_log.c.seq))]
    return [
        event
        for event in events
        for entity in event.get("entity", [])
        if entity.get("what", {}).get("reference") == reference and entity.get("lifecycle", {}).get("code") == "14"
    ]


def test_expunge_is_refused_unless_allowed(client):
    pid = _create(client, {"resourceType": "Patient", "gender": "male"})
    response = client.post(f"/fhir/Patient/{pid}/$expunge")
    assert response.status_code == 403
    assert response.json()["issue"][0]["code"] == "forbidden"
    assert "HIE_ALLOW_EXPUNGE" in response.json()["issue"][0]["diagnostics"]
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200
    assert client.post("/fhir/Patient/$expunge").status_code == 403


def test_instance_expunge_removes_every_version_and_index_row(admin_client, engine):
    pid = _create(admin_client, {"resourceType": "Patient", "name": [{"family": "黄"}], "gender": "male"})
    patient = admin_client.get(f"/fhir/Patient/{pid}").json()
    patient["gender"] = "female"
    admin_client.put(f"/fhir/Patient/{pid}", json=patient, headers=FHIR)
    assert _rows(engine, "Patient", pid) > 3

    assert _counts(admin_client.post(f"/fhir/Patient/{pid}/$expunge")) == (1, 2)
    assert _rows(engine, "Patient", pid) == 0
    assert admin_client.get(f"/fhir/Patient/{pid}").status_code == 404
    assert admin_client.get(f"/fhir/Patient/{pid}/_history").status_code == 404
    assert admin_client.get("/fhir/Patient", params={"_id": pid}).json()["total"] == 0

    [audit] = _audits(admin_client, f"Patient/{pid}")
    assert audit["action"] == "D" and audit["outcome"] == "0"
    assert audit["entity"][0]["lifecycle"]["code"] == "14"
    assert admin_client.post(f"/fhir/Patient/{pid}/$expunge").status_code == 404


def test_the_id_can_be_used_again_after_expunge(admin_client):
    resource = {"resourceType": "Organization", "id": "expunge-reuse", "name": "一"}
    assert admin_client.put("/fhir/Organization/expunge-reuse", json=resource, headers=FHIR).status_code == 201
    admin_client.post("/fhir/Organization/expunge-reuse/$expunge")
    recreated = admin_client.put("/fhir/Organization/expunge-reuse", json=resource, headers=FHIR)
    assert recreated.status_code == 201
    assert recreated.json()["meta"]["versionId"] == "1"


def test_type_expunge_removes_only_deleted_resources_up_to_limit(admin_client, engine):
    kept = _create(admin_client, {"resourceType": "Device", "status": "active"})
    deleted = [_create(admin_client, {"resourceType": "Device", "status": "active"}) for _ in range(3)]
    for device in deleted:
        admin_client.delete(f"/fhir/Device/{device}")
    first = _counts(admin_client.post("/fhir/Device/$expunge?limit=2"))
    assert first == (2, 4)
    body = {"resourceType": "Parameters", "parameter": [{"name": "limit", "valuePositiveInt": 10}]}
    assert _counts(admin_client.post("/fhir/Device/$expunge", json=body, headers=FHIR)) == (1, 2)
    assert _counts(admin_client.post("/fhir/Device/$expunge")) == (0, 0)
    assert all(_rows(engine, "Device", device) == 0 for device in deleted)
    assert admin_client.get(f"/fhir/Device/{kept}").status_code == 200
    [audit] = _audits(admin_client, f"Device/{deleted[2]}")
    assert len(audit["entity"]) == 1


def test_bad_expunge_requests(admin_client):
    pid = _create(admin_client, {"resourceType": "Patient"})
    for url, body, status, words in [
        (f"/fhir/Patient/{pid}/$expunge?limit=5", None, 400, "limit applies to $expunge at type level only"),
        ("/fhir/Patient/$expunge?limit=0", None, 400, "must be a positiveInt"),
        ("/fhir/Patient/$expunge?everything=true", None, 400, "Unknown parameter 'everything'"),
        ("/fhir/$expunge", None, 404, "not defined at system level"),
        ("/fhir/Patient/missing/$expunge", None, 404, "Patient/missing is not known"),
    ]:
        response = admin_client.post(url, json=body)
        assert response.status_code == status, (url, response.text)
        assert words in response.json()["issue"][0]["diagnostics"]
    assert admin_client.get(f"/fhir/Patient/{pid}").status_code == 200
