"""Fixtures of the MPI tests: the app with the master patient index on, and resident helpers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ehr_archive.identifiers import RESIDENT_ID_SYSTEM, mrn_system, resident_id_check_char
from fhir_server.api.app import create_app
from tests.conftest import auth_headers

FHIR = "application/fhir+json"


@pytest.fixture(scope="module")
def mpi_client(backend) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    settings = backend.settings.model_copy(update={"mpi_enabled": True})
    app = create_app(settings, backend.engine)
    with TestClient(app, base_url="http://testserver", headers=auth_headers(backend)) as client:
        yield client


def resident_id(born: str, sequence: int, *, male: bool = True, region: str = "450403") -> str:
    """A valid GB 11643-1999 number: region, birth date YYYYMMDD, a sequence whose parity gives the sex."""
    serial = sequence * 2 + (1 if male else 0)
    first17 = f"{region}{born}{serial % 1000:03d}"
    return first17 + resident_id_check_char(first17)


def unique_org() -> str:
    return f"org-{uuid.uuid4().hex[:8]}"


def patient(
    org: str,
    mrn: str,
    *,
    family: str = "陈",
    given: str = "建国",
    born: str = "1958-03-12",
    gender: str = "male",
    rid: str | None = None,
    phone: str | None = None,
    district: str | None = "长洲区",
) -> dict[str, Any]:
    identifiers = [{"system": mrn_system(org), "value": mrn}]
    if rid:
        identifiers.append({"system": RESIDENT_ID_SYSTEM, "value": rid})
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": identifiers,
        "name": [{"family": family, "given": [given], "text": family + given}],
        "gender": gender,
        "birthDate": born,
    }
    if phone:
        body["telecom"] = [{"system": "phone", "value": phone}]
    if district:
        body["address"] = [{"use": "home", "city": "梧州市", "district": district, "line": ["新兴二路8号"]}]
    return body
