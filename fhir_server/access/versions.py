"""Older versions judged on their own content: vread and history of a version that is no longer current.

The search index, and so the SQL access condition (:mod:`fhir_server.access.filters`), holds current versions
only. A stored older version is judged on a shadow copy: its index rows under a fresh id, with the resource's
owner (owners never change), inside a savepoint that is rolled back (:func:`shadow_version`, also used by the
scope check of ``fhir_server.auth.enforce``); a history page copies the older versions it decides together, in
one savepoint, and judges them in one statement per type. So a version that referenced another resident then is
shared by that resident's consent, not by the current one's; an older Patient version is judged under its own id
(its resident's consent and master patient index links apply), on its own labels. Deleted resources and their
history stay their owner's only; a deletion in the middle of a history has no content and is judged as the current
version is.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import orjson
from sqlalchemy import Connection, and_, case, insert, or_, select, tuple_
from sqlalchemy.sql import ColumnElement

from fhir_server.access.filters import Access
from fhir_server.errors import FhirError, not_found
from fhir_server.repository import Repository, Version
from fhir_server.search.index import as_stored, index_rows, stored_rows
from fhir_server.search.parameters import Registry
from fhir_server.storage.codec import decode_body
from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import INDEX_TABLES, resource_versions, resources

HISTORY_BATCH = 50
"""Versions a history page examines at a time while it fills up with readable ones."""
JUDGED_TOGETHER = 10
"""Fewest older versions of a history page decided together (more while the page still needs more)."""


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
    """Decides, for one request, which stored versions the caller may read. Versions are decided together
    (:meth:`decide`): one statement per type for the current rows' access, one for the current bodies, one shadow
    copy for every older version that differs from its current one in what access depends on (a writer's
    connection is opened only then)."""

    def __init__(self, conn: Connection, access: Access, registry: Registry, stack: ExitStack) -> None:
        self.conn = conn
        self.access = access
        self.registry = registry
        self.stack = stack
        self.writer: Connection | None = None
        self.current: dict[int, Any] = {}
        self.current_readable: dict[int, bool] = {}
        self.current_basis: dict[int, tuple[str, ...] | None] = {}

    def load_current(self, res_pks: set[int]) -> None:
        """The current row (version, deleted, owner) of each resource, for the versions about to be judged."""
        missing = sorted(res_pks - self.current.keys())
        if missing:
            r = resources.c
            query = select(r.res_pk, r.res_type, r.version, r.deleted, r.owner_org).where(r.res_pk.in_(missing))
            self.current.update({row.res_pk: row for row in self.conn.execute(query)})

    def readable(self, found: Version) -> bool:
        return self.decide([found])[0]

    def decide(self, versions: Sequence[Version]) -> list[bool]:
        """Whether the caller may read each of ``versions``, in their order."""
        if self.access.restriction is None:
            return [True] * len(versions)
        self.load_current({v.res_pk for v in versions})
        verdicts: dict[int, bool] = {}
        as_current: dict[int, Any] = {}
        older: list[tuple[int, Version, Any]] = []
        for position, found in enumerate(versions):
            row = self.current.get(found.res_pk)
            if row is None or (self.access.org is not None and row.owner_org == self.access.org):
                verdicts[position] = row is not None
            elif row.deleted:
                verdicts[position] = False  # a deleted resource and its history are its owner's only
            elif found.version == row.version or found.deleted:
                as_current[position] = row
            else:
                older.append((position, found, row))
        self._load_current_basis([row for _, _, row in older])
        shadowed: list[tuple[int, Version, Any, dict[str, list[dict[str, Any]]]]] = []
        for position, found, row in older:
            rows = _basis_rows(self.registry, found.res_type, found.resource())
            if self.current_basis.get(row.res_pk) == _basis_of(rows):
                as_current[position] = row
            else:
                shadowed.append((position, found, row, rows))
        self._load_current_readable(list(as_current.values()))
        verdicts.update({position: self.current_readable[row.res_pk] for position, row in as_current.items()})
        verdicts.update(self._shadows_readable(shadowed))
        return [verdicts[position] for position in range(len(versions))]

    def _load_current_readable(self, rows: list[Any]) -> None:
        """Whether the caller may read each resource as it stands now: one statement per type."""
        by_type: dict[str, set[int]] = {}
        for row in rows:
            if row.res_pk not in self.current_readable:
                by_type.setdefault(row.res_type, set()).add(row.res_pk)
        restriction = self.access.restriction
        assert restriction is not None
        for res_type, pks in sorted(by_type.items()):
            readable = set(self._readable_among(self.conn, restriction, res_type, pks))
            self.current_readable.update({pk: pk in readable for pk in pks})

    def _load_current_basis(self, rows: list[Any]) -> None:
        """What access depends on in each resource's current version (None: no body stored): one statement."""
        wanted = {(row.res_pk, row.version): row for row in rows if row.res_pk not in self.current_basis}
        if not wanted:
            return
        v = resource_versions.c
        query = select(v.res_pk, v.version, v.body).where(tuple_(v.res_pk, v.version).in_(sorted(wanted)))
        bodies = {(found.res_pk, found.version): found.body for found in self.conn.execute(query)}
        for key, row in wanted.items():
            body = bodies.get(key)
            self.current_basis[row.res_pk] = (
                None
                if body is None
                else _basis_of(_basis_rows(self.registry, row.res_type, orjson.loads(decode_body(body))))
            )

    def _shadows_readable(
        self, shadowed: list[tuple[int, Version, Any, dict[str, list[dict[str, Any]]]]]
    ) -> dict[int, bool]:
        """Older versions judged on one shadow copy of them all: each a ``resources`` row under a fresh id with
        the resource's owner and the index rows access depends on, inside a savepoint that is rolled back."""
        if not shadowed:
            return {}
        if self.writer is None:
            self.writer = self.stack.enter_context(unit_of_work(self.conn.engine))
        writer = self.writer
        restriction = self.access.restriction
        assert restriction is not None
        savepoint = writer.begin_nested()
        try:
            copies = [
                {
                    "res_type": found.res_type,
                    "res_id": str(uuid.uuid4()),
                    "version": found.version,
                    "ts": found.ts,
                    "deleted": False,
                    "owner_org": row.owner_org,
                }
                for _, found, row, _ in shadowed
            ]
            writer.execute(insert(resources), copies)  # one executemany: RETURNING in order is a row at a time
            r = resources.c
            fresh = select(r.res_id, r.res_pk).where(
                r.res_type.in_({made["res_type"] for made in copies}), r.res_id.in_([made["res_id"] for made in copies])
            )
            pk_of = {row.res_id: row.res_pk for row in writer.execute(fresh)}
            pks = [pk_of[made["res_id"]] for made in copies]
            tables: dict[str, list[dict[str, Any]]] = {}
            for (_, found, _, rows), res_pk in zip(shadowed, pks, strict=True):
                for table, stored in as_stored(writer, found.res_type, rows, res_pk).items():
                    tables.setdefault(table, []).extend(stored)
            for table, stored in tables.items():
                writer.execute(insert(INDEX_TABLES[table]), stored)
            by_type: dict[str, set[int]] = {}
            for (_, found, _, _), res_pk in zip(shadowed, pks, strict=True):
                by_type.setdefault(found.res_type, set()).add(res_pk)
            real_ids = {res_pk: found.res_id for (_, found, _, _), res_pk in zip(shadowed, pks, strict=True)}
            readable: set[int] = set()
            for res_type, type_pks in sorted(by_type.items()):
                readable.update(self._readable_among(writer, restriction, res_type, type_pks, real_ids))
        finally:
            savepoint.rollback()
        return {position: res_pk in readable for (position, _, _, _), res_pk in zip(shadowed, pks, strict=True)}

    @staticmethod
    def _readable_among(
        conn: Connection, restriction: Any, res_type: str, pks: set[int], real_ids: dict[int, str] | None = None
    ) -> list[int]:
        """Which of these rows of one type the access condition lets through (what ``Access.readable`` decides
        for each). With ``real_ids`` (shadow copies), each copy is judged under the id of the resource it copies:
        an older Patient version is that resident (its consent and master patient index links apply), its own
        index rows (``res_pk``) still decide what the rules say of its content (only a Patient's condition reads
        the id of the row it judges)."""
        r = resources
        table: Any = r
        if real_ids is not None and res_type == "Patient":
            table = (
                select(
                    r.c.res_pk,
                    r.c.res_type,
                    case({pk: real_ids[pk] for pk in sorted(pks)}, value=r.c.res_pk, else_=r.c.res_id).label("res_id"),
                    r.c.deleted,
                    r.c.owner_org,
                )
                .where(r.c.res_pk.in_(sorted(pks)))
                .subquery("shadow")
            )
        query = select(table.c.res_pk).where(table.c.res_pk.in_(sorted(pks)), restriction(table, res_type))
        return list(conn.execute(query).scalars())


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
    deleted; the latter are decided together, part by part (:meth:`VersionJudge.decide`), and the page is filled
    batch by batch, so a page holds ``count`` readable versions whenever there are that many (paging never skips
    or repeats one)."""
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
            start = 0
            while start < len(found) and len(kept) < count:
                part = found[start : start + max(count - len(kept), JUDGED_TOGETHER)]
                start += len(part)
                kept += _readable_part(judge, part)
            if len(found) < batch:
                break
            last = found[-1]
            after = (last.ts, last.res_pk, last.version)
    return kept[:count]


def _readable_part(judge: VersionJudge, part: list[Version]) -> list[Version]:
    """The versions of ``part`` the caller may read, in order: those listed as current as they are, the others
    decided together."""
    verdicts = iter(judge.decide([version for version in part if not _listed_as_current(judge, version)]))
    return [version for version in part if _listed_as_current(judge, version) or next(verdicts)]


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


def _basis_rows(registry: Registry, res_type: str, resource: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The index rows the access condition reads of a resource (its access basis): references to Patients and
    tokens (of which it reads ``_security`` and ``code``); all a shadow copy needs to be judged as stored."""
    rows = index_rows(registry, res_type, resource)
    basis = {
        "reference": [row for row in rows.get("reference", []) if row.get("target_type") == "Patient"],
        "token": rows.get("token", []),
    }
    return {table: kept for table, kept in basis.items() if kept}


def _basis_of(rows: dict[str, list[dict[str, Any]]]) -> tuple[str, ...]:
    """The access basis as a value to compare two versions by."""
    return tuple(sorted(repr(sorted(row.items())) for kept in rows.values() for row in kept))


def _placeholder(res_type: str, res_id: str, res_pk: int) -> Version:
    """A deletion version (no content): judged as the current version is."""
    return Version(res_type, res_id, 0, 0, "DELETE", None, res_pk)


__all__ = ["VersionJudge", "read_version", "readable_history", "sees_every_version", "shadow_version"]
