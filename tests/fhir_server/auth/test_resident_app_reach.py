"""What a resident's app reaches outside its resident's Patient compartment, on both backends.

Shared directories, products and terminology: yes. Resources outside the compartment that may carry another
resident's data (Task, Device, Bundle, Subscription …): only when they reference its own resident and no other.
Operations that look across every resident ($match, $ihe-pix) and $meta of a hidden resource: no.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Backend
from tests.fhir_server.auth.conftest import bearer, scoped
from tests.fhir_server.auth.test_patient_context import resident_app, token

INSTITUTION = "Organization/wz-reach-1"
OTHER_INSTITUTION = "Organization/wz-reach-2"
SHARED = ("Organization", "Practitioner", "Medication", "ValueSet")


def _task(patient: str) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": patient}}


class Record:
    def __init__(self, anonymous: TestClient, backend: Backend) -> None:
        self.anonymous = anonymous
        self.writer = scoped(backend, "system/*.cruds", organization=INSTITUTION)
        self.mine = self.create({"resourceType": "Patient", "gender": "female"})
        self.other = self.create({"resourceType": "Patient", "gender": "male"})
        mine, other = f"Patient/{self.mine}", f"Patient/{self.other}"
        self.other_obs = self.create(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "血糖"},
                "subject": {"reference": other},
            }
        )
        self.task_mine = self.create(_task(mine))
        self.task_other = self.create(_task(other))
        self.task_both = self.create(_task(mine) | {"owner": {"reference": other}})
        self.device_other = self.create({"resourceType": "Device", "patient": {"reference": other}})
        self.bundle = self.create(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": {"resourceType": "Patient", "id": "x", "name": [{"family": "李"}]}}],
            }
        )
        self.subscription = self.create(
            {
                "resourceType": "Subscription",
                "status": "off",
                "reason": "follow a resident",
                "criteria": f"Observation?subject={other}",
                "channel": {"type": "rest-hook", "endpoint": "https://his.example.cn/hook"},
            }
        )
        self.shared = {
            "Organization": self.create({"resourceType": "Organization", "name": "梧州市工人医院"}),
            "Practitioner": self.create({"resourceType": "Practitioner", "name": [{"family": "黄"}]}),
            "Medication": self.create({"resourceType": "Medication", "code": {"text": "二甲双胍"}}),
            "ValueSet": self.create({"resourceType": "ValueSet", "status": "active", "url": "urn:test:reach"}),
        }

    def create(self, body: dict[str, Any]) -> str:
        response = self.anonymous.post(f"/fhir/{body['resourceType']}", json=body, headers=self.writer)
        assert response.status_code == 201, response.text
        return response.json()["id"]


@pytest.fixture(scope="module")
def record(anonymous: TestClient, backend: Backend) -> Record:
    return Record(anonymous, backend)


@pytest.fixture(scope="module")
def app(anonymous: TestClient, backend: Backend, record: Record) -> dict[str, str]:
    client_id, secret = resident_app(backend, f"Patient/{record.mine}")
    response = token(anonymous, client_id, secret)
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])


def _status(anonymous: TestClient, headers: dict[str, str], ref: str) -> int:
    return anonymous.get(f"/fhir/{ref}", headers=headers).status_code


def _found(anonymous: TestClient, headers: dict[str, str], url: str, **params: str) -> set[str]:
    response = anonymous.get(url, params={"_count": "500", **params}, headers=headers)
    assert response.status_code == 200, response.text
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in response.json().get("entry", [])}


def test_shared_directories_products_and_terminology_are_readable(anonymous, app, record) -> None:
    for res_type, res_id in record.shared.items():
        assert _status(anonymous, app, f"{res_type}/{res_id}") == 200, res_type
        assert f"{res_type}/{res_id}" in _found(anonymous, app, f"/fhir/{res_type}")


def test_other_residents_resources_outside_the_compartment_are_not_found(anonymous, app, record) -> None:
    hidden = (
        f"Task/{record.task_other}",
        f"Task/{record.task_both}",
        f"Device/{record.device_other}",
        f"Bundle/{record.bundle}",
        f"Subscription/{record.subscription}",
    )
    for ref in hidden:
        assert _status(anonymous, app, ref) == 404, ref
    assert _found(anonymous, app, "/fhir/Task") == {f"Task/{record.task_mine}"}
    assert not _found(anonymous, app, "/fhir/Device")
    assert not _found(anonymous, app, "/fhir/Bundle")
    everything = _found(anonymous, app, "/fhir", _type="Task,Device,Bundle,Subscription,Organization")
    assert f"Task/{record.task_mine}" in everything and f"Organization/{record.shared['Organization']}" in everything
    assert not set(hidden) & everything


def test_its_own_task_is_readable(anonymous, app, record) -> None:
    assert _status(anonymous, app, f"Task/{record.task_mine}") == 200


def test_the_institution_still_reads_all_it_owns(anonymous, record) -> None:
    for ref in (f"Task/{record.task_other}", f"Device/{record.device_other}", f"Bundle/{record.bundle}"):
        assert _status(anonymous, record.writer, ref) == 200, ref


def test_meta_of_a_hidden_resource_is_not_found(anonymous, backend, app, record) -> None:
    assert anonymous.get(f"/fhir/Observation/{record.other_obs}/$meta", headers=app).status_code == 404
    stranger = scoped(backend, "system/*.rs", organization=OTHER_INSTITUTION)
    assert anonymous.get(f"/fhir/Observation/{record.other_obs}/$meta", headers=stranger).status_code == 404
    owner = anonymous.get(f"/fhir/Observation/{record.other_obs}/$meta", headers=record.writer)
    assert owner.status_code == 200, owner.text


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("match", {"name": "resource", "resource": {"resourceType": "Patient", "name": [{"family": "李"}]}}),
        ("ihe-pix", {"name": "sourceIdentifier", "valueString": "urn:oid:2.16.156.10011.1.3|450403195205200011"}),
    ],
)
def test_identity_lookups_across_residents_are_refused(anonymous, app, record, operation, body) -> None:
    parameters = {"resourceType": "Parameters", "parameter": [body]}
    refused = anonymous.post(f"/fhir/Patient/${operation}", json=parameters, headers=app)
    assert refused.status_code == 403, refused.text
    assert "a resident's app reads its own resident's record only" in refused.json()["issue"][0]["diagnostics"]
    allowed = anonymous.post(f"/fhir/Patient/${operation}", json=parameters, headers=record.writer)
    assert "resident's app" not in allowed.text
