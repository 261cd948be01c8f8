"""SearchParameter resources posted to the server become search parameters (R4B §3.1.1.4, status active).

The custom layer of the registry is the set of current, active SearchParameter resources in the database;
:func:`sync_custom_parameters` reloads it whenever a SearchParameter was written since the last load (one
index probe otherwise), so every worker process converges. Resources stored before a parameter became
active are indexed for it by ``search.reindex``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, func, select

from fhir_server.errors import invalid
from fhir_server.search.parameters import Registry, SearchParam
from fhir_server.storage.tables import resources


def sync_custom_parameters(conn: Connection, registry: Registry) -> bool:
    """Reload the custom parameters if SearchParameters changed since the last load; True when reloaded."""
    stamp = conn.execute(
        select(func.max(resources.c.ts), func.count()).where(resources.c.res_type == "SearchParameter")
    ).one()
    stamp = tuple(stamp)
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
