"""The writer takes an event's indexed columns and residents from the access: the same as derived from the event."""

from __future__ import annotations

import pytest

from fhir_server.audit.chain import canonical, event_columns, event_patients
from fhir_server.audit.events import Access, audit_event, recorded_instant
from fhir_server.audit.trail import _entry
from fhir_server.repository import instant

ACCESSES = [
    Access(
        "read", 200, 1_700_000_000_123_456, "GET", "/fhir/Patient/a", resources=["Patient/a"], patients=["Patient/a"]
    ),
    Access(
        "search-type",
        200,
        1_700_000_001_000_000,
        "GET",
        "/fhir/Observation",
        client_id="app",
        organization="Organization/h1",
        user="nurse",
        purpose_of_use="TREAT",
        remote_address="10.0.0.1",
        query="subject=Patient/a",
        resources=["Observation/o1", "Observation/o2"],
        patients=["Patient/a", "Patient/b", "Patient/a"],
    ),
    Access("operation", 403, 0, "POST", "/fhir/$expunge", organization="not-an-organization", operation="$expunge"),
    Access(
        "operation",
        200,
        5,
        "POST",
        "/fhir/Patient/a/$expunge",
        action="D",
        resources=["Patient/a"],
        patients=["Patient/a"],
        erased=True,
        break_glass_reason="emergency",
    ),
    Access("create", 500, 1_600_000_000_000_001, "POST", "/fhir/Patient", client_id="app"),
    Access(
        "search-type",
        200,
        1_700_000_002_000_007,
        "GET",
        '/fhir/Patient/"quoted"\\back\tslash/陈',
        client_id="诊所 app",
        organization="Organization/梧州",
        user='护士 "A"',
        purpose_of_use="ETREAT",
        break_glass_reason='昏迷 "unconscious"\n',
        remote_address="::1",
        query="name=陈&birthdate=ge1950",
        resources=["Patient/陈", "Observation/x"],
        patients=["Patient/陈"],
    ),
    Access("operation", 200, 9, "GET", "/fhir/Patient/a/$everything", operation="$everything", query=""),
    Access("history-type", 404, 10, "GET", "/fhir/Observation/_history", action="R", purpose_of_use="TREAT"),
]


@pytest.mark.parametrize("access", ACCESSES)
def test_entry_columns_and_residents_match_the_event(access: Access) -> None:
    entry = _entry(access)
    derived = event_columns(audit_event(access))
    assert entry.columns == (derived["client_id"], derived["organization"], derived["action"], derived["outcome"])
    assert entry.patients == event_patients(audit_event(access))
    assert entry.parts is not None
    head, tail = entry.parts
    assert head + b'"id":"42",' + tail == canonical({**audit_event(access), "id": "42"})


@pytest.mark.parametrize("micros", [0, 1, 999_999, 1_000_000, 1_700_000_000_123_456, -1, -1_500_000])
def test_recorded_instant_is_the_instant(micros: int) -> None:
    assert recorded_instant(micros) == instant(micros)
