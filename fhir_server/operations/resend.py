"""``Subscription/[id]/$resend``: the declaration of the replay of a Subscription's notifications.

A local operation (R4 Subscriptions define none; the backport's ``$events`` reads, this one re-queues). It is
served by its own route (``fhir_server.api.subscriptions``) because it wakes the notification dispatcher
after the commit; this declaration lists it in the CapabilityStatement and serves its OperationDefinition.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from fhir_server.errors import FhirError
from fhir_server.operations.base import Invocation, Operation

DECLARATION: dict[str, Any] = {
    "id": "Subscription-resend",
    "name": "Resend",
    "title": "Queue a Subscription's notifications of a time window again",
    "code": "resend",
    "resource": ["Subscription"],
    "system": False,
    "type": False,
    "instance": True,
    "affectsState": True,
    "description": (
        "Every event of the window still kept in the outbox (HIE_OUTBOX_RETENTION_SECONDS) that matches the "
        "Subscription's criteria now is queued for delivery again, in commit order."
    ),
    "parameter": [
        {
            "name": "since",
            "use": "in",
            "min": 1,
            "max": "1",
            "type": "instant",
            "documentation": "Start of the window (inclusive).",
        },
        {
            "name": "until",
            "use": "in",
            "min": 0,
            "max": "1",
            "type": "instant",
            "documentation": "End of the window (inclusive); now when absent.",
        },
        {
            "name": "return",
            "use": "out",
            "min": 1,
            "max": "1",
            "type": "OperationOutcome",
            "documentation": "How many notifications were queued again.",
        },
    ],
}


def served_by_route(call: Invocation, conn: Connection) -> dict[str, Any]:
    """The replay wakes the dispatcher after its commit, which only its own route does."""
    raise FhirError("invalid", f"{call.path} queues notifications again: send it on its own, not in a Bundle.")


OPERATION = Operation(DECLARATION, served_by_route)
