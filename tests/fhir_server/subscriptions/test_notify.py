"""Pure parts of subscriptions: reading a Subscription, the request owed per payload kind, HMAC signatures."""

from __future__ import annotations

import orjson
import pytest

from fhir_server.errors import FhirError
from fhir_server.subscriptions.criteria import check_subscription, parse_subscription, split_criteria
from fhir_server.subscriptions.notify import EVENT_HEADER, SIGNATURE_HEADER, EventRef, notification, signature, verify
from tests.fhir_server.subscriptions.conftest import subscription

EVENT = EventRef("Observation", "obs-1", 3, "PUT", 1_700_000_000_000_000)


def spec(**kwargs):  # type: ignore[no-untyped-def]
    resource = subscription("Observation?code=8867-4", "https://his.example.cn/hook/", **kwargs)
    resource["id"] = "sub-1"
    return parse_subscription(resource)


def test_criteria_split_into_type_and_parameters() -> None:
    assert split_criteria("Observation?code=a|b&subject=Patient/1") == (
        "Observation",
        [("code", "a|b"), ("subject", "Patient/1")],
    )
    assert split_criteria("Patient") == ("Patient", [])


def test_full_resource_is_a_put_of_the_version_to_endpoint_type_id() -> None:
    body = b'{"resourceType":"Observation","id":"obs-1"}'
    note = notification(spec(), EVENT, body, base_url=None, secret=None, now=1)
    assert (note.method, note.url, note.body) == ("PUT", "https://his.example.cn/hook/Observation/obs-1", body)
    assert note.headers["Content-Type"] == "application/fhir+json"
    assert note.headers[EVENT_HEADER] == "Observation/obs-1/_history/3"
    assert SIGNATURE_HEADER not in note.headers
    with pytest.raises(ValueError, match="needs its body"):
        notification(spec(), EVENT, None, base_url=None, secret=None, now=1)


def test_empty_and_id_only_payloads() -> None:
    empty = notification(spec(payload=None), EVENT, None, base_url=None, secret=None, now=1)
    assert (empty.method, empty.url, empty.body) == ("POST", "https://his.example.cn/hook/", b"")
    assert "Content-Type" not in empty.headers
    ids = notification(
        spec(content="id-only"), EVENT, None, base_url="https://hie.wuzhou.gov.cn/fhir", secret=None, now=1
    )
    entry = orjson.loads(ids.body)["entry"][0]
    assert entry["fullUrl"] == "https://hie.wuzhou.gov.cn/fhir/Observation/obs-1"
    assert entry["request"] == {"method": "PUT", "url": "Observation/obs-1"}


def test_signatures_bind_key_time_event_and_body() -> None:
    header = signature("key", 1_700_000_000, "Patient/1/_history/1", b"{}")
    assert header.startswith("t=1700000000,v1=")
    assert verify("key", header, "Patient/1/_history/1", b"{}", now=1_700_000_100)
    assert not verify("key", header, "Patient/1/_history/2", b"{}", now=1_700_000_100)
    assert not verify("key", header, "Patient/1/_history/1", b"{ }", now=1_700_000_100)
    assert not verify("yek", header, "Patient/1/_history/1", b"{}", now=1_700_000_100)
    assert not verify("key", header, "Patient/1/_history/1", b"{}", now=1_700_001_000)  # too old: a replay
    assert not verify("key", "garbage", "Patient/1/_history/1", b"{}", now=1_700_000_000)
    note = notification(spec(secret="per-sub"), EVENT, b"{}", base_url=None, secret="per-sub", now=1_700_000_000)
    assert verify("per-sub", note.headers[SIGNATURE_HEADER], EVENT.key, b"{}", now=1_700_000_000)


def test_subscription_reading_refuses_what_cannot_be_served() -> None:
    assert check_subscription({"resourceType": "Patient"}) == []
    assert check_subscription(subscription("Patient?family=Li", "http://127.0.0.1/hook")) == []
    with pytest.raises(FhirError, match="payload"):
        parse_subscription(subscription("Patient", "http://h/hook", payload="application/fhir+xml"))
    with pytest.raises(FhirError, match="payload content"):
        parse_subscription(subscription("Patient", "http://h/hook", content="everything"))
    with pytest.raises(FhirError, match="Name: value"):
        parse_subscription(subscription("Patient", "http://h/hook", headers=["no colon"]))
    with pytest.raises(FhirError, match="http"):
        parse_subscription(subscription("Patient", "ftp://h/hook"))
    websocket = parse_subscription(subscription("Patient", channel="websocket", payload=None))
    assert (websocket.channel, websocket.endpoint, websocket.content) == ("websocket", None, "empty")
    ended = parse_subscription({**subscription("Patient", "http://h/hook"), "end": "2020-01-01T00:00:00Z"})
    assert ended.end is not None and ended.end < 1_700_000_000_000_000
