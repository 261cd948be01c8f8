"""Who may change an existing resource: the institution that owns it (or anyone its scopes allow, for the exchange's).

A before-write hook of the FHIR service (``FhirService.prepare_write``), so every client write path — update,
patch, delete, their conditional forms and Bundle entries — is checked. Another institution's resource is
refused with 403, whether or not consent lets the caller read it (consent shares reading, not writing), with the
same words either way. Resources of the exchange itself (NULL owner: HL7 v2 feeds, imports) may be changed by any
client its scopes allow. The exchange's own work and its clients (``Principal.exchange``) change any resource
their scopes allow.

A client of no institution and no resident may not create or update a Subscription: the Subscription would
have no owner, be taken for the exchange's own and match every write, whatever its client may read. Any other
client writes a Subscription only for a search its scopes allow: its criteria's type read and searched by them,
and, where those scopes are constrained (``system/Observation.rs?category=laboratory``), the criteria carrying one
of the constraints, so that every notification is of something the client could have found itself. An
institution's Subscription is further matched under that institution's access (its own records, consent); the
exchange's under none.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from fhir_server.access.caller import acting_principal
from fhir_server.auth.principal import Principal
from fhir_server.auth.scopes import grants_for
from fhir_server.errors import FhirError
from fhir_server.storage.tables import resources
from fhir_server.subscriptions.criteria import split_criteria


def guard_write(conn: Connection, res_type: str, res_id: str, _resource: dict[str, Any] | None) -> None:
    """Refuse a change by a client to a resource another institution owns."""
    principal = acting_principal()
    if principal.unrestricted:
        return
    if res_type == "Subscription" and _resource is not None:
        _guard_subscription(principal, res_id, _resource)
    if principal.exchange:
        return
    owner = conn.execute(
        select(resources.c.owner_org).where(resources.c.res_type == res_type, resources.c.res_id == res_id)
    ).first()
    if owner is None or owner.owner_org is None or owner.owner_org == principal.organization:
        return
    raise FhirError(
        "forbidden",
        f"{res_type}/{res_id} is another institution's record: an institution changes only its own records "
        "(write a new resource, or ask the owner to amend it).",
    )


def _guard_subscription(principal: Principal, res_id: str, resource: dict[str, Any]) -> None:
    """A Subscription notifies only of a search its writer may run; one without an owner would be the exchange's,
    so only a client acting for the exchange may write one without an institution."""
    if not principal.exchange and principal.organization is None and principal.patient is None:
        raise FhirError(
            "forbidden",
            f"Subscription/{res_id} cannot be written by a client of no institution: the Subscription would belong "
            "to no one and match every write. Use a client registered to an institution.",
        )
    watched, criteria = split_criteria(str(resource.get("criteria") or ""))
    if not watched:
        return  # no type: the Subscription's own validation refuses it
    grants = grants_for(principal.scopes)
    for permission in ("r", "s"):
        access = grants.access(watched, permission)
        if not access.allowed:
            raise FhirError(
                "forbidden",
                f"Subscription/{res_id} would notify every write of {watched}, which this client's scopes do not "
                f"read: it needs the scope system/{watched}.rs.",
            )
        if access.constraints and not any(set(c) <= set(criteria) for c in access.constraints):
            wanted = " or ".join("&".join(f"{name}={value}" for name, value in c) for c in access.constraints)
            raise FhirError(
                "forbidden",
                f"Subscription/{res_id} would notify of {watched} beyond this client's constrained scopes: add "
                f"{wanted} to its criteria, or use a client whose scopes read every {watched}.",
            )
