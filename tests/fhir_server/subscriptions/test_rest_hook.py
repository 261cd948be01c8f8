"""Rest-hook Subscriptions on both backends: matching, payloads, signatures, order, retries, error, $resend."""

from __future__ import annotations

import itertools
import time
import uuid

import orjson

from fhir_server.subscriptions.notify import EVENT_HEADER, SIGNATURE_HEADER, verify
from tests.fhir_server.subscriptions.conftest import BASE, subscribe, subscription, wait_status
from tests.fhir_server.subscriptions.receiver import Receiver


def patient(system: str, value: str, family: str = "陈") -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": system, "value": value}], "name": [{"family": family}]}


def test_signed_full_resource_notifications_arrive_in_commit_order(client, receiver: Receiver) -> None:
    system = f"urn:test:{uuid.uuid4().hex}"
    sub_id = subscribe(client, subscription(f"Patient?identifier={system}|", receiver.url, secret="s3cret"))
    created = client.post("/fhir/Patient", json=patient(system, "1")).json()
    for family in ("李", "黄", "梁", "莫"):
        created["name"] = [{"family": family}]
        assert client.put(f"/fhir/Patient/{created['id']}", json=created).status_code == 200
    other = client.post("/fhir/Patient", json=patient(system, "2")).json()
    client.post("/fhir/Patient", json=patient("urn:test:elsewhere", "3"))  # does not match
    received = receiver.wait_for(6)
    time.sleep(0.3)
    assert len(receiver.requests) == 6
    events = [r.headers[EVENT_HEADER.lower()] for r in received]
    pid = created["id"]
    assert events == [f"Patient/{pid}/_history/{v}" for v in range(1, 6)] + [f"Patient/{other['id']}/_history/1"]
    for request, event in zip(received, events, strict=True):
        assert request.method == "PUT"
        assert request.path == f"/hook/{event.rsplit('/_history', 1)[0]}"
        assert request.headers["content-type"] == "application/fhir+json"
        body = orjson.loads(request.body)
        assert f"{body['resourceType']}/{body['id']}/_history/{body['meta']['versionId']}" == event
        now = int(time.time())
        assert verify("s3cret", request.headers[SIGNATURE_HEADER.lower()], event, request.body, now=now)
        assert not verify("other", request.headers[SIGNATURE_HEADER.lower()], event, request.body, now=now)
        assert not verify("s3cret", request.headers[SIGNATURE_HEADER.lower()], event, request.body + b" ", now=now)
    assert [orjson.loads(r.body)["name"][0]["family"] for r in received[:5]] == ["陈", "李", "黄", "梁", "莫"]
    client.delete(f"/fhir/Subscription/{sub_id}")


def test_no_payload_is_an_empty_post_with_the_custom_headers(client, receiver: Receiver) -> None:
    system = f"urn:test:{uuid.uuid4().hex}"
    resource = subscription(
        f"Patient?identifier={system}|", receiver.url, payload=None, headers=["Authorization: Bearer wuzhou-token-1"]
    )
    sub_id = subscribe(client, resource)
    created = client.post("/fhir/Patient", json=patient(system, "1")).json()
    (request,) = receiver.wait_for(1)
    assert (request.method, request.path, request.body) == ("POST", "/hook", b"")
    assert request.headers["authorization"] == "Bearer wuzhou-token-1"
    assert request.headers[EVENT_HEADER.lower()] == f"Patient/{created['id']}/_history/1"
    assert request.headers["x-hie-subscription"] == f"Subscription/{sub_id}"
    assert SIGNATURE_HEADER.lower() not in request.headers  # no secret here and no server-wide key
    client.delete(f"/fhir/Subscription/{sub_id}")


def test_id_only_payload_names_the_version_without_its_content(client, receiver: Receiver) -> None:
    system = f"urn:test:{uuid.uuid4().hex}"
    sub_id = subscribe(client, subscription(f"Patient?identifier={system}|", receiver.url, content="id-only"))
    created = client.post("/fhir/Patient", json=patient(system, "1")).json()
    (request,) = receiver.wait_for(1)
    assert (request.method, request.path) == ("POST", "/hook")
    bundle = orjson.loads(request.body)
    assert bundle["type"] == "history"
    (entry,) = bundle["entry"]
    assert entry["fullUrl"] == f"{BASE}/Patient/{created['id']}"
    assert entry["response"]["etag"] == 'W/"1"'
    assert "resource" not in entry
    client.delete(f"/fhir/Subscription/{sub_id}")


def test_criteria_use_the_search_engine(client, receiver: Receiver) -> None:
    """Chained criteria: only Observations of patients with the right identifier notify."""
    system = f"urn:test:{uuid.uuid4().hex}"
    criteria = f"Observation?code=http://loinc.org|8867-4&subject:Patient.identifier={system}|"
    sub_id = subscribe(client, subscription(criteria, receiver.url, payload=None))
    ours = client.post("/fhir/Patient", json=patient(system, "1")).json()["id"]
    theirs = client.post("/fhir/Patient", json=patient("urn:test:other", "2")).json()["id"]

    def observation(subject: str, code: str) -> dict:
        return {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{subject}"},
        }

    client.post("/fhir/Observation", json=observation(theirs, "8867-4"))
    client.post("/fhir/Observation", json=observation(ours, "8310-5"))
    wanted = client.post("/fhir/Observation", json=observation(ours, "8867-4")).json()
    client.delete(f"/fhir/Observation/{wanted['id']}")  # a deletion does not match any criteria
    (request,) = receiver.wait_for(1)
    time.sleep(0.5)
    assert len(receiver.requests) == 1
    assert request.headers[EVENT_HEADER.lower()] == f"Observation/{wanted['id']}/_history/1"
    client.delete(f"/fhir/Subscription/{sub_id}")


def test_failures_are_retried_with_backoff_then_the_subscription_is_in_error(client) -> None:
    receiver = Receiver(statuses=[503, 503, 503])
    try:
        system = f"urn:test:{uuid.uuid4().hex}"
        sub_id = subscribe(client, subscription(f"Patient?identifier={system}|", receiver.url))
        client.post("/fhir/Patient", json=patient(system, "1"))
        failed = wait_status(client, sub_id, "error")
        attempts = receiver.wait_for(3)
        assert "failed 3 times" in failed["error"] and "HTTP 503" in failed["error"]
        gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
        assert gaps[0] >= 0.09 and gaps[1] >= 0.19  # base 0.1 s, doubled each time
        client.post("/fhir/Patient", json=patient(system, "2"))
        time.sleep(0.5)
        assert len(receiver.requests) == 3  # a Subscription in error is not notified
        failed["status"] = "requested"  # the subscriber fixed the endpoint and asks again
        del failed["error"]
        assert client.put(f"/fhir/Subscription/{sub_id}", json=failed).status_code == 200
        wait_status(client, sub_id, "active")
        client.post("/fhir/Patient", json=patient(system, "3"))
        receiver.wait_for(4)
        client.delete(f"/fhir/Subscription/{sub_id}")
    finally:
        receiver.close()


def test_resend_replays_a_time_window(client, receiver: Receiver) -> None:
    system = f"urn:test:{uuid.uuid4().hex}"
    sub_id = subscribe(client, subscription(f"Patient?identifier={system}|", receiver.url, payload=None))
    start = time.time()
    ids = [client.post("/fhir/Patient", json=patient(system, str(n))).json()["id"] for n in range(3)]
    first = receiver.wait_for(3)
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start - 1)) + "Z"
    response = client.post(f"/fhir/Subscription/{sub_id}/$resend", params={"since": since})
    assert response.status_code == 200, response.text
    assert "3 notification(s)" in response.json()["issue"][0]["diagnostics"]
    again = receiver.wait_for(6)[3:]
    events = [f"Patient/{i}/_history/1" for i in ids]
    assert [r.headers[EVENT_HEADER.lower()] for r in first] == events
    assert [r.headers[EVENT_HEADER.lower()] for r in again] == events
    missing = client.post("/fhir/Subscription/nope/$resend", params={"since": since})
    assert missing.status_code == 404
    assert client.post(f"/fhir/Subscription/{sub_id}/$resend").status_code == 400
    client.delete(f"/fhir/Subscription/{sub_id}")


def test_subscriptions_this_server_cannot_serve_are_refused(client) -> None:
    cases = {
        "Patient?nonsense=1": ("rest-hook", "http://127.0.0.1:9/hook", "nonsense"),
        "Patient?_count=3": ("rest-hook", "http://127.0.0.1:9/hook", "_count"),
        "Nope?name=x": ("rest-hook", "http://127.0.0.1:9/hook", "resource type"),
        "Patient?name=x": ("email", "mailto:a@b.cn", "email"),
        "Patient?family=x": ("rest-hook", None, "endpoint"),
    }
    refused = client.post(
        "/fhir/Subscription",
        json=subscription("Patient?family=x", "http://127.0.0.1:9/hook", headers=["X-Region: 梧州"]),
    )
    assert refused.status_code == 400 and "ASCII" in refused.text
    for criteria, (channel, endpoint, hint) in cases.items():
        response = client.post("/fhir/Subscription", json=subscription(criteria, endpoint, channel=channel))
        assert response.status_code == 400, (criteria, response.text)
        assert hint in response.text, response.text
