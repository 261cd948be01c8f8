"""The FHIR service: every write and read of resources, used alike by REST handlers and domain modules.

All functions take the unit-of-work connection explicitly; the caller commits (DESIGN.md rule 4).
Versioning follows R4B §3.1.0.1.5 (version ids per resource, deletes as tombstone versions).
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Connection, Select, and_, bindparam, delete, exists, insert, or_, select, text, update
from sqlalchemy.sql import ColumnElement

from fhir_server.errors import FhirError, gone, invalid, not_found, precondition_failed
from fhir_server.search.index import as_stored, index_rows, reindexed, stored_rows, unchanged_rows
from fhir_server.search.parameters import Registry
from fhir_server.search.values import from_micros
from fhir_server.storage.codec import decode_body, encode_body
from fhir_server.storage.engine import is_postgres
from fhir_server.storage.inserts import delete_many, insert_many, insert_rows, insert_with_children
from fhir_server.storage.tables import INDEX_TABLES, resource_versions, resources, search_param_ids

_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


@dataclass(frozen=True)
class Version:
    """One stored version of a resource; ``body`` is its canonical JSON (None for a delete)."""

    res_type: str
    res_id: str
    version: int
    ts: int
    method: str
    body: bytes | None
    res_pk: int = 0

    @property
    def deleted(self) -> bool:
        return self.body is None

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    @property
    def last_updated(self) -> datetime:
        return from_micros(self.ts)

    @property
    def location(self) -> str:
        return f"{self.res_type}/{self.res_id}/_history/{self.version}"

    def resource(self) -> dict[str, Any]:
        if self.body is None:
            raise gone(f"{self.res_type}/{self.res_id} was deleted (version {self.version}).")
        return orjson.loads(self.body)


@dataclass(frozen=True, slots=True)
class PreparedCreate:
    """A new resource stamped, serialised and indexed before its unit of work's first statement."""

    res_id: str
    ts: int
    owner: str | None
    body: bytes
    rows: dict[str, list[dict[str, Any]]]
    """Index rows as :func:`~fhir_server.search.index.index_rows` gives them (no ``res_pk`` yet)."""


@dataclass(frozen=True)
class WriteResult:
    """What a write did: the new version and whether it created the resource."""

    version: Version
    created: bool
    changed: bool = True


def instant(micros: int) -> str:
    """An R4B instant in UTC with microseconds."""
    return from_micros(micros).isoformat(timespec="microseconds").replace("+00:00", "Z")


def check_id(resource_id: str) -> str:
    if not (1 <= len(resource_id) <= 64) or not set(resource_id) <= _ID_CHARS:
        raise invalid(
            f"'{resource_id}' is not a valid resource id (1–64 characters of A–Z, a–z, 0–9, '-' and '.').",
            expression=("id",),
        )
    return resource_id


WriteHook = Callable[[Connection, Sequence[Version]], None]
"""Called with the versions a write stored, inside its transaction (e.g. the outbox)."""

StampHook = Callable[[dict[str, Any]], str | None]
"""Called with each resource about to be stored (create or update): may stamp it (``meta.source``) and returns
the institution owning a new resource (``resources.owner_org``; None: the exchange). Access control is one."""

Readable = Callable[[Select[Any], str], tuple[Select[Any], dict[str, Any]] | None]
"""Whether the caller may read a resource, asked in the read's own statement: (the statement over ``resources``,
the type) → the statement with a column ``readable`` (true or 1 when readable) added and the values it binds;
None: readable."""


class Repository:
    """Versioned storage of every resource type with its search indexes kept in step."""

    def __init__(
        self, registry: Registry, *, on_write: Sequence[WriteHook] = (), stamp: StampHook | None = None
    ) -> None:
        self.registry = registry
        self.on_write = list(on_write)
        self.stamp = stamp

    def _owner(self, resource: dict[str, Any]) -> str | None:
        return self.stamp(resource) if self.stamp is not None else None

    def _written(self, conn: Connection, versions: Sequence[Version]) -> None:
        for hook in self.on_write:
            hook(conn, versions)

    # -- reads ---------------------------------------------------------------------------------

    def current(
        self,
        conn: Connection,
        res_type: str,
        res_id: str,
        *,
        lock: bool = False,
        readable: Readable | None = None,
    ) -> Version | None:
        """The latest version (possibly a tombstone), or None if the resource never existed or ``readable`` (the
        caller's access, decided in the same statement) hides it.

        With ``lock`` the resource row is locked first, on its own, so that a writer waiting for a
        concurrent one re-reads the row it committed (PostgreSQL re-checks a locked row, not a join).
        """
        if lock:
            head = conn.execute(_HEAD_FOR_UPDATE, {"current_type": res_type, "current_id": res_id}).first()
            if head is None:
                return None
            row = conn.execute(_VERSION_ROW, {"version_pk": head.res_pk, "version_no": head.version}).one()
            return Version(res_type, res_id, head.version, row.ts, row.method, _inflate(row.body), head.res_pk)
        judged = readable(_CURRENT, res_type) if readable is not None else None
        statement, params = judged or (_CURRENT, {})
        row = conn.execute(statement, {**params, "current_type": res_type, "current_id": res_id}).first()
        if row is None or (judged is not None and not row.readable):
            return None
        return Version(res_type, res_id, row.version, row.ts, row.method, _inflate(row.body), row.res_pk)

    def read(
        self,
        conn: Connection,
        res_type: str,
        res_id: str,
        *,
        readable: Readable | None = None,
    ) -> Version:
        """The current version; what ``readable`` hides is a 404 like a missing resource."""
        found = self.current(conn, res_type, res_id, readable=readable)
        if found is None:
            raise not_found(f"{res_type}/{res_id} is not known to this server.")
        if found.deleted:
            error = gone(f"{res_type}/{res_id} was deleted (version {found.version}).")
            error.headers["ETag"] = found.etag
            raise error
        return found

    def vread(self, conn: Connection, res_type: str, res_id: str, version: int) -> Version:
        row = conn.execute(
            select(
                resource_versions.c.ts,
                resource_versions.c.method,
                resource_versions.c.body,
                resources.c.res_pk,
            )
            .join(resources, resources.c.res_pk == resource_versions.c.res_pk)
            .where(
                resources.c.res_type == res_type,
                resources.c.res_id == res_id,
                resource_versions.c.version == version,
            )
        ).first()
        if row is None:
            raise not_found(f"{res_type}/{res_id} has no version {version}.")
        found = Version(res_type, res_id, version, row.ts, row.method, _inflate(row.body), row.res_pk)
        if found.deleted:
            raise gone(f"Version {version} of {res_type}/{res_id} is its deletion.")
        return found

    def load_many(self, conn: Connection, pks: list[int]) -> list[Version]:
        """Current versions of the given resources, in the order given."""
        if not pks:
            return []
        rows = conn.execute(_MANY_CURRENT, {"many_pks": pks}).all()
        by_pk = {
            r.res_pk: Version(r.res_type, r.res_id, r.version, r.ts, r.method, _inflate(r.body), r.res_pk) for r in rows
        }
        return [by_pk[pk] for pk in pks if pk in by_pk]

    # -- writes --------------------------------------------------------------------------------

    def create(
        self, conn: Connection, resource: dict[str, Any], *, res_id: str | None = None, method: str | None = None
    ) -> WriteResult:
        """Store a new resource under a server-assigned id (or ``res_id`` for update-as-create)."""
        res_type = resource["resourceType"]
        method = method or ("POST" if res_id is None else "PUT")
        res_id = res_id or str(uuid.uuid4())
        ts = _now()
        owner = self._owner(resource)
        body = _stamp(resource, res_id, 1, ts)
        values = {"res_type": res_type, "res_id": res_id, "version": 1, "ts": ts, "deleted": False, "owner_org": owner}
        res_pk = conn.execute(_NEW_RESOURCE, values).scalar_one()
        self._write_version(conn, res_pk, res_type, 1, ts, method, body, resource)
        written = Version(res_type, res_id, 1, ts, method, body, res_pk)
        self._written(conn, [written])
        return WriteResult(written, created=True)

    def prepare_creates(self, items: Sequence[tuple[dict[str, Any], str]]) -> list[PreparedCreate]:
        """Stamp, serialise and index new resources ``(resource, id)`` without the database, before the unit of
        work's first statement: SQLite writers hold the write lock from there to commit (docs/PERFORMANCE.md).

        Their ``lastUpdated`` is taken now. :meth:`create_many` uses what a before-write hook left unchanged.
        """
        ts = _now()
        return [self._prepare(resource, res_id, ts) for resource, res_id in items]

    def _prepare(self, resource: dict[str, Any], res_id: str, ts: int) -> PreparedCreate:
        owner = self._owner(resource)
        body = _stamp(resource, res_id, 1, ts)
        return PreparedCreate(res_id, ts, owner, body, index_rows(self.registry, resource["resourceType"], resource))

    def _amended(self, done: PreparedCreate, resource: dict[str, Any]) -> PreparedCreate:
        """``done`` after a before-write hook changed its resource (the MPI's ``link``): stamped and serialised
        again; only the parameters that may read the top-level elements it changed are extracted again."""
        before = orjson.loads(done.body)
        owner = self._owner(resource)
        body = _stamp(resource, done.res_id, 1, done.ts)
        changed = frozenset(
            key
            for key in before.keys() | resource.keys()
            if key not in before or key not in resource or orjson.dumps(before[key]) != orjson.dumps(resource[key])
        )
        rows = reindexed(self.registry, resource["resourceType"], resource, done.rows, changed)
        return PreparedCreate(done.res_id, done.ts, owner, body, rows)

    def create_many(
        self,
        conn: Connection,
        items: list[tuple[dict[str, Any], str]],
        prepared: Sequence[PreparedCreate] | None = None,
    ) -> list[Version]:
        """Bulk create of new resources ``(resource, id)``: one statement per table, not per resource.

        ``prepared`` (:meth:`prepare_creates` of the same items) is used for every resource that is still what
        was prepared; one a hook amended since is prepared again.
        """
        if not items:
            return []
        ts = prepared[0].ts if prepared else _now()
        ready = []
        for i, (resource, res_id) in enumerate(items):
            done = prepared[i] if prepared else None
            if done is None or done.res_id != res_id:
                done = self._prepare(resource, res_id, ts)
            elif orjson.dumps(resource) != done.body:
                done = self._amended(done, resource)
            ready.append(done)
        rows = [
            {
                "res_type": r["resourceType"],
                "res_id": done.res_id,
                "version": 1,
                "ts": ts,
                "deleted": False,
                "owner_org": done.owner,
            }
            for (r, _), done in zip(items, ready, strict=True)
        ]
        version_rows, index_batches = [], {}
        for position, ((resource, _), done) in enumerate(zip(items, ready, strict=True), start=1):
            res_type = resource["resourceType"]
            version_rows.append(
                {
                    "res_pk": position,
                    "version": 1,
                    "res_type": res_type,
                    "ts": ts,
                    "method": "POST",
                    "body": _deflate(done.body),
                }
            )
            for param_type, index in as_stored(conn, res_type, done.rows, position).items():
                index_batches.setdefault(param_type, []).extend(index)
        batches = {INDEX_TABLES[param_type]: batch for param_type, batch in index_batches.items()}
        key = ("res_type", "res_id")
        returned = insert_with_children(conn, resources, rows, key, {resource_versions: version_rows, **batches})
        pk_of = {(res_type, res_id): res_pk for res_type, res_id, res_pk in returned}
        versions = [
            Version(resource["resourceType"], res_id, 1, ts, "POST", done.body, pk_of[resource["resourceType"], res_id])
            for (resource, res_id), done in zip(items, ready, strict=True)
        ]
        self._written(conn, versions)
        return versions

    def update(
        self,
        conn: Connection,
        res_type: str,
        res_id: str,
        resource: dict[str, Any],
        *,
        if_match: int | None = None,
        method: str = "PUT",
        read: Version | None = None,
        reindex_changed: bool = False,
    ) -> WriteResult:
        """Write a new version; creates the resource when the client names a new id (R4B §3.1.0.4).

        ``read``: the current version as the caller has read it with ``lock`` in this unit of work (not read
        again). ``reindex_changed``: only the index rows of parameters that may read a top-level element that
        changed are written again; the others stay as stored (the MPI's goldens, whose rebuilds change a few).
        """
        existing = read if read is not None else self.current(conn, res_type, res_id, lock=True)
        if existing is None:
            if if_match is not None:
                raise not_found(f"{res_type}/{res_id} does not exist, so If-Match cannot hold.")
            result = self.create(conn, resource, res_id=res_id)
            return result
        if if_match is not None and if_match != existing.version:
            raise precondition_failed(
                f"{res_type}/{res_id} is at version {existing.version}, not {if_match}: "
                "read it again and re-apply your change."
            )
        version = existing.version + 1
        ts = max(_now(), existing.ts + 1)
        self._owner(resource)  # stamped; the owner stays the creator
        body = _stamp(resource, res_id, version, ts)
        bump = {"bump_pk": existing.res_pk, "bump_from": existing.version, "bump_to": version, "bump_ts": ts}
        bumped = conn.execute(_BUMP, bump | {"bump_deleted": False}).rowcount
        if bumped != 1:
            raise precondition_failed(f"{res_type}/{res_id} was changed concurrently; retry with its new version.")
        changed = None
        if not existing.deleted:
            before = orjson.loads(existing.body) if reindex_changed else {}  # type: ignore[arg-type]
            if reindex_changed:
                changed = _changed_elements(before, resource)
            if changed is None or not self._drop_index_except(conn, existing.res_pk, res_type, changed, before):
                changed = None
                self._drop_index(conn, existing.res_pk)
        self._write_version(conn, existing.res_pk, res_type, version, ts, method, body, resource, only=changed)
        created = existing.deleted
        written = Version(res_type, res_id, version, ts, method, body, existing.res_pk)
        self._written(conn, [written])
        return WriteResult(written, created=created)

    def delete(self, conn: Connection, res_type: str, res_id: str, *, if_match: int | None = None) -> Version | None:
        """Write a tombstone version; deleting what is already deleted or unknown changes nothing."""
        existing = self.current(conn, res_type, res_id, lock=True)
        if existing is None:
            if if_match is not None:
                raise not_found(f"{res_type}/{res_id} does not exist.")
            return None
        if if_match is not None and if_match != existing.version:
            raise precondition_failed(f"{res_type}/{res_id} is at version {existing.version}, not {if_match}.")
        if existing.deleted:
            return existing
        version = existing.version + 1
        ts = max(_now(), existing.ts + 1)
        bumped = conn.execute(
            update(resources)
            .where(resources.c.res_pk == existing.res_pk, resources.c.version == existing.version)
            .values(version=version, ts=ts, deleted=True)
        ).rowcount
        if bumped != 1:
            raise precondition_failed(f"{res_type}/{res_id} was changed concurrently; retry.")
        self._write_version(conn, existing.res_pk, res_type, version, ts, "DELETE", None)
        self._drop_index(conn, existing.res_pk)
        tombstone = Version(res_type, res_id, version, ts, "DELETE", None, existing.res_pk)
        self._written(conn, [tombstone])
        return tombstone

    def reindex(self, conn: Connection, version: Version) -> None:
        self._write_index(conn, version.res_pk, version.res_type, version.resource(), replace=True)

    def deleted_resources(self, conn: Connection, res_type: str, *, limit: int) -> list[Version]:
        """Tombstones (current versions of deleted resources) of a type, oldest resource first."""
        pks = conn.execute(
            select(resources.c.res_pk)
            .where(resources.c.res_type == res_type, resources.c.deleted.is_(True))
            .order_by(resources.c.res_pk)
            .limit(limit)
        ).scalars()
        return self.load_many(conn, list(pks))

    def expunge(self, conn: Connection, res_pks: Sequence[int]) -> int:
        """Hard-delete resources: every version, every index row and the resource row; returns versions removed."""
        if not res_pks:
            return 0
        for table in INDEX_TABLES.values():
            conn.execute(delete(table).where(table.c.res_pk.in_(res_pks)))
        removed = conn.execute(delete(resource_versions).where(resource_versions.c.res_pk.in_(res_pks))).rowcount
        conn.execute(delete(resources).where(resources.c.res_pk.in_(res_pks)))
        return removed

    def _write_version(
        self,
        conn: Connection,
        res_pk: int,
        res_type: str,
        version: int,
        ts: int,
        method: str,
        body: bytes | None,
        resource: dict[str, Any] | None = None,
        *,
        only: frozenset[str] | None = None,
    ) -> None:
        """The version row and the index rows of ``resource`` (``only``: of the parameters that may read those
        top-level elements): one statement on PostgreSQL (the caller has removed the index rows it replaces)."""
        row = {"res_pk": res_pk, "version": version, "res_type": res_type, "ts": ts, "method": method}
        batches = {resource_versions: [{**row, "body": _deflate(body)}]}
        if resource is not None:
            rows = index_rows(self.registry, res_type, resource, only=only)
            for param_type, typed in as_stored(conn, res_type, rows, res_pk).items():
                batches[INDEX_TABLES[param_type]] = typed
        insert_many(conn, batches)

    def _write_index(
        self, conn: Connection, res_pk: int, res_type: str, resource: dict[str, Any], *, replace: bool
    ) -> None:
        if replace:
            self._drop_index(conn, res_pk)
        for param_type, rows in stored_rows(conn, self.registry, res_type, resource, res_pk).items():
            insert_rows(conn, INDEX_TABLES[param_type], rows)

    def _drop_index(self, conn: Connection, res_pk: int) -> None:
        delete_many(conn, tuple(INDEX_TABLES.values()), "res_pk", res_pk)

    def _drop_index_except(
        self, conn: Connection, res_pk: int, res_type: str, changed: frozenset[str], before: dict[str, Any]
    ) -> bool:
        """Remove the index rows that a change of the top-level elements ``changed`` may change, keeping the
        rest (:func:`~fhir_server.search.index.unchanged_rows`); False (nothing removed) when none is kept.
        On SQLite only the tables that ``before`` (the version replaced) has such rows in are visited."""
        kept = sorted(unchanged_rows(self.registry, res_type, changed))
        if not kept:
            return False
        if is_postgres(conn):
            values = {"res_pk": res_pk, "res_type": res_type, "names": kept}
            conn.exec_driver_sql(_drop_except_sql(conn.dialect, 0)[0], values)
        else:
            present = index_rows(self.registry, res_type, before, only=changed)
            for param_type, sql in zip(INDEX_TABLES, _drop_except_sql(conn.dialect, len(kept)), strict=True):
                if param_type in present:
                    conn.exec_driver_sql(sql, (res_pk, res_type, *kept))
        return True

    # -- history -------------------------------------------------------------------------------

    def history(
        self,
        conn: Connection,
        *,
        res_type: str | None = None,
        res_id: str | None = None,
        since: int | None = None,
        at: tuple[int, int] | None = None,
        count: int = 20,
        after: tuple[int, int, int] | None = None,
        visible: Callable[[Any, str | None], ColumnElement[bool]] | None = None,
    ) -> list[Version]:
        """Versions newest first (R4B §3.1.0.10), keyset-paged after ``(ts, res_pk, version)``.

        ``visible`` builds the access condition on the resource row (versions of resources the caller may read).
        """
        v = resource_versions.c
        query = select(v.res_pk, v.version, v.res_type, v.ts, v.method, v.body, resources.c.res_id).join(
            resources, resources.c.res_pk == v.res_pk
        )
        if res_type is not None:
            query = query.where(v.res_type == res_type)
        if res_id is not None:
            query = query.where(resources.c.res_id == res_id)
        if since is not None:
            query = query.where(v.ts >= since)
        if at is not None:
            newer = resource_versions.alias("newer")
            query = query.where(
                v.ts <= at[1],
                ~exists().where(newer.c.res_pk == v.res_pk, newer.c.version > v.version, newer.c.ts <= at[0]),
            )
        if after is not None:
            query = query.where(_before(after))
        if visible is not None:
            query = query.where(visible(resources, res_type))
        query = query.order_by(v.ts.desc(), v.res_pk.desc(), v.version.desc()).limit(count)
        return [
            Version(r.res_type, r.res_id, r.version, r.ts, r.method, _inflate(r.body), r.res_pk)
            for r in conn.execute(query)
        ]

    def lock_condition(self, conn: Connection, key: str) -> None:
        """Serialise writers that test the same condition (conditional create/update) until commit."""
        if is_postgres(conn):
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(key)})
        # SQLite writers already hold the database write lock (BEGIN IMMEDIATE).


def _before(after: tuple[int, int, int]) -> ColumnElement[bool]:
    ts, res_pk, version = after
    v = resource_versions.c
    return or_(
        v.ts < ts,
        and_(v.ts == ts, or_(v.res_pk < res_pk, and_(v.res_pk == res_pk, v.version < version))),
    )


def _lock_key(key: str) -> int:
    value = zlib.crc32(key.encode()) | (zlib.adler32(key.encode()) << 32)
    return value - 2**64 if value >= 2**63 else value


def _now() -> int:
    return time.time_ns() // 1000


def _stamp(resource: dict[str, Any], res_id: str, version: int, ts: int) -> bytes:
    """Set id and meta.versionId/lastUpdated (server-assigned) and serialise once."""
    resource["id"] = res_id
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = instant(ts)
    resource["meta"] = meta
    return orjson.dumps(resource)


def _changed_elements(before: dict[str, Any], after: dict[str, Any]) -> frozenset[str]:
    """The top-level elements that differ between two versions; ``meta`` apart from the server's versionId and
    lastUpdated (which no index row reads). Compared as JSON: ``1`` and ``1.0`` differ (their rows do)."""
    changed = {
        key
        for key in before.keys() | after.keys()
        if key != "meta"
        and (key not in before or key not in after or orjson.dumps(before[key]) != orjson.dumps(after[key]))
    }
    if orjson.dumps(_searchable_meta(before)) != orjson.dumps(_searchable_meta(after)):
        changed.add("meta")
    return frozenset(changed)


def _searchable_meta(resource: dict[str, Any]) -> dict[str, Any]:
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        return {"meta": meta}
    return {key: value for key, value in meta.items() if key not in ("versionId", "lastUpdated")}


@cache
def _drop_except_sql(dialect: Any, kept: int) -> tuple[str, ...]:
    """Statements deleting a resource's index rows but those of ``kept`` parameters (the ids read by the
    statement): one for every table on PostgreSQL (``%(names)s`` an array), one per table on SQLite (bound:
    ``res_pk``, the type, the ``kept`` names)."""
    tables = [dialect.identifier_preparer.format_table(table) for table in INDEX_TABLES.values()]
    ids = dialect.identifier_preparer.format_table(search_param_ids)
    if dialect.name == "postgresql":
        keep = f"SELECT param_id FROM {ids} WHERE res_type = %(res_type)s AND param = ANY(%(names)s)"
        deletes = [
            f"DELETE FROM {t} WHERE res_pk = %(res_pk)s AND param_id NOT IN (SELECT param_id FROM k)" for t in tables
        ]
        chained = ", ".join(f"d{i} AS ({sql})" for i, sql in enumerate(deletes[:-1]))
        return (f"WITH k AS ({keep}), {chained} {deletes[-1]}",)
    keep = f"SELECT param_id FROM {ids} WHERE res_type = ? AND param IN ({', '.join('?' * kept)})"
    return tuple(f"DELETE FROM {t} WHERE res_pk = ? AND param_id NOT IN ({keep})" for t in tables)


def _deflate(body: bytes | None) -> bytes | None:
    """The stored form of a body (``fhir_server.storage.codec``); None is a delete tombstone."""
    return None if body is None else encode_body(body)


def _inflate(body: bytes | None) -> bytes | None:
    return None if body is None else decode_body(body)


_NEW_RESOURCE = insert(resources).returning(resources.c.res_pk)
"""A new resource row, built once."""

_BUMP = (
    update(resources)
    .where(resources.c.res_pk == bindparam("bump_pk"), resources.c.version == bindparam("bump_from"))
    .values(version=bindparam("bump_to"), ts=bindparam("bump_ts"), deleted=bindparam("bump_deleted"))
)
"""A resource row moved to its next version if it is still at the version read, built once."""

_CURRENT_VERSION = and_(
    resource_versions.c.res_pk == resources.c.res_pk, resource_versions.c.version == resources.c.version
)
"""Join condition of a resource and its current version."""

_CURRENT = (
    select(
        resources.c.res_pk,
        resources.c.version,
        resources.c.owner_org,
        resource_versions.c.ts,
        resource_versions.c.method,
        resource_versions.c.body,
    )
    .join(resource_versions, _CURRENT_VERSION)
    .where(resources.c.res_type == bindparam("current_type"), resources.c.res_id == bindparam("current_id"))
)
"""The current version of one resource, built once (a read builds no SQL constructs of its own)."""

_MANY_CURRENT = (
    select(
        resources.c.res_pk,
        resources.c.res_type,
        resources.c.res_id,
        resources.c.version,
        resource_versions.c.ts,
        resource_versions.c.method,
        resource_versions.c.body,
    )
    .join(resource_versions, _CURRENT_VERSION)
    .where(resources.c.res_pk.in_(bindparam("many_pks", expanding=True)))
)
"""The current versions of several resources (``load_many``), built once."""

_HEAD_FOR_UPDATE = (
    select(resources.c.res_pk, resources.c.version)
    .where(resources.c.res_type == bindparam("current_type"), resources.c.res_id == bindparam("current_id"))
    .with_for_update()
)
"""The resource row of a writer, locked on its own (see :meth:`Repository.current`), built once."""

_VERSION_ROW = select(resource_versions.c.ts, resource_versions.c.method, resource_versions.c.body).where(
    resource_versions.c.res_pk == bindparam("version_pk"), resource_versions.c.version == bindparam("version_no")
)
"""One version of a resource, built once."""


def expect_id(resource: dict[str, Any], url_id: str) -> None:
    """On update the body's id must be present and equal the URL's (R4B §3.1.0.4)."""
    body_id = resource.get("id")
    if body_id is None:
        raise invalid(f"The resource has no id; an update of {url_id} must carry id '{url_id}'.", expression=("id",))
    if body_id != url_id:
        raise invalid(f"The body's id '{body_id}' does not match the id '{url_id}' in the URL.", expression=("id",))


__all__ = [
    "FhirError",
    "PreparedCreate",
    "Repository",
    "StampHook",
    "Version",
    "WriteHook",
    "WriteResult",
    "check_id",
    "expect_id",
    "instant",
]
