"""The AuditEvent of an HL7 v2 message names the network address it came from (the MLLP peer), on both backends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.hl7v2.apply import receive_message
from fhir_server.service import FhirService
from tests.adapters.hl7v2.samples import wire_variant
from tests.adapters.hl7v2.test_audit import _events, service  # noqa: F401
from tests.adapters.hl7v2.test_listener import ListenerThread, _send


@pytest.fixture(scope="module")
def listener(engine) -> Iterator[ListenerThread]:  # type: ignore[no-untyped-def]
    running = ListenerThread(engine)
    yield running
    running.stop()


def _requestor(event: dict[str, Any]) -> dict[str, Any]:
    return next(agent for agent in event["agent"] if agent["type"]["coding"][0]["code"] == "110153")


def test_a_message_received_over_mllp_names_its_peer(engine, listener) -> None:  # type: ignore[no-untyped-def]
    control_id = f"P-{uuid.uuid4().hex[:16]}"
    [(code, _)] = _send(listener.port, [wire_variant("adt_a01.hl7", control_id)])
    assert code == "AA"
    [event] = _events(engine, control_id)
    assert _requestor(event)["network"] == {"address": "127.0.0.1", "type": "2"}


def test_the_address_given_is_recorded(engine, service: FhirService) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    control_id = f"P-{uuid.uuid4().hex[:16]}"
    receive_message(engine, service, wire_variant("adt_a01.hl7", control_id), peer="10.45.0.17")
    [event] = _events(engine, control_id)
    assert _requestor(event)["network"] == {"address": "10.45.0.17", "type": "2"}


def test_work_from_no_network_has_no_address(engine, service: FhirService) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    control_id = f"P-{uuid.uuid4().hex[:16]}"
    receive_message(engine, service, wire_variant("adt_a01.hl7", control_id))  # a replay from the command line
    [event] = _events(engine, control_id)
    assert "network" not in _requestor(event)
