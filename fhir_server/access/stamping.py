"""Writes stamped with their writer: ``meta.source``, the owning institution and one Provenance per unit of work.

R4B Resource.meta.source and Provenance (provenance.html). :func:`stamp_write` is the repository's stamp hook
(run on each resource before it is stored; returns the owner of a new one), :func:`collect_writes` its write
hook, and :func:`recorded_writes` wraps a request's unit of work: when it ends without error, one Provenance
names every version written (targets, activity, the institution as author and the client as performer).
Work of the exchange itself (SYSTEM: adapters, CLI, background) is not stamped.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, event, select

from fhir_server.access.caller import acting_principal
from fhir_server.access.codes import CLIENT_ID_SYSTEM, DATA_OPERATION_SYSTEM, PARTICIPATION_TYPE_SYSTEM, source_uri
from fhir_server.auth.principal import Principal
from fhir_server.repository import Repository, Version, instant
from fhir_server.storage.tables import resource_versions

_OPERATIONS = ("CREATE", "UPDATE", "DELETE")


@dataclass
class _WriteLog:
    versions: list[Version] = field(default_factory=list)
    closing: bool = False


_LOG: ContextVar[_WriteLog | None] = ContextVar("hie_write_log", default=None)
_SAVEPOINT_ROLLED_BACK = "hie_savepoint_rolled_back"
"""``Connection.info`` key: a savepoint was rolled back (with the writes after it) since a unit of work that wrote
last looked; such a unit then asks which of its versions are still stored."""


@event.listens_for(Engine, "rollback_savepoint")
def _savepoint_rolled_back(conn: Connection, _name: str, _context: object) -> None:
    conn.info[_SAVEPOINT_ROLLED_BACK] = True


def stamp_write(resource: dict[str, Any]) -> str | None:
    """Set ``meta.source`` to the writer (:func:`~fhir_server.access.codes.source_uri`); the owner of a new resource."""
    principal = acting_principal()
    if principal.unrestricted:
        return None
    meta = dict(resource.get("meta") or {})
    meta["source"] = source_uri(principal.organization, principal.client_id)
    resource["meta"] = meta
    return principal.organization


def collect_writes(_conn: Connection, versions: Sequence[Version]) -> None:
    """Write hook: remember the versions written in the current unit of work, for its Provenance."""
    log = _LOG.get()
    if log is not None and not log.closing:
        log.versions.extend(versions)


def recorded_writes(conn: Connection, repository: Repository) -> AbstractContextManager[None]:
    """Around a unit of work: on success, store one Provenance for everything the caller wrote in it."""
    principal = acting_principal()
    if principal.unrestricted:
        return _UNRECORDED
    return _RecordedWrites(conn, repository, principal)


_UNRECORDED = nullcontext()


class _RecordedWrites:
    """The context of :func:`recorded_writes` for a caller whose writes are stamped (a plain class: it wraps
    every unit of work, reads included)."""

    __slots__ = ("conn", "log", "principal", "repository", "token")

    def __init__(self, conn: Connection, repository: Repository, principal: Principal) -> None:
        self.conn = conn
        self.repository = repository
        self.principal = principal

    def __enter__(self) -> None:
        self.log = _WriteLog()
        self.token = _LOG.set(self.log)

    def __exit__(self, kind: type[BaseException] | None, _error: BaseException | None, _trace: Any) -> None:
        try:
            log = self.log
            if kind is None and log.versions:
                if self.conn.info.pop(_SAVEPOINT_ROLLED_BACK, False):
                    written = still_stored(self.conn, log.versions)
                else:  # nothing was rolled back: every version collected is stored (no statement to ask)
                    written = list({(x.res_pk, x.version): x for x in log.versions}.values())
                if written:
                    log.closing = True
                    recorded = instant(max(v.ts for v in written))
                    self.repository.create(self.conn, provenance(self.principal, written, recorded))
        finally:
            _LOG.reset(self.token)


def provenance(principal: Principal, versions: Sequence[Version], recorded: str) -> dict[str, Any]:
    """The Provenance of one interaction or transaction: what was written, how, by which institution and client."""
    operations = {_operation(v) for v in versions}
    client: dict[str, Any] = {
        "type": {"coding": [{"system": PARTICIPATION_TYPE_SYSTEM, "code": "performer"}]},
        "who": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": principal.client_id}},
    }
    agents = []
    if principal.organization:
        agents.append(
            {
                "type": {"coding": [{"system": PARTICIPATION_TYPE_SYSTEM, "code": "author"}]},
                "who": {"reference": principal.organization},
            }
        )
        client["onBehalfOf"] = {"reference": principal.organization}
    agents.append(client)
    return {
        "resourceType": "Provenance",
        "target": [{"reference": v.location} for v in versions],
        "recorded": recorded,
        "activity": {
            "coding": [{"system": DATA_OPERATION_SYSTEM, "code": code} for code in _OPERATIONS if code in operations]
        },
        "agent": agents,
    }


def _operation(version: Version) -> str:
    if version.method == "DELETE":
        return "DELETE"
    return "CREATE" if version.version == 1 or version.method == "POST" else "UPDATE"


def still_stored(conn: Connection, versions: list[Version]) -> list[Version]:
    """The versions still stored: a batch entry rolled back to its savepoint took its writes with it."""
    if not versions:
        return []
    v = resource_versions.c
    stored = {
        (row.res_pk, row.version)
        for row in conn.execute(select(v.res_pk, v.version).where(v.res_pk.in_({x.res_pk for x in versions})))
    }
    unique = {(x.res_pk, x.version): x for x in versions}
    return [x for key, x in unique.items() if key in stored]
