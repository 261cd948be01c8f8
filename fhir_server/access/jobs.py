"""Who may follow a background job a client started: a bulk export's status, files and cancellation.

Bulk Data Access IG v2 §Status Request leaves it to the server to make sure "the client requesting the status
is the same client that requested the export". The job keeps the access of its requester
(:meth:`~fhir_server.access.filters.Access.to_json`); its client follows it, and the exchange's own clients with
every scope (operators) follow every job. Anyone else, an exchange client of narrower scopes included (another
job's files may hold types its scopes do not read), is told the job is not known.
"""

from __future__ import annotations

import json

from fhir_server.auth.principal import Principal


def may_follow_job(principal: Principal, requester: str | None) -> bool:
    """Whether ``principal`` may see, download or cancel a job whose saved access is ``requester``.

    ``requester`` None is a job the exchange started itself: only its own clients follow it. A job saved before
    its client was recorded is followed by clients of the same institution (or the same resident's app).
    """
    if principal.unrestricted:
        return True
    if requester is None:
        return False
    saved = json.loads(requester)
    client = saved.get("client")
    if client is not None:
        return client == principal.client_id
    patient = principal.patient.split("/")[-1] if principal.patient else None
    owner = (saved.get("org"), saved.get("patient"))
    return owner != (None, None) and owner == (principal.organization, patient)


__all__ = ["may_follow_job"]
