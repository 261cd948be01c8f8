"""A FHIR client library (fhirpy, async) searches, pages and includes against the server on a real port."""

from __future__ import annotations

import asyncio
import uuid

from fhirpy import AsyncFHIRClient


async def scenario(base_url: str, authorization: str) -> None:
    client = AsyncFHIRClient(base_url, authorization=authorization)
    marker = uuid.uuid4().hex
    organization = client.resource("Organization", name=f"梧州市人民医院 {marker}")
    await organization.save()
    patients = []
    for i, (family, given) in enumerate([("张", "三"), ("李", "四"), ("王", "五"), ("赵", "六"), ("钱", "七")]):
        patient = client.resource(
            "Patient",
            identifier=[{"system": "urn:test:fhirpy", "value": f"{marker}-{i}"}],
            name=[{"family": family, "given": [given]}],
            birthDate=f"198{i}-01-01",
            managingOrganization={"reference": f"Organization/{organization.id}"},
        )
        await patient.save()
        patients.append(patient)
        observation = client.resource(
            "Observation",
            status="final",
            code={"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            subject={"reference": f"Patient/{patient.id}"},
            valueQuantity={"value": 110 + i * 10, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
        )
        await observation.save()

    any_of_mine = ",".join(f"urn:test:fhirpy|{marker}-{i}" for i in range(5))  # comma: OR (a list would AND)
    mine = client.resources("Patient").search(identifier=any_of_mine)
    everyone = await mine.sort("-birthdate").limit(2).fetch_all()  # follows the next links, two per page
    assert [p["birthDate"] for p in everyone] == [f"198{i}-01-01" for i in reversed(range(5))]

    found = await client.resources("Patient").search(**{"name-pinyin": "zs", "organization": organization.id}).fetch()
    assert [p.id for p in found] == [patients[0].id]

    bundle = await (
        client.resources("Observation")
        .search(**{"subject:Patient.organization.name": f"梧州市人民医院 {marker}", "value-quantity": "gt125"})
        .include("Observation", "subject")
        .sort("value-quantity")
        .fetch_raw()
    )
    matches = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "match"]
    included = {e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "include"}
    assert [m["valueQuantity"]["value"] for m in matches] == [130, 140, 150]
    assert included == {p.id for p in patients[2:]}
    assert bundle["total"] == 3

    with_observations = await (
        client.resources("Patient")
        .has("Observation", "subject", **{"value-quantity": "ge140"})
        .search(identifier=any_of_mine)
        .fetch_all()
    )
    assert {p.id for p in with_observations} == {patients[3].id, patients[4].id}

    lenient = AsyncFHIRClient(base_url, authorization=authorization, extra_headers={"Prefer": "handling=lenient"})
    # fhirpy's count() adds a vendor parameter (_totalMethod); lenient handling ignores it.
    assert await lenient.resources("Patient").search(identifier=f"urn:test:fhirpy|{marker}-0").count() == 1


def test_fhirpy_search_paging_and_includes(live_server):
    asyncio.run(scenario(live_server.base_url, live_server.headers["Authorization"]))
