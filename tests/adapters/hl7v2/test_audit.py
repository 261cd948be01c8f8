"""Every HL7 v2 message applied (or refused) leaves one AuditEvent of the adapter in the chain, on both backends."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from adapters.hl7v2.apply import receive_message
from ehr_archive.mpi import install_mpi
from fhir_server.access.inprocess import HL7V2_AGENT, flush_in_process_audit
from fhir_server.api.app import patient_identifier_check
from fhir_server.audit import verify
from fhir_server.service import FhirService
from fhir_server.storage import unit_of_work
from fhir_server.storage.tables import audit_log
from tests.adapters.hl7v2.samples import wire_variant

FACILITY_ORGANIZATION = "Organization/450400-001"


@pytest.fixture(scope="module")
def service() -> FhirService:
    service = FhirService(checks=[patient_identifier_check])
    install_mpi(service)
    return service


def _events(engine, control_id: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    flush_in_process_audit(engine)
    with unit_of_work(engine, write=False) as conn:
        rows = conn.execute(select(audit_log).where(audit_log.c.client_id == HL7V2_AGENT)).all()
    events = [orjson.loads(row.event) | {"_row": dict(row._mapping)} for row in rows]
    return [e for e in events if control_id in e["outcomeDesc"]]


def test_an_applied_message_is_audited_as_the_adapter_for_its_facility(engine, service) -> None:
    control_id = f"T-{uuid.uuid4().hex[:16]}"
    outcome = receive_message(engine, service, wire_variant("adt_a01.hl7", control_id))
    assert outcome.ack_code == "AA"

    [event] = _events(engine, control_id)
    assert event["outcome"] == "0"
    assert event["outcomeDesc"].startswith(f"200 HL7 ADT^A01 {control_id}")
    assert event["subtype"][0]["code"] == "transaction"
    agents = {a["type"]["coding"][0]["code"]: a for a in event["agent"]}
    assert agents["110153"]["who"]["identifier"]["value"] == HL7V2_AGENT
    assert agents["PROV"]["who"]["reference"] == FACILITY_ORGANIZATION
    assert event["_row"]["organization"] == FACILITY_ORGANIZATION
    written = [e["what"]["reference"] for e in event["entity"] if e["role"]["code"] == "4"]
    residents = [e["what"]["reference"] for e in event["entity"] if e["role"]["code"] == "1"]
    assert any(ref.startswith("Encounter/") for ref in written)
    assert residents and all(ref.startswith("Patient/") for ref in residents)


def test_a_resend_is_audited_without_writes(engine, service) -> None:
    control_id = f"T-{uuid.uuid4().hex[:16]}"
    raw = wire_variant("adt_a01.hl7", control_id)
    assert receive_message(engine, service, raw).ack_code == "AA"
    assert receive_message(engine, service, raw).duplicate

    first, again = _events(engine, control_id)
    assert first["entity"] and "entity" not in again
    assert again["outcome"] == "0"


def test_a_refused_message_is_audited_as_refused_with_nothing_written(engine, service) -> None:
    control_id = f"T-{uuid.uuid4().hex[:16]}"
    raw = wire_variant("adt_a01.hl7", control_id).replace(b"\rPID|", b"\rXXX|")
    outcome = receive_message(engine, service, raw)
    assert outcome.ack_code in ("AE", "AR")

    [event] = _events(engine, control_id)
    assert event["outcome"] in ("4", "8")
    assert "entity" not in event


def test_the_chain_still_verifies(engine, service) -> None:
    receive_message(engine, service, wire_variant("adt_a01.hl7", f"T-{uuid.uuid4().hex[:16]}"))
    flush_in_process_audit(engine)
    checked, _, broken = verify(engine)
    assert broken is None and checked > 0
