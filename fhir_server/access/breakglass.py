"""Break-glass: an emergency read beyond the consent rules, by an emergency service, for a stated reason.

A read that states a reason (``X-Break-Glass-Reason``, parsed by authentication into
``Principal.break_glass_reason``) from a client of an institution listed in ``HIE_BREAK_GLASS_ORGANIZATIONS``
(the 12349 centre, the 120 ambulance service) sets the consent filter aside; its scopes still apply. The request
is marked ``request.state.break_glass = True`` and ``request.state.break_glass_reason`` for the audit trail.
A header without a reason, or from any other client, is refused (403) rather than silently ignored. Writes
are never break-glass: requests that write read under the consent rules whatever they send.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from starlette.requests import HTTPConnection

from fhir_server.access.caller import principal_of
from fhir_server.access.codes import BREAK_GLASS_HEADER
from fhir_server.access.filters import Access
from fhir_server.auth.principal import Principal
from fhir_server.errors import FhirError


def emergency_services(setting: str) -> frozenset[str]:
    """``HIE_BREAK_GLASS_ORGANIZATIONS`` (comma-separated ``Organization/{id}``) as a set."""
    return frozenset(part.strip() for part in setting.split(",") if part.strip())


def may_break_glass(principal: Principal, emergency: Collection[str]) -> bool:
    """Whether the caller's institution is one of the emergency services."""
    return principal.organization is not None and principal.organization in emergency


def stated_reason(principal: Principal, headers: Mapping[str, str]) -> str | None:
    """The break-glass reason: the principal's, else the raw header ("" when sent empty); None when not sent."""
    if principal.break_glass_reason is not None:
        return principal.break_glass_reason
    return headers.get(BREAK_GLASS_HEADER)


def check_break_glass(principal: Principal, reason: str | None, emergency: Collection[str]) -> bool:
    """True for a valid emergency read, False for an ordinary one; 403 for a bad attempt, saying what is needed."""
    if reason is None:
        return False
    if not reason.strip():
        raise FhirError(
            "forbidden",
            f"A break-glass read needs a reason: send {BREAK_GLASS_HEADER} with a non-empty text "
            "(the emergency, e.g. the call or case number).",
        )
    if not may_break_glass(principal, emergency):
        raise FhirError(
            "forbidden",
            f"Only emergency services may read beyond a resident's consent; {principal.organization or 'this client'} "
            f"is not one. Send the request without {BREAK_GLASS_HEADER} to read what consent allows.",
        )
    return True


def read_access(request: HTTPConnection) -> Access:
    """The access of a read request, break-glass checked and marked on ``request.state`` for the audit."""
    principal = principal_of(request)
    if principal.exchange:  # nothing is filtered to break through
        return Access.of(principal)
    reason = stated_reason(principal, request.headers)
    if reason is None:  # an ordinary read: no settings to consult
        return Access.of(principal)
    broken = check_break_glass(principal, reason, _emergency_services(request))
    if broken:
        request.state.break_glass = True
        request.state.break_glass_reason = reason.strip()  # type: ignore[union-attr]
    return Access.of(principal, break_glass=broken)


def ordinary_access(request: HTTPConnection) -> Access:
    """The access of a request that writes (a bundle's reads included) or exports in bulk: never break-glass."""
    return Access.of(principal_of(request))


def _emergency_services(request: HTTPConnection) -> frozenset[str]:
    context = getattr(request.app.state, "context", None)
    settings = getattr(context, "settings", None)
    return emergency_services(getattr(settings, "break_glass_organizations", "") or "")
