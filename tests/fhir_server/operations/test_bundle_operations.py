"""Operations as entries of batch and transaction Bundles, on both backends."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from fhir_server.operations.bundle import TRANSACTION_SAFE
from tests.fhir_server.operations.conftest import FHIR

TAG = {"system": "urn:test:bundle-ops", "code": "checked"}


def _bundle(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def _op(method: str, url: str, resource: dict[str, Any] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"request": {"method": method, "url": url}}
    if resource is not None:
        entry["resource"] = resource
    return entry


def _meta(tag: dict[str, str]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": {"tag": [tag]}}]}


def _patient(client, family: str = "覃") -> str:
    body = {"resourceType": "Patient", "name": [{"family": family, "given": ["秀英"]}]}
    response = client.post("/fhir/Patient", json=body, headers=FHIR)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _post(client, bundle: dict[str, Any]):  # type: ignore[no-untyped-def]
    return client.post("/fhir", json=bundle, headers=FHIR)


def _tags(client, pid: str) -> list[dict[str, str]]:
    return client.get(f"/fhir/Patient/{pid}").json().get("meta", {}).get("tag", [])


def _codes(outcome: dict[str, Any]) -> list[str]:
    return [issue["severity"] for issue in outcome["issue"]]


def test_batch_runs_each_operation_on_its_own(client) -> None:
    pid = _patient(client)
    entries = [
        _op("POST", f"Patient/{pid}/$meta-add", _meta(TAG)),
        _op("POST", "Patient/$validate", {"resourceType": "Patient", "gender": "female"}),
        _op("POST", "Patient/$validate", {"resourceType": "Patient", "gender": "nonsense"}),
        _op("GET", f"Patient/{pid}/$everything?_count=5"),
        _op("GET", f"Patient/{pid}/$meta"),
        _op("GET", "Patient/$nothing"),
        _op("GET", f"Patient/{pid}/$meta-add"),
        _op("POST", "$export"),
        _op("POST", "Subscription/s1/$resend"),
        _op("POST", f"Patient/{pid}/$expunge"),
        _op("POST", "Patient/1/2/$meta"),
    ]
    response = _post(client, _bundle("batch", entries))
    assert response.status_code == 200, response.text
    result = response.json()["entry"]
    assert result[0]["response"]["status"] == "200 OK"
    assert result[0]["resource"]["parameter"][0]["valueMeta"]["tag"] == [TAG]
    assert _tags(client, pid) == [TAG]
    valid, broken = result[1]["resource"], result[2]["resource"]
    assert valid["resourceType"] == "OperationOutcome" and _codes(valid) == ["information"]
    assert broken["resourceType"] == "OperationOutcome" and "error" in _codes(broken)
    everything = result[3]["resource"]
    assert everything["resourceType"] == "Bundle" and everything["type"] == "searchset"
    assert [e["resource"]["id"] for e in everything["entry"]] == [pid]
    assert everything["link"][0]["url"].startswith("http://testserver/fhir/Patient/")
    assert result[4]["resource"]["parameter"][0]["valueMeta"]["tag"] == [TAG]  # runs after the $meta-add
    expected = {5: "404", 6: "405", 7: "400", 8: "400", 9: "403", 10: "400"}
    for index, status in expected.items():
        assert result[index]["response"]["status"] == status, (index, result[index])
        assert result[index]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert "Unknown operation $nothing" in result[5]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert "Prefer: respond-async" in result[7]["response"]["outcome"]["issue"][0]["diagnostics"]


def test_transaction_runs_safe_operations_in_its_unit_of_work(client) -> None:
    pid = _patient(client)
    new = f"urn:uuid:{uuid.uuid4()}"
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "心率"},
        "subject": {"reference": new},
    }
    entries = [
        _op("GET", f"Patient/{pid}/$everything"),
        {"fullUrl": new, "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        _op("POST", f"Patient/{pid}/$meta-add", _meta(TAG)),
        _op(
            "POST",
            "Observation/$validate",
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "resource", "resource": observation},
                    {"name": "mode", "valueCode": "create"},
                ],
            },
        ),
    ]
    response = _post(client, _bundle("transaction", entries))
    assert response.status_code == 200, response.text
    result = response.json()["entry"]
    assert [e["response"]["status"] for e in result] == ["200 OK", "201 Created", "200 OK", "200 OK"]
    assert result[0]["resource"]["type"] == "searchset"
    assert result[2]["resource"]["resourceType"] == "Parameters"
    assert _codes(result[3]["resource"]) == ["information"]
    assert _tags(client, pid) == [TAG]
    assert client.get(f"/fhir/Patient/{pid}").json()["meta"]["versionId"] == "2"


def test_a_failing_transaction_undoes_its_operations(client) -> None:
    pid = _patient(client)
    entries = [
        _op("POST", f"Patient/{pid}/$meta-add", _meta(TAG)),
        {
            "resource": {"resourceType": "Patient", "gender": "nonsense"},
            "request": {"method": "PUT", "url": "Patient/x1"},
        },
    ]
    response = _post(client, _bundle("transaction", entries))
    assert response.status_code == 400
    assert _tags(client, pid) == []
    assert client.get(f"/fhir/Patient/{pid}").json()["meta"]["versionId"] == "1"


def test_an_operation_error_fails_the_whole_transaction(client) -> None:
    pid = _patient(client)
    entries = [
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        _op("POST", f"Patient/{pid}/$meta-add", {"resourceType": "Parameters", "parameter": []}),
    ]
    response = _post(client, _bundle("transaction", entries))
    assert response.status_code == 400
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert "Bundle.entry[1]" in diagnostics and "needs the parameter 'meta'" in diagnostics


@pytest.mark.parametrize(
    ("url", "status", "words"),
    [
        ("Patient/{pid}/$expunge", 400, "$expunge cannot run inside a transaction"),
        ("$export", 400, "$export cannot run inside a transaction"),
        ("Patient/$export", 400, "$export cannot run inside a transaction"),
        ("Subscription/s1/$resend", 400, "$resend cannot run inside a transaction"),
        ("Patient/$nothing", 404, "Unknown operation $nothing"),
        ("Nonsense/$validate", 404, "Unknown resource type 'Nonsense'"),
        ("Patient/bad*id/$meta-add", 400, "is not a valid resource id"),
    ],
)
def test_unsafe_or_unknown_operations_refuse_the_transaction(client, url, status, words) -> None:
    pid = _patient(client)
    marker = uuid.uuid4().hex
    entries = [
        {
            "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:test:bundle-ops", "value": marker}]},
            "request": {"method": "POST", "url": "Patient"},
        },
        _op("POST", url.format(pid=pid)),
    ]
    response = _post(client, _bundle("transaction", entries))
    assert response.status_code == status, response.text
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert "Bundle.entry[1]" in diagnostics and words in diagnostics
    found = client.get("/fhir/Patient", params={"identifier": f"urn:test:bundle-ops|{marker}"}).json()
    assert found["total"] == 0


def test_an_operation_and_a_write_may_not_touch_one_resource(client) -> None:
    pid = _patient(client)
    entries = [
        {"resource": {"resourceType": "Patient", "id": pid}, "request": {"method": "PUT", "url": f"Patient/{pid}"}},
        _op("POST", f"Patient/{pid}/$meta-add", _meta(TAG)),
    ]
    response = _post(client, _bundle("transaction", entries))
    assert response.status_code == 400
    assert f"touch Patient/{pid}" in response.json()["issue"][0]["diagnostics"]


def test_a_get_of_an_operation_that_changes_data_is_refused(client) -> None:
    pid = _patient(client)
    response = _post(client, _bundle("transaction", [_op("GET", f"Patient/{pid}/$meta-add")]))
    assert response.status_code == 405
    assert "call it with POST" in response.json()["issue"][0]["diagnostics"]


def test_an_entry_resource_that_is_not_an_object_is_refused(client) -> None:
    pid = _patient(client)
    entries = [{"resource": "meta", "request": {"method": "POST", "url": f"Patient/{pid}/$meta-add"}}]
    result = _post(client, _bundle("batch", entries)).json()["entry"][0]
    assert result["response"]["status"] == "400"
    assert "must be a JSON object" in result["response"]["outcome"]["issue"][0]["diagnostics"]


def test_the_transaction_safe_operations_are_registered() -> None:
    from fhir_server.operations import OPERATIONS

    codes = {o.code for o in OPERATIONS}
    assert codes >= TRANSACTION_SAFE
    assert not {"expunge", "export", "resend"} & TRANSACTION_SAFE


def test_an_operation_opts_in_to_transactions_by_extension() -> None:
    from fhir_server.operations.base import Operation
    from fhir_server.operations.bundle import IN_TRANSACTION, transaction_safe

    def declaration(extension: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": "Patient-thing",
            "name": "Thing",
            "code": "thing",
            "resource": ["Patient"],
            "system": False,
            "type": True,
            "instance": False,
            "affectsState": True,
            "extension": extension,
            "parameter": [],
        }

    def run(call, conn):  # type: ignore[no-untyped-def]
        return {}

    assert transaction_safe(Operation(declaration([{"url": IN_TRANSACTION, "valueBoolean": True}]), run))
    assert not transaction_safe(Operation(declaration([{"url": IN_TRANSACTION, "valueBoolean": False}]), run))
    assert not transaction_safe(Operation(declaration([]), run))
