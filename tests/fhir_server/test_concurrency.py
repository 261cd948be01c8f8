"""Real concurrent clients over HTTP: no lost update, no duplicate conditional create (HAPI #3141 done right)."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

CLIENTS = 12


def run_together(count: int, action):  # type: ignore[no-untyped-def]
    """Start ``count`` calls of ``action(i)`` at the same moment, each on its own connection."""
    barrier = threading.Barrier(count)

    def call(i: int):  # type: ignore[no-untyped-def]
        barrier.wait()
        return action(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(call, range(count)))


def test_concurrent_updates_with_same_if_match_one_wins(live_server):
    base = live_server.base_url
    created = live_server.http.post(f"{base}/Patient", json={"resourceType": "Patient", "gender": "male"}).json()
    pid = created["id"]

    def update(i: int) -> int:
        body = {**created, "name": [{"text": f"writer {i}"}]}
        return live_server.http.put(
            f"{base}/Patient/{pid}", json=body, headers={"If-Match": 'W/"1"'}, timeout=60
        ).status_code

    statuses = run_together(CLIENTS, update)
    assert sorted(statuses) == [200] + [412] * (CLIENTS - 1)
    current = live_server.http.get(f"{base}/Patient/{pid}").json()
    assert current["meta"]["versionId"] == "2"
    history = live_server.http.get(f"{base}/Patient/{pid}/_history").json()
    assert history["total"] == 2


def test_concurrent_updates_without_if_match_keep_every_version(live_server):
    base = live_server.base_url
    created = live_server.http.post(f"{base}/Patient", json={"resourceType": "Patient"}).json()
    pid = created["id"]

    def update(i: int) -> int:
        body = {**created, "name": [{"text": f"writer {i}"}]}
        return live_server.http.put(f"{base}/Patient/{pid}", json=body, timeout=60).status_code

    assert run_together(CLIENTS, update) == [200] * CLIENTS
    history = live_server.http.get(f"{base}/Patient/{pid}/_history", params={"_count": 100}).json()
    versions = sorted(int(e["resource"]["meta"]["versionId"]) for e in history["entry"])
    assert versions == list(range(1, CLIENTS + 2))
    writers = {e["resource"]["name"][0]["text"] for e in history["entry"] if "name" in e["resource"]}
    assert writers == {f"writer {i}" for i in range(CLIENTS)}


def test_concurrent_conditional_creates_make_exactly_one(live_server):
    base = live_server.base_url
    value = uuid.uuid4().hex
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:test:race", "value": value}]}

    def create(_i: int) -> tuple[int, str]:
        response = live_server.http.post(
            f"{base}/Patient", json=patient, headers={"If-None-Exist": f"identifier=urn:test:race|{value}"}, timeout=60
        )
        return response.status_code, response.json()["id"]

    results = run_together(CLIENTS, create)
    assert sorted(status for status, _ in results) == [200] * (CLIENTS - 1) + [201]
    assert len({pid for _, pid in results}) == 1
    history = live_server.http.get(f"{base}/Patient/_history", params={"_count": 1000}).json()
    matching = [e for e in history["entry"] if e.get("resource", {}).get("identifier", [{}])[0].get("value") == value]
    assert len(matching) == 1


def test_concurrent_update_as_create_of_one_new_id(live_server):
    base = live_server.base_url
    pid = f"race-{uuid.uuid4().hex[:12]}"

    def put(_i: int) -> int:
        return live_server.http.put(
            f"{base}/Patient/{pid}", json={"resourceType": "Patient", "id": pid}, timeout=60
        ).status_code

    statuses = run_together(CLIENTS, put)
    assert sorted(statuses) == [200] * (CLIENTS - 1) + [201]
    history = live_server.http.get(f"{base}/Patient/{pid}/_history", params={"_count": 100}).json()
    assert history["total"] == CLIENTS
