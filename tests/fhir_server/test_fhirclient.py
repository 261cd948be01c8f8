"""The SMART on FHIR Python client (fhirclient) against a running server: create, read, update, delete, history."""

from __future__ import annotations

import pytest
from fhirclient import client as smart_client
from fhirclient.models.bundle import Bundle
from fhirclient.models.humanname import HumanName
from fhirclient.models.patient import Patient
from requests import HTTPError


def test_fhirclient_crud_and_history(live_server):
    smart = smart_client.FHIRClient(settings={"app_id": "hie-tests", "api_base": live_server.base_url})
    server = smart.server
    server.session.headers.update(live_server.headers)

    patient = Patient({"gender": "female", "birthDate": "1965-11-23"})
    name = HumanName()
    name.family, name.given = "李", ["秀英"]
    patient.name = [name]
    created = patient.create(server)
    pid = created["id"]
    assert created["meta"]["versionId"] == "1"

    read = Patient.read(pid, server)
    assert read.name[0].family == "李"
    assert read.gender == "female"

    read.gender = "other"
    updated = read.update(server)
    assert updated["meta"]["versionId"] == "2"
    assert Patient.read(pid, server).gender == "other"

    history = Bundle(server.request_json(f"Patient/{pid}/_history"))
    assert history.type == "history"
    assert [e.request.method for e in history.entry] == ["PUT", "POST"]

    Patient.read(pid, server).delete(server)
    with pytest.raises(HTTPError) as raised:
        Patient.read(pid, server)
    assert raised.value.response.status_code == 410
