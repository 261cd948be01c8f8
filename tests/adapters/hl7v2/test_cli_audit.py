"""Reading a received HL7 v2 message at the console (``hie hl7 show``) is audited, on both backends: one event of
the CLI naming the full command, the message and the records the message wrote (and so its resident)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy import select

from adapters.hl7v2.apply import receive_message
from fhir_server.access.inprocess import CLI_AGENT, flush_in_process_audit
from fhir_server.storage import unit_of_work
from fhir_server.storage.tables import audit_log
from tests.adapters.hl7v2.samples import wire_variant
from tests.adapters.hl7v2.test_audit import service  # noqa: F401
from tests.adapters.hl7v2.test_cli import dead_merge, hie  # noqa: F401


def cli_events(engine: Any, words: str) -> list[dict[str, Any]]:
    flush_in_process_audit(engine)  # the adapter's events too, written before the test database goes
    with unit_of_work(engine, write=False) as conn:
        rows = conn.execute(select(audit_log.c.event).where(audit_log.c.client_id == CLI_AGENT)).scalars()
        return [event for event in map(orjson.loads, rows) if words in event["outcomeDesc"]]


def test_showing_an_applied_message_lists_its_records_and_resident(engine, service, hie) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    outcome = receive_message(engine, service, wire_variant("adt_a01.hl7", f"SHOW-{uuid.uuid4().hex[:8]}"))
    assert outcome.ack_code == "AA" and outcome.message_id is not None

    result = hie("hl7", "show", str(outcome.message_id))
    assert result.exit_code == 0, result.output

    [event] = cli_events(engine, f"message={outcome.message_id}")
    assert event["subtype"][1]["code"].endswith("hl7 show")
    assert event["outcomeDesc"].endswith(f"hl7 show message={outcome.message_id}")
    residents = [e["what"]["reference"] for e in event["entity"] if e["role"]["code"] == "1"]
    records = [e["what"]["reference"] for e in event["entity"] if e["role"]["code"] == "4"]
    assert residents and all(ref.startswith("Patient/") for ref in residents)
    assert any(ref.startswith("Encounter/") for ref in records)


def test_showing_a_dead_letter_is_audited_without_records(engine, hie, dead_merge) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    message_id, _ = dead_merge
    assert hie("hl7", "show", str(message_id)).exit_code == 0
    [event] = cli_events(engine, f"message={message_id}")
    assert "entity" not in event


def test_an_unknown_message_leaves_no_event(engine, hie) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    assert hie("hl7", "show", "987654321").exit_code == 1
    assert cli_events(engine, "message=987654321") == []


def test_listing_dead_letters_names_the_messages_shown(engine, hie, dead_merge) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    message_id, _ = dead_merge
    assert hie("hl7", "dead-letters").exit_code == 0
    event = cli_events(engine, "hl7 dead-letters messages=")[-1]
    assert str(message_id) in event["outcomeDesc"].rsplit("messages=", 1)[1].split(",")
