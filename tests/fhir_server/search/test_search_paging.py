"""Keyset paging stays stable while resources are written between and during page fetches (both backends)."""

from __future__ import annotations

import threading
import uuid

import pytest

from fhir_server.search.parameters import default_registry
from fhir_server.service import FhirService
from fhir_server.storage.engine import unit_of_work


def patient(tag: str, family: str) -> dict:
    return {
        "resourceType": "Patient",
        "meta": {"tag": [{"system": "urn:test:paging", "code": tag}]},
        "name": [{"family": family}],
    }


def next_url(bundle: dict) -> str | None:
    url = next((x["url"] for x in bundle["link"] if x["relation"] == "next"), None)
    return url.replace("http://testserver", "") if url else None


def families(bundle: dict) -> list[str]:
    return [e["resource"]["name"][0]["family"] for e in bundle.get("entry", [])]


def test_sorted_pages_neither_repeat_nor_skip_when_writes_happen_between_fetches(client):
    client = client
    tag = uuid.uuid4().hex
    ids = {}
    for i in range(10):
        ids[f"p{i:02d}"] = client.post("/fhir/Patient", json=patient(tag, f"p{i:02d}")).json()["id"]
    page = client.get("/fhir/Patient", params={"_tag": f"urn:test:paging|{tag}", "_sort": "family", "_count": 3}).json()
    seen = families(page)
    assert seen == ["p00", "p01", "p02"] and page["total"] == 10
    # Written after the first page: one sorts before the cursor, one after; one not yet seen is deleted.
    client.post("/fhir/Patient", json=patient(tag, "p015"))
    client.post("/fhir/Patient", json=patient(tag, "p055"))
    client.delete(f"/fhir/Patient/{ids['p07']}")
    while (url := next_url(page)) is not None:
        page = client.get(url).json()
        seen += families(page)
        client.post("/fhir/Patient", json=patient(tag, "p000"))  # always before the cursor
    expected = ["p00", "p01", "p02", "p03", "p04", "p05", "p055", "p06", "p08", "p09"]
    assert seen == expected


def test_default_order_pages_are_stable_under_a_concurrent_writer(client, engine):
    client = client
    tag = uuid.uuid4().hex
    originals = [client.post("/fhir/Patient", json=patient(tag, f"c{i:02d}")).json()["id"] for i in range(12)]
    stop = threading.Event()
    service = FhirService(default_registry())

    def writer() -> None:
        while not stop.is_set():
            with unit_of_work(engine) as conn:
                service.create(conn, patient(tag, "concurrent"))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen: list[str] = []
        page = client.get("/fhir/Patient", params={"_tag": f"urn:test:paging|{tag}", "_count": 4}).json()
        while True:
            seen += [e["resource"]["id"] for e in page.get("entry", [])]
            url = next_url(page)
            if url is None or len(seen) > 60:
                break
            page = client.get(url).json()
    finally:
        stop.set()
        thread.join()
    assert len(seen) == len(set(seen))
    assert seen[:12] == originals


@pytest.mark.parametrize("count", [1, 5])
def test_previous_links_walk_back_over_the_same_pages(client, count):
    client = client
    tag = uuid.uuid4().hex
    for i in range(7):
        client.post("/fhir/Patient", json=patient(tag, f"b{i}"))
    params = {"_tag": f"urn:test:paging|{tag}", "_sort": "-family", "_count": count}
    page = client.get("/fhir/Patient", params=params).json()
    forward = [families(page)]
    while (url := next_url(page)) is not None:
        page = client.get(url).json()
        forward.append(families(page))
    backward = [families(page)]
    while (url := next((x["url"] for x in page["link"] if x["relation"] == "previous"), None)) is not None:
        page = client.get(url.replace("http://testserver", "")).json()
        backward.append(families(page))
    assert [f for p in forward for f in p] == [f"b{i}" for i in reversed(range(7))]
    assert list(reversed(backward)) == forward
