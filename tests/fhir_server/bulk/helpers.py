"""A small Wuzhou data set for export tests, an export client that polls, and per-type counts."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any

import orjson
from sqlalchemy import Engine, func, select

from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import resources

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def dataset(tag: str) -> dict[str, Any]:
    """A transaction: an institution, three residents, vitals and conditions, a Group of two of them."""
    org = f"urn:uuid:{uuid.uuid4()}"
    patients = [f"urn:uuid:{uuid.uuid4()}" for _ in range(3)]
    entries: list[dict[str, Any]] = [
        _post(org, {"resourceType": "Organization", "name": "梧州市红十字会医院", "meta": _tag(tag)}),
    ]
    for n, (url, family) in enumerate(zip(patients, ("陈", "李", "黄"), strict=True)):
        entries.append(
            _post(
                url,
                {
                    "resourceType": "Patient",
                    "meta": _tag(tag),
                    "name": [{"family": family, "given": ["建国"]}],
                    "managingOrganization": {"reference": org},
                },
            )
        )
        for value in range(n + 2):
            entries.append(_post(None, _heart_rate(url, 60 + value, tag)))
        entries.append(
            _post(
                None,
                {
                    "resourceType": "Condition",
                    "meta": _tag(tag),
                    "subject": {"reference": url},
                    "code": {"text": "高血压"},
                },
            )
        )
    group = {
        "resourceType": "Group",
        "meta": _tag(tag),
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": patients[0]}}, {"entity": {"reference": patients[2]}}],
    }
    entries.append(_post(None, group))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _tag(tag: str) -> dict[str, Any]:
    return {"tag": [{"system": "urn:test:bulk", "code": tag}]}


def _heart_rate(subject: str, value: int, tag: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "meta": _tag(tag),
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": value, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    }


def _post(full_url: str | None, resource: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def kickoff(client: Any, path: str, **params: str) -> str:
    response = client.get(path, params=params, headers=ASYNC)
    assert response.status_code == 202, response.text
    return response.headers["Content-Location"].split("/fhir", 1)[1]


def wait_complete(client: Any, status: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/fhir{status}")
        if response.status_code == 200:
            return response.json()
        assert response.status_code == 202, response.text
        assert response.headers["X-Progress"]
        assert response.headers["Retry-After"].isdigit()
        if time.monotonic() > deadline:
            raise AssertionError(f"export {status} not complete: {response.headers['X-Progress']}")
        time.sleep(0.05)


def download(client: Any, manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every output file, parsed, by type; checks each file's count and content type."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for output in manifest["output"]:
        response = client.get("/fhir" + output["url"].split("/fhir", 1)[1])
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [orjson.loads(line) for line in response.content.splitlines()]
        assert len(lines) == output["count"]
        assert all(r["resourceType"] == output["type"] for r in lines)
        by_type.setdefault(output["type"], []).extend(lines)
    return by_type


def stored_counts(engine: Engine) -> Counter[str]:
    """Current (not deleted) resources per type."""
    with unit_of_work(engine, write=False) as conn:
        rows = conn.execute(
            select(resources.c.res_type, func.count())
            .where(resources.c.deleted.is_(False))
            .group_by(resources.c.res_type)
        )
        return Counter({res_type: count for res_type, count in rows})
