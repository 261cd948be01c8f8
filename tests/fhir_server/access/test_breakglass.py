"""Break-glass rules on a request: who may, what must be stated, what is left for the audit trail."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from starlette.requests import Request

from fhir_server.access import ordinary_access, read_access
from fhir_server.access.breakglass import emergency_services, may_break_glass
from fhir_server.auth.principal import SYSTEM, Principal
from fhir_server.errors import FhirError

EMERGENCY = "Organization/em-120"
AMBULANCE = Principal(client_id="dispatch", organization=EMERGENCY, scopes=frozenset({"system/*.rs"}))
HOSPITAL = Principal(client_id="his", organization="Organization/hosp-a", scopes=frozenset({"system/*.cruds"}))


def request(principal: Principal, reason: str | None = None) -> Request:
    settings = SimpleNamespace(break_glass_organizations=f"{EMERGENCY}, Organization/call-12349")
    app = SimpleNamespace(state=SimpleNamespace(context=SimpleNamespace(settings=settings)))
    headers = [] if reason is None else [(b"x-break-glass-reason", reason.encode())]
    scope = {"type": "http", "method": "GET", "path": "/fhir/Patient/1", "headers": headers, "app": app}
    scope["state"] = {"principal": principal}
    return Request(scope)


def test_emergency_services_setting() -> None:
    assert emergency_services(" Organization/a ,, Organization/b ") == {"Organization/a", "Organization/b"}
    assert emergency_services("") == frozenset()
    assert may_break_glass(AMBULANCE, {EMERGENCY})
    assert not may_break_glass(HOSPITAL, {EMERGENCY})
    assert not may_break_glass(Principal(client_id="x", organization=None), {EMERGENCY})


def test_granted_break_glass_skips_consent_and_is_marked_for_the_audit() -> None:
    call = request(AMBULANCE, "  120 call 42: unconscious  ")
    access = read_access(call)
    assert access.break_glass
    assert access.restriction is None
    assert call.state.break_glass is True
    assert call.state.break_glass_reason == "120 call 42: unconscious"


def test_reason_parsed_by_authentication_is_used() -> None:
    call = request(Principal(**{**AMBULANCE.__dict__, "break_glass_reason": "fall alarm 12349-7"}))
    assert read_access(call).break_glass
    assert call.state.break_glass_reason == "fall alarm 12349-7"


def test_an_empty_reason_is_refused() -> None:
    with pytest.raises(FhirError) as refused:
        read_access(request(AMBULANCE, " "))
    assert refused.value.kind == "forbidden"
    assert "X-Break-Glass-Reason" in refused.value.diagnostics


def test_other_institutions_may_not_break_glass() -> None:
    call = request(HOSPITAL, "curious")
    with pytest.raises(FhirError) as refused:
        read_access(call)
    assert refused.value.kind == "forbidden"
    assert not getattr(call.state, "break_glass", False)


def test_without_the_header_an_emergency_service_reads_under_consent() -> None:
    call = request(AMBULANCE)
    access = read_access(call)
    assert not access.break_glass
    assert access.restriction is not None
    assert not getattr(call.state, "break_glass", False)


def test_writes_are_never_break_glass() -> None:
    call = request(AMBULANCE, "emergency")
    access = ordinary_access(call)
    assert not access.break_glass
    assert access.restriction is not None
    assert not getattr(call.state, "break_glass", False)


def test_the_exchange_itself_is_unrestricted() -> None:
    access = read_access(request(SYSTEM, "anything"))
    assert access.restriction is None
    assert not access.break_glass
