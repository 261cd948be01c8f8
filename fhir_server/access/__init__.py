"""Data-level access: institutions own what they write, residents' consent shares it, break-glass for emergencies.

Public surface for the rest of the server; docs/SECURITY.md ("Institutions and consent", "Break-glass").
"""

from fhir_server.access.breakglass import ordinary_access, read_access
from fhir_server.access.caller import BindCaller, acting_as, acting_principal, principal_of, refuse_resident_app
from fhir_server.access.filters import UNRESTRICTED, Access, Restriction, check_readable
from fhir_server.access.grants import refresh_consent_grants
from fhir_server.access.inprocess import note_in_process_writes
from fhir_server.access.stamping import collect_writes, recorded_writes, stamp_write
from fhir_server.access.versions import read_version, readable_history, sees_every_version, shadow_version
from fhir_server.access.writes import guard_write

WRITE_HOOKS = (refresh_consent_grants, collect_writes, note_in_process_writes)
"""Repository write hooks every FHIR service runs: consent rules kept in step, writes collected for Provenance
and for the audit of in-process work."""

__all__ = [
    "UNRESTRICTED",
    "WRITE_HOOKS",
    "Access",
    "BindCaller",
    "Restriction",
    "acting_as",
    "acting_principal",
    "check_readable",
    "guard_write",
    "ordinary_access",
    "principal_of",
    "read_access",
    "read_version",
    "readable_history",
    "recorded_writes",
    "refuse_resident_app",
    "sees_every_version",
    "shadow_version",
    "stamp_write",
]
