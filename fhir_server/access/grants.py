"""``consent_grants``: every regional-sharing Consent flattened to rule rows, rewritten with each Consent write.

A write hook (:data:`~fhir_server.repository.WriteHook`) in the writer's transaction: the rows of a Consent are
replaced by those of its new version, and removed when it is withdrawn (status no longer active) or deleted, so
the next request already sees the change.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete, insert

from fhir_server.access.consent import consent_patient, grants_of
from fhir_server.repository import Version
from fhir_server.storage.tables import consent_grants


def refresh_consent_grants(conn: Connection, versions: Sequence[Version]) -> None:
    """Replace the grant rows of every Consent among ``versions``."""
    consents = [v for v in versions if v.res_type == "Consent"]
    if not consents:
        return
    conn.execute(delete(consent_grants).where(consent_grants.c.consent_pk.in_([v.res_pk for v in consents])))
    rows = []
    for version in consents:
        if version.deleted:
            continue
        consent = version.resource()
        patient = consent_patient(consent)
        for grant in grants_of(consent):
            rows.append(
                {
                    "consent_pk": version.res_pk,
                    "patient_id": patient,
                    "effect": grant.effect,
                    "depth": grant.depth,
                    "org": grant.org,
                    "res_type": grant.res_type,
                    "label_system": grant.label[0] if grant.label else None,
                    "label_code": grant.label[1] if grant.label else None,
                    "code_system": grant.code[0] if grant.code else None,
                    "code": grant.code[1] if grant.code else None,
                    "purpose": grant.purpose,
                    "low": grant.low,
                    "high": grant.high,
                }
            )
    if rows:
        conn.execute(insert(consent_grants), rows)
