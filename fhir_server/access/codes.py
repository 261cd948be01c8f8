"""The codes and URIs of regional access control, defined once (docs/SECURITY.md, "Institutions and consent")."""

from __future__ import annotations

from urllib.parse import quote

HIE_BASE = "https://hie.wuzhou.gov.cn/fhir/"

CONSENT_CATEGORY_SYSTEM = HIE_BASE + "CodeSystem/consent-category"
REGIONAL_SHARING = "regional-sharing"
"""``Consent.category`` coding (with :data:`CONSENT_CATEGORY_SYSTEM`) of a resident's consent to regional sharing."""

RESOURCE_TYPES_SYSTEM = "http://hl7.org/fhir/resource-types"
"""``Consent.provision.class`` codes naming resource types (R4B consent-content-class)."""

CLIENT_ID_SYSTEM = HIE_BASE + "NamingSystem/client-id"
"""Identifier system of registered API clients (Provenance.agent of the client)."""

BREAK_GLASS_HEADER = "X-Break-Glass-Reason"

DATA_OPERATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PARTICIPATION_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def source_uri(organization: str | None, client_id: str) -> str:
    """``meta.source`` of a write: the institution's URI, with the client as fragment.

    ``https://hie.wuzhou.gov.cn/fhir/Organization/123#his-01``; a client without an institution (a resident's
    app) is ``https://hie.wuzhou.gov.cn/fhir/client#app-9``.
    """
    return f"{HIE_BASE}{organization or 'client'}#{quote(client_id, safe='')}"
