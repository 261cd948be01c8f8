"""The R4 websocket channel over a real socket: bind, bound, ping on each matching write."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import LiveServer, auth_headers
from tests.fhir_server.subscriptions.conftest import fast_settings, subscription


@pytest.fixture(scope="module")
def server(backend) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    live = LiveServer(fast_settings(backend.settings), backend.engine, auth_headers(backend))
    yield live
    live.stop()


def test_bind_then_ping_for_each_matching_write(server: LiveServer) -> None:
    system = f"urn:test:{uuid.uuid4().hex}"
    with httpx.Client(base_url=server.base_url, timeout=10, headers=server.headers) as http:
        created = http.post("/Subscription", json=subscription(f"Patient?identifier={system}|", channel="websocket"))
        assert created.status_code == 201, created.text
        sub_id = created.json()["id"]
        with connect(
            f"ws://127.0.0.1:{server.port}/fhir/websocket", open_timeout=10, additional_headers=server.headers
        ) as socket:
            socket.send(f"bind {sub_id}")
            assert socket.recv(timeout=10) == f"bound {sub_id}"
            for value, system_used in (("0", system), ("1", system), ("1", "urn:test:x"), ("2", system)):
                resource = {"resourceType": "Patient", "identifier": [{"system": system_used, "value": value}]}
                assert http.post("/Patient", json=resource).status_code == 201
            assert [socket.recv(timeout=10) for _ in range(3)] == [f"ping {sub_id}"] * 3
            with pytest.raises(TimeoutError):
                socket.recv(timeout=0.8)
        http.delete(f"/Subscription/{sub_id}")


def test_binding_what_cannot_be_bound_is_an_error(server: LiveServer) -> None:
    with httpx.Client(base_url=server.base_url, timeout=10, headers=server.headers) as http:
        hook = subscription("Patient?family=x", "http://127.0.0.1:9/hook")
        rest_id = http.post("/Subscription", json=hook).json()["id"]
        with connect(
            f"ws://127.0.0.1:{server.port}/fhir/websocket", open_timeout=10, additional_headers=server.headers
        ) as socket:
            socket.send("bind does-not-exist")
            assert socket.recv(timeout=10).startswith("error Subscription/does-not-exist is not known")
            socket.send(f"bind {rest_id}")
            assert "not websocket" in socket.recv(timeout=10)
            socket.send("hello")
            assert socket.recv(timeout=10).startswith("error send 'bind [subscription id]'")
        http.delete(f"/Subscription/{rest_id}")
