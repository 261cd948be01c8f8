"""Who is calling: the authenticated client, the institution it acts for, its scopes and stated purpose.

The authentication layer puts one ``Principal`` on every request (``request.state.principal``); authorization,
access filters and audit read it from there. Work the exchange does on its own behalf (adapters, background work,
the CLI) runs as ``SYSTEM``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """One caller of the exchange, as established from its access token."""

    client_id: str
    organization: str | None
    """``Organization/{id}`` of the institution the client belongs to; None for the exchange itself, and for a
    client of no institution (which ``exchange`` tells apart)."""
    scopes: frozenset[str] = field(default_factory=frozenset)
    """Granted SMART scopes as strings (v1 ``system/Patient.read`` or v2 ``system/Patient.rs?category=…``)."""
    user: str | None = None
    """The person at the client, when the token names one (``sub`` of a user token)."""
    patient: str | None = None
    """``Patient/{id}`` a resident-facing app acts for (SMART ``patient`` launch context), else None."""
    purpose_of_use: str | None = None
    """HL7 v3 PurposeOfUse code the caller stated (``TREAT``, ``ETREAT`` for break-glass, ``PATRQT`` …)."""
    break_glass_reason: str | None = None
    """The reason given for an emergency read beyond the usual consent rules; None for ordinary access."""
    exchange: bool = False
    """Acts for the exchange itself (a client registered with ``--exchange``): no institution or consent filter
    applies and its writes are not limited by ownership; its scopes still apply unless it is ``unrestricted``."""
    unrestricted: bool = False
    """The exchange with every scope (``system/*.*``), or a deployment with authentication turned off: no scope
    or access filter applies. Always also ``exchange``."""
    remote_address: str | None = None
    """Network address the request came from, for the audit trail."""

    def __post_init__(self) -> None:
        if self.unrestricted and not self.exchange:
            raise ValueError("An unrestricted principal acts for the exchange: set exchange=True as well.")


SYSTEM = Principal(
    client_id="hie", organization=None, scopes=frozenset({"system/*.*"}), exchange=True, unrestricted=True
)
"""The exchange acting on its own behalf."""

ANONYMOUS = Principal(client_id="anonymous", organization=None)
"""A caller without a token, on the few open endpoints (``GET /fhir/metadata``, the token endpoint)."""
