"""The tamper-evident audit trail (issue 5): BALP AuditEvents of every request, hash-chained, append-only.

Modules: ``events`` builds an AuditEvent from an ``Access``; ``collector`` gathers what a request touched;
``middleware`` turns each finished request into an ``Access``; ``trail`` queues and writes them in batches;
``chain`` appends and verifies the hash chain; ``access_log`` reads a resident's events for ``$access-log``.
"""

from fhir_server.audit.chain import BrokenLink, verify
from fhir_server.audit.collector import AccessCollector, collector_of, patients_of, principal_of
from fhir_server.audit.events import Access, audit_event
from fhir_server.audit.middleware import AuditMiddleware
from fhir_server.audit.trail import AuditTrail

__all__ = [
    "Access",
    "AccessCollector",
    "AuditMiddleware",
    "AuditTrail",
    "BrokenLink",
    "audit_event",
    "collector_of",
    "patients_of",
    "principal_of",
    "verify",
]
