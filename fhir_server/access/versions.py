"""Older versions judged on their own content: vread and history of a version that is no longer current.

The search index, and so the SQL access condition (:mod:`fhir_server.access.filters`), holds current versions
only. A stored older version is judged on a shadow copy: its index rows under a fresh id, with the resource's
owner (owners never change), inside a savepoint that is rolled back (:func:`shadow_version`, also used by the
scope check of ``fhir_server.auth.enforce``). So a version that referenced another resident then is shared by
that resident's consent, not by the current one's. Deleted resources and their history stay their owner's only;
a deletion in the middle of a history has no content and is judged as the current version is.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import orjson
from sqlalchemy import Connection, and_, insert, or_, select
from sqlalchemy.sql import ColumnElement

from fhir_server.access.filters import Access
from fhir_server.errors import FhirError, not_found
from fhir_server.repository import Repository, Version
from fhir_server.search.index import index_rows, stored_rows
from fhir_server.search.parameters import Registry
from fhir_server.storage.codec import decode_body
from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import INDEX_TABLES, resource_versions, resources

HISTORY_BATCH = 50
"""Versions a history page examines at a time while it fills up with readable ones."""


@contextmanager
def shadow_version(
    conn: Connection, registry: Registry, found: Version, *, owner_org: str | None = None, res_id: str | None = None
) -> Iterator[int]:
    """A stored version made searchable for the length of the block: its ``res_pk`` under a fresh id (or
    ``res_id``). ``conn`` must be a writer's connection; everything is rolled back when the block ends."""
    resource = found.resource()
    savepoint = conn.begin_nested()
    try:
        res_pk = conn.execute(
            insert(resources)
            .values(
                res_type=found.res_type,
                res_id=res_id or str(uuid.uuid4()),
                version=found.version,
                ts=found.ts,
                deleted=False,
                owner_org=owner_org,
            )
            .returning(resources.c.res_pk)
        ).scalar_one()
        for table, rows in stored_rows(conn, registry, found.res_type, resource, res_pk).items():
            conn.execute(insert(INDEX_TABLES[table]), rows)
        yield res_pk
    finally:
        savepoint.rollback()


class VersionJudge:
    """Decides, for one request, which stored versions the caller may read; a writer's connection is opened
    only when an older version differs from the current one in what access depends on."""

    def __init__(self, conn: Connection, access: Access, registry: Registry, stack: ExitStack) -> None:
        self.conn = conn
        self.access = access
        self.registry = registry
        self.stack = stack
        self.writer: Connection | None = None
        self.current: dict[int, Any] = {}
        self.current_readable: dict[int, bool] = {}
        self.current_basis: dict[int, tuple[str, ...]] = {}

    def load_current(self, res_pks: set[int]) -> None:
        """The current row (version, deleted, owner) of each resource, for the versions about to be judged."""
        missing = sorted(res_pks - self.current.keys())
        if missing:
            r = resources.c
            query = select(r.res_pk, r.res_type, r.version, r.deleted, r.owner_org).where(r.res_pk.in_(missing))
            self.current.update({row.res_pk: row for row in self.conn.execute(query)})

    def readable(self, found: Version) -> bool:
        if self.access.restriction is None:
            return True
        self.load_current({found.res_pk})
        row = self.current.get(found.res_pk)
        if row is None:
            return False
        if self.access.org is not None and row.owner_org == self.access.org:
            return True
        if row.deleted:
            return False  # a deleted resource and its history are its owner's only
        if found.version == row.version or found.deleted or self._as_current(found, row):
            return self._current_readable(row)
        return self._shadow_readable(found, row.owner_org)

    def _current_readable(self, row: Any) -> bool:
        known = self.current_readable.get(row.res_pk)
        if known is None:
            known = self.current_readable[row.res_pk] = self.access.readable(
                self.conn, row.res_type, row.res_pk, row.owner_org
            )
        return known

    def _as_current(self, found: Version, row: Any) -> bool:
        """Whether the version states what access depends on (residents referenced, codes, labels) as the current
        one does: its references to Patients and its tokens are the same."""
        basis = self.current_basis.get(row.res_pk)
        if basis is None:
            current = self.conn.execute(
                select(resource_versions.c.body).where(
                    resource_versions.c.res_pk == row.res_pk, resource_versions.c.version == row.version
                )
            ).scalar_one_or_none()
            if current is None:
                return False
            basis = self.current_basis[row.res_pk] = _access_basis(
                self.registry, found.res_type, orjson.loads(decode_body(current))
            )
        return basis == _access_basis(self.registry, found.res_type, found.resource())

    def _shadow_readable(self, found: Version, owner_org: str | None) -> bool:
        if self.writer is None:
            self.writer = self.stack.enter_context(unit_of_work(self.conn.engine))
        with shadow_version(self.writer, self.registry, found, owner_org=owner_org) as res_pk:
            return self.access.readable(self.writer, found.res_type, res_pk, owner_org)


def read_version(
    conn: Connection,
    access: Access,
    registry: Registry,
    repository: Repository,
    res_type: str,
    res_id: str,
    version: int,
) -> Version:
    """Vread (R4B §3.1.0.3) of what ``access`` may read of that version; a version it may not read is a 404 worded
    like a missing resource."""
    if access.restriction is None:
        return repository.vread(conn, res_type, res_id, version)
    hidden = not_found(f"{res_type}/{res_id} is not known to this server.")
    with ExitStack() as stack:
        judge = VersionJudge(conn, access, registry, stack)
        try:
            found = repository.vread(conn, res_type, res_id, version)
        except FhirError:
            current = conn.execute(
                select(resources.c.res_pk).where(resources.c.res_type == res_type, resources.c.res_id == res_id)
            ).scalar_one_or_none()
            if current is not None and not judge.readable(_placeholder(res_type, res_id, current)):
                raise hidden from None
            raise
        if not judge.readable(found):
            raise hidden
        return found


def readable_history(
    conn: Connection,
    access: Access,
    registry: Registry,
    repository: Repository,
    *,
    count: int,
    after: tuple[int, int, int] | None = None,
    **filters: Any,
) -> list[Version]:
    """Up to ``count`` versions of a history (newest first) the caller may read, each judged on its own content.

    The SQL keeps versions whose current resource the caller may read and older versions of resources not
    deleted; the latter are judged one by one, and the page is filled batch by batch, so a page holds ``count``
    readable versions whenever there are that many (paging never skips or repeats one)."""
    if access.restriction is None:
        return repository.history(conn, count=count, after=after, **filters)
    condition = access.restriction

    def candidates(table: Any, type_name: str | None) -> ColumnElement[bool]:
        older = and_(resource_versions.c.version < table.c.version, table.c.deleted.is_(False))
        return or_(condition(table, type_name), older)

    kept: list[Version] = []
    with ExitStack() as stack:
        judge = VersionJudge(conn, access, registry, stack)
        batch = max(count, HISTORY_BATCH)
        while len(kept) < count:
            found = repository.history(conn, count=batch, after=after, visible=candidates, **filters)
            judge.load_current({v.res_pk for v in found})
            for version in found:
                if _listed_as_current(judge, version) or judge.readable(version):
                    kept.append(version)
                    if len(kept) == count:
                        return kept
            if len(found) < batch:
                break
            last = found[-1]
            after = (last.ts, last.res_pk, last.version)
    return kept


def _listed_as_current(judge: VersionJudge, version: Version) -> bool:
    """A current version in a history's SQL got there by the access condition itself: readable as listed."""
    row = judge.current.get(version.res_pk)
    return row is not None and version.version == row.version


def sees_every_version(conn: Connection, access: Access, res_pk: int) -> bool:
    """Whether the caller reads every version of the resource ``res_pk`` unjudged: its owner, or not filtered."""
    if access.restriction is None:
        return True
    owner = conn.execute(select(resources.c.owner_org).where(resources.c.res_pk == res_pk)).scalar_one_or_none()
    return access.org is not None and owner == access.org


def _access_basis(registry: Registry, res_type: str, resource: dict[str, Any]) -> tuple[str, ...]:
    """What the access condition reads of a resource's index rows: references to Patients and tokens."""
    rows = index_rows(registry, res_type, resource)
    kept = [row for row in rows.get("reference", []) if row.get("target_type") == "Patient"]
    kept += rows.get("token", [])
    return tuple(sorted(repr(sorted(row.items())) for row in kept))


def _placeholder(res_type: str, res_id: str, res_pk: int) -> Version:
    """A deletion version (no content): judged as the current version is."""
    return Version(res_type, res_id, 0, 0, "DELETE", None, res_pk)


__all__ = ["VersionJudge", "read_version", "readable_history", "sees_every_version", "shadow_version"]
