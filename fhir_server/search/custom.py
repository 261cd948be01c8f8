"""SearchParameter resources posted to the server become search parameters (R4B §3.1.1.4, status active).

The custom layer of the registry is the set of current, active SearchParameter resources in the database;
:func:`sync_custom_parameters` reloads it whenever a SearchParameter was written since the last load (one
index probe otherwise), so every worker process converges. Writes probe before every unit of work. Searches
(:func:`sync_for_search`) probe at most every :data:`CHECK_INTERVAL` seconds per process and database, and at
once after this process wrote a SearchParameter (:func:`changing`, a before-write hook of the service): another
worker's change is used within that interval, this process's own by its next search. Resources stored before
a parameter became active are indexed for it by ``search.reindex``.
"""

from __future__ import annotations

import time
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, and_, func, select

from fhir_server.errors import invalid
from fhir_server.search.parameters import Registry, SearchParam
from fhir_server.storage.tables import resources

CHECK_INTERVAL = 0.25
"""Seconds a search relies on the last probe of the stored SearchParameters (another worker's changes)."""

_probed: WeakKeyDictionary[Registry, tuple[Engine, float]] = WeakKeyDictionary()
"""Per registry: the database and the monotonic time of the last probe a search may rely on."""


def sync_for_search(conn: Connection, registry: Registry) -> bool:
    """:func:`sync_custom_parameters` for reads: probes only when the last probe of this database is older than
    :data:`CHECK_INTERVAL` or this process wrote a SearchParameter since; True when reloaded."""
    now = time.monotonic()
    last = _probed.get(registry)
    if last is not None and last[0] is conn.engine and now - last[1] < CHECK_INTERVAL:
        return False
    reloaded = sync_custom_parameters(conn, registry)
    _probed[registry] = (conn.engine, now)
    return reloaded


def changing(registry: Registry, res_type: str) -> None:
    """Before a write of this process: a SearchParameter written makes the next search probe again."""
    if res_type == "SearchParameter":
        _probed.pop(registry, None)


_STORED_STAMP = select(func.max(resources.c.ts), func.count()).where(resources.c.res_type == "SearchParameter")
"""When the stored SearchParameters last changed, and how many: built once (every write probes it)."""


def sync_custom_parameters(conn: Connection, registry: Registry) -> bool:
    """Reload the custom parameters if SearchParameters changed since the last load; True when reloaded."""
    stamp = tuple(conn.execute(_STORED_STAMP).one())
    if stamp == registry.custom_stamp:
        return False
    registry.replace_custom(stored_parameters(conn, registry), stamp)
    return True


def stored_parameters(conn: Connection, registry: Registry) -> list[dict[str, Any]]:
    """The current, not deleted SearchParameter resources."""
    from fhir_server.repository import Repository

    pks = conn.execute(
        select(resources.c.res_pk).where(
            and_(resources.c.res_type == "SearchParameter", resources.c.deleted.is_(False))
        )
    ).scalars()
    return [version.resource() for version in Repository(registry).load_many(conn, list(pks))]


def check_search_parameter(registry: Registry, resource: dict[str, Any]) -> None:
    """Refuse an active SearchParameter this server could not apply (before it is stored)."""
    if resource.get("resourceType") != "SearchParameter" or resource.get("status") != "active":
        return
    reason = registry.check(resource)
    if reason is not None:
        raise invalid(f"SearchParameter '{resource.get('code')}' cannot be activated: {reason}.")


def activate(registry: Registry, resource: dict[str, Any]) -> list[SearchParam]:
    """Register one SearchParameter now (the writing process sees it before the next sync)."""
    if resource.get("status") != "active" or registry.check(resource) is not None:
        return []
    return registry.add(resource)
