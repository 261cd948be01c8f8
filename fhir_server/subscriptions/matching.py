"""Which committed writes meet which Subscription's criteria, judged on the version that was written.

An event whose version is still current is matched by one search per subscription, restricted by ``_id``
to the batch. An event already superseded (updated again or deleted before the matcher ran) is matched on a
shadow copy: that version's index rows under a fresh id, inside a savepoint that is rolled back. Either way
the criteria see the version the notification carries; resources reached through chains are seen as now.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, select

from fhir_server.access import Access, Restriction
from fhir_server.access.versions import shadow_version
from fhir_server.errors import FhirError
from fhir_server.outbox import Event
from fhir_server.repository import Repository
from fhir_server.search.parameters import Registry
from fhir_server.search.query import find
from fhir_server.storage.tables import resources
from fhir_server.subscriptions.criteria import SubscriptionSpec

_CHUNK = 500


def matches(
    conn: Connection, registry: Registry, specs: list[SubscriptionSpec], events: list[Event]
) -> list[tuple[SubscriptionSpec, Event]]:
    """``(subscription, event)`` pairs in event order (then subscription id); deletions match nothing."""
    wanted = {spec.res_type for spec in specs}
    candidates = [e for e in events if not e.deleted and e.res_type in wanted]
    if not candidates:
        return []
    current = _current_versions(conn, [e.res_pk for e in candidates])
    live = [e for e in candidates if current.get(e.res_pk) == e.version]
    stale = [e for e in candidates if current.get(e.res_pk) != e.version]
    hits: set[tuple[str, int]] = set()
    for spec in specs:
        ids = sorted({e.res_id for e in live if e.res_type == spec.res_type})
        found = matching_ids(conn, registry, spec, ids)
        hits |= {(spec.id, e.seq) for e in live if e.res_type == spec.res_type and e.res_id in found}
    for event in stale:
        of_type = [spec for spec in specs if spec.res_type == event.res_type]
        hits |= {(spec_id, event.seq) for spec_id in _shadow_matches(conn, registry, of_type, event)}
    ordered = sorted(specs, key=lambda s: s.id)
    return [(spec, event) for event in candidates for spec in ordered if (spec.id, event.seq) in hits]


def matching_ids(conn: Connection, registry: Registry, spec: SubscriptionSpec, res_ids: list[str]) -> set[str]:
    """Which of these current resources of ``spec.res_type`` meet the criteria (one query per 500 ids)."""
    found: set[str] = set()
    for start in range(0, len(res_ids), _CHUNK):
        chunk = res_ids[start : start + _CHUNK]
        params = [*spec.params, ("_id", ",".join(chunk))]
        pks = find(conn, registry, spec.res_type, params, limit=len(chunk), restrict=_restriction(spec))
        if pks:
            found |= set(conn.execute(select(resources.c.res_id).where(resources.c.res_pk.in_(pks))).scalars())
    return found


def _restriction(spec: SubscriptionSpec) -> Restriction | None:
    """What the subscriber's institution may read (docs/SECURITY.md); the exchange's own see everything."""
    return None if spec.owner is None else Access(org=spec.owner).restriction


def _current_versions(conn: Connection, pks: list[int]) -> dict[int, int]:
    """Current version of each resource that is not deleted."""
    current: dict[int, int] = {}
    for start in range(0, len(pks), _CHUNK):
        rows = conn.execute(
            select(resources.c.res_pk, resources.c.version).where(
                resources.c.res_pk.in_(pks[start : start + _CHUNK]), resources.c.deleted.is_(False)
            )
        )
        current.update({row.res_pk: row.version for row in rows})
    return current


def _shadow_matches(conn: Connection, registry: Registry, specs: list[SubscriptionSpec], event: Event) -> set[str]:
    try:
        found = Repository(registry).vread(conn, event.res_type, event.res_id, event.version)
    except FhirError:  # the version is no longer stored ($expunge): nothing to notify
        return set()
    shadow_id = str(uuid.uuid4())
    owner = conn.execute(select(resources.c.owner_org).where(resources.c.res_pk == event.res_pk)).scalar()
    with shadow_version(conn, registry, found, owner_org=owner, res_id=shadow_id):
        return {spec.id for spec in specs if matching_ids(conn, registry, spec, [shadow_id])}


__all__ = ["matches", "matching_ids"]
