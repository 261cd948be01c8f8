"""The MPI's own tables (migrations 0009, 0014): goldens, records with their golden and blocking keys, decisions,
merges, and the goldens waiting to be rebuilt after commit.

Only this module touches them; FHIR resources are written through the FHIR service. Blocking keys are stored as
64-bit hashes under a primary key ``(key_hash, source_id)``, so the candidates of a record are one index probe per
key whatever the size of the index (a hash collision only adds a candidate that scores low).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Connection, Integer, Table, bindparam, delete, func, insert, select, text, update

from ehr_archive.mpi.records import Member
from fhir_server.repository import Version
from fhir_server.storage.codec import decode_body
from fhir_server.storage.inserts import insert_many
from fhir_server.storage.tables import (
    mpi_blocking_keys,
    mpi_distinct,
    mpi_golden_queue,
    mpi_goldens,
    mpi_merges,
    mpi_records,
    resource_versions,
    resources,
)

MAX_BLOCK_SIZE = 500
"""A key shared by more records than this (a clinic's phone) is skipped rather than scanned."""


@dataclass(frozen=True)
class Record:
    """One row of ``mpi_records``."""

    source_id: str
    golden_id: str
    link_kind: str
    active: bool
    demographics: dict[str, Any]
    updated_at: int

    def member(self) -> Member:
        return Member(self.source_id, self.demographics, self.updated_at, self.active)


@dataclass(frozen=True, slots=True)
class Candidate:
    """An active record sharing a blocking key: its golden and its demographics as stored (JSON text, which
    the matcher keys its cache of folded records on, so a cached candidate is never decoded)."""

    source_id: str
    golden_id: str
    stored: str

    @property
    def demographics(self) -> dict[str, Any]:
        return orjson.loads(self.stored)


def key_hash(key: str) -> int:
    """A signed 64-bit hash of a blocking key (BLAKE2b)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def now_micros() -> int:
    return time.time_ns() // 1000


def _record(row: Any) -> Record:
    return Record(
        row.source_id, row.golden_id, row.link_kind, bool(row.active), orjson.loads(row.demographics), row.updated_at
    )


# -- goldens ---------------------------------------------------------------------------------------------------


def golden_active(conn: Connection, golden_id: str) -> bool | None:
    """True/False for a known golden, None when the id is not a golden."""
    return conn.execute(_GOLDEN_ACTIVE, {"golden_id": golden_id}).scalar_one_or_none()


_GOLDEN_ACTIVE = select(mpi_goldens.c.active).where(mpi_goldens.c.golden_id == bindparam("golden_id"))


def goldens_among(conn: Connection, ids: Iterable[str]) -> set[str]:
    wanted = list(set(ids))
    if not wanted:
        return set()
    return set(conn.execute(select(mpi_goldens.c.golden_id).where(mpi_goldens.c.golden_id.in_(wanted))).scalars())


def lock_keys(conn: Connection, keys: Iterable[str]) -> None:
    """Serialise writers of records sharing a blocking key until commit (PostgreSQL advisory locks, one statement,
    taken in hash order so two writers never wait for each other); SQLite writers hold the database lock."""
    if conn.dialect.name != "postgresql":
        return
    hashes = sorted({key_hash(f"mpi:{key}") for key in keys})
    if hashes:
        conn.execute(
            text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k"), {"keys": hashes}
        )


@dataclass(frozen=True)
class GoldenState:
    """What a rebuild of a golden reads: its row's ``active`` (None: no row yet), its current version (None:
    never written) and its records, by source id."""

    active: bool | None
    current: Version | None
    members: list[Record]


def golden_state(conn: Connection, golden_id: str) -> GoldenState:
    """The :class:`GoldenState` of ``golden_id`` in one statement. No row lock: every writer of a golden holds
    its ``mpi-golden`` lock first (:meth:`~ehr_archive.mpi.service.MasterPatientIndex.refresh_golden`), and the
    version bump of the write checks the version read here."""
    rows = conn.execute(_GOLDEN_STATE, {"golden_id": golden_id}).all()
    first = rows[0]
    current = None
    if first.res_pk is not None:
        body = None if first.body is None else decode_body(first.body)
        current = Version("Patient", golden_id, first.version, first.ts, first.method, body, first.res_pk)
    members = [_record(row) for row in rows if row.source_id is not None]
    return GoldenState(None if first.golden_active is None else bool(first.golden_active), current, members)


_GOLDEN_STATE = text(
    f"SELECT g.active AS golden_active, h.res_pk, h.version, v.ts, v.method, v.body, r.source_id, r.golden_id, "
    f"r.link_kind, r.active, r.demographics, r.updated_at FROM (SELECT 1 AS one) AS o "
    f"LEFT JOIN {mpi_goldens.name} AS g ON g.golden_id = :golden_id "
    f"LEFT JOIN {resources.name} AS h ON h.res_type = 'Patient' AND h.res_id = :golden_id "
    f"LEFT JOIN {resource_versions.name} AS v ON v.res_pk = h.res_pk AND v.version = h.version "
    f"LEFT JOIN {mpi_records.name} AS r ON r.golden_id = :golden_id ORDER BY r.source_id"
)


def save_golden(conn: Connection, golden_id: str, *, active: bool, known: bool | None) -> None:
    """Store whether a golden is active; ``known``: its row's ``active`` as read (None: no row yet)."""
    if known is None:
        conn.execute(insert(mpi_goldens).values(golden_id=golden_id, active=active))
    elif known != active:
        conn.execute(update(mpi_goldens).where(mpi_goldens.c.golden_id == golden_id).values(active=active))


# -- records and blocking keys ------------------------------------------------------------------------------------


def get_record(conn: Connection, source_id: str) -> Record | None:
    row = conn.execute(select(mpi_records).where(mpi_records.c.source_id == source_id)).first()
    return _record(row) if row is not None else None


def golden_or_record(conn: Connection, patient_id: str) -> tuple[bool, Record | None]:
    """Whether ``patient_id`` is a golden, and its record if it is a filed source: one statement."""
    row = conn.execute(_GOLDEN_OR_RECORD, {"patient_id": patient_id}).one()
    return bool(row.is_golden), (_record(row) if row.source_id is not None else None)


_GOLDEN_OR_RECORD = text(
    f"SELECT g.golden_id IS NOT NULL AS is_golden, r.source_id, r.golden_id, r.link_kind, r.active, r.demographics, "
    f"r.updated_at FROM (SELECT 1 AS one) AS o "
    f"LEFT JOIN {mpi_goldens.name} AS g ON g.golden_id = :patient_id "
    f"LEFT JOIN {mpi_records.name} AS r ON r.source_id = :patient_id"
)


def members(conn: Connection, golden_id: str) -> list[Record]:
    return [_record(row) for row in conn.execute(_MEMBERS, {"golden_id": golden_id})]


_MEMBERS = (
    select(mpi_records).where(mpi_records.c.golden_id == bindparam("golden_id")).order_by(mpi_records.c.source_id)
)


def save_record(
    conn: Connection,
    source_id: str,
    *,
    golden_id: str,
    link_kind: str,
    demographics: dict[str, Any],
    keys: Iterable[str],
    active: bool = True,
    new: bool = False,
    new_golden: bool = False,
    queue: Iterable[str] = (),
) -> None:
    """Insert or replace a record and its blocking keys (an inactive record keeps none); ``new``: the caller
    knows there is no row yet; ``new_golden``: reserve the id of a new golden too; ``queue``: goldens
    to rebuild after commit (:func:`queue_golden`). A new record is one statement on PostgreSQL."""
    stamp = now_micros()
    values = {
        "golden_id": golden_id,
        "link_kind": link_kind,
        "active": active,
        "demographics": orjson.dumps(demographics).decode(),
        "updated_at": stamp,
    }
    batches: dict[Table, list[dict[str, Any]]] = {}
    if new_golden:
        batches[mpi_goldens] = [{"golden_id": golden_id, "active": True}]
    exists = (
        None
        if new
        else conn.execute(select(mpi_records.c.source_id).where(mpi_records.c.source_id == source_id)).first()
    )
    if exists is None:
        batches[mpi_records] = [{"source_id": source_id, **values}]
    else:
        conn.execute(update(mpi_records).where(mpi_records.c.source_id == source_id).values(**values))
    if not new:
        conn.execute(delete(mpi_blocking_keys).where(mpi_blocking_keys.c.source_id == source_id))
    hashes = sorted({key_hash(key) for key in keys}) if active else []
    batches[mpi_blocking_keys] = [{"key_hash": h, "source_id": source_id} for h in hashes]
    batches[mpi_golden_queue] = [{"golden_id": g, "queued_at": stamp} for g in queue]
    insert_many(conn, batches)


def relink(conn: Connection, source_id: str, golden_id: str, link_kind: str) -> None:
    conn.execute(
        update(mpi_records).where(mpi_records.c.source_id == source_id).values(golden_id=golden_id, link_kind=link_kind)
    )


def remove_record(conn: Connection, source_id: str) -> None:
    conn.execute(delete(mpi_blocking_keys).where(mpi_blocking_keys.c.source_id == source_id))
    conn.execute(delete(mpi_records).where(mpi_records.c.source_id == source_id))


def candidates(conn: Connection, keys: Iterable[str], *, exclude: str | None = None) -> list[Candidate]:
    """Active records sharing a blocking key with ``keys``, by source id: an index probe per key, blocks over
    :data:`MAX_BLOCK_SIZE` skipped, in one statement whose text is built once per number of keys."""
    hashes = sorted({key_hash(key) for key in keys})
    if not hashes:
        return []
    sql = _candidates_statement(conn.dialect.paramstyle == "qmark", len(hashes))
    return [Candidate(*row) for row in conn.exec_driver_sql(sql, (*hashes, exclude or ""))]


@cache
def _candidates_statement(qmark: bool, keys: int) -> str:
    marker = "?" if qmark else "%s"
    keys_table, records_table = mpi_blocking_keys.name, mpi_records.name
    probe = f"SELECT key_hash, source_id FROM {keys_table} WHERE key_hash = {marker} LIMIT {MAX_BLOCK_SIZE + 1}"
    probes = " UNION ALL ".join(f"SELECT * FROM ({probe}) AS p{i}" for i in range(keys))
    return (
        f"WITH probes AS ({probes}), usable AS "
        f"(SELECT key_hash FROM probes GROUP BY key_hash HAVING count(*) <= {MAX_BLOCK_SIZE}) "
        f"SELECT r.source_id, r.golden_id, r.demographics FROM {records_table} AS r WHERE r.active AND r.source_id IN "
        "(SELECT source_id FROM probes WHERE key_hash IN (SELECT key_hash FROM usable)) "
        f"AND r.source_id <> {marker} ORDER BY r.source_id"
    )


def owned_members(conn: Connection, golden_ids: Iterable[str], org: str) -> dict[str, list[Record]]:
    """The active records of these goldens that institution ``org`` wrote (``resources.owner_org``)."""
    wanted = sorted(set(golden_ids))
    if not wanted:
        return {}
    query = (
        select(mpi_records)
        .join(resources, (resources.c.res_type == "Patient") & (resources.c.res_id == mpi_records.c.source_id))
        .where(
            mpi_records.c.golden_id.in_(wanted),
            mpi_records.c.active.is_(True),
            resources.c.owner_org == org,
            resources.c.deleted.is_(False),
        )
        .order_by(mpi_records.c.source_id)
    )
    found: dict[str, list[Record]] = {}
    for row in conn.execute(query):
        found.setdefault(row.golden_id, []).append(_record(row))
    return found


# -- review decisions ------------------------------------------------------------------------------------------


def distinct_goldens(conn: Connection, source_id: str) -> set[str]:
    return set(conn.execute(select(mpi_distinct.c.golden_id).where(mpi_distinct.c.source_id == source_id)).scalars())


def add_distinct(conn: Connection, source_id: str, golden_id: str) -> None:
    if golden_id not in distinct_goldens(conn, source_id):
        conn.execute(insert(mpi_distinct).values(source_id=source_id, golden_id=golden_id, decided_at=now_micros()))


def forget_distinct(conn: Connection, source_id: str, golden_id: str) -> None:
    conn.execute(
        delete(mpi_distinct).where(mpi_distinct.c.source_id == source_id, mpi_distinct.c.golden_id == golden_id)
    )


# -- goldens to rebuild after commit (migration 0014) -------------------------------------------------------------


def queue_golden(conn: Connection, golden_id: str) -> None:
    """Ask for a rebuild of ``golden_id`` once this unit of work has committed (an append-only row)."""
    conn.execute(insert(mpi_golden_queue).values(golden_id=golden_id, queued_at=now_micros()))


def take_queued(conn: Connection, *, limit: int) -> dict[str, list[int]]:
    """Remove the oldest queued goldens (at most ``limit`` rows) and return them, ``{golden_id: [queue row ids]}``
    in queue order: a rebuild forgets exactly the rows it saw when its unit of work commits; a row queued
    meanwhile stays for the next one. On PostgreSQL the rows another drain holds are skipped, not waited for."""
    rows = sorted(conn.execute(_TAKE_QUEUED, {"limit": limit}))
    found: dict[str, list[int]] = {}
    for row_id, golden_id in rows:
        found.setdefault(golden_id, []).append(row_id)
    return found


_TAKE_QUEUED = (
    delete(mpi_golden_queue)
    .where(
        mpi_golden_queue.c.id.in_(
            select(mpi_golden_queue.c.id)
            .order_by(mpi_golden_queue.c.id)
            .limit(bindparam("limit", type_=Integer))
            .with_for_update(skip_locked=True)
        )
    )
    .returning(mpi_golden_queue.c.id, mpi_golden_queue.c.golden_id)
)


def is_queued(conn: Connection, golden_id: str) -> bool:
    query = select(mpi_golden_queue.c.id).where(mpi_golden_queue.c.golden_id == golden_id).limit(1)
    return conn.execute(query).first() is not None


def queue_length(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(mpi_golden_queue)).scalar_one())


# -- records not filed yet (the back-fill) --------------------------------------------------------------------------


def unfiled_patients(conn: Connection, *, after: int, limit: int) -> list[tuple[int, str]]:
    """``(res_pk, res_id)`` of current Patients after ``after`` (key order) that are neither filed nor goldens."""
    query = (
        select(resources.c.res_pk, resources.c.res_id)
        .where(
            resources.c.res_type == "Patient",
            resources.c.deleted.is_(False),
            resources.c.res_pk > after,
            ~select(mpi_records.c.source_id).where(mpi_records.c.source_id == resources.c.res_id).exists(),
            ~select(mpi_goldens.c.golden_id).where(mpi_goldens.c.golden_id == resources.c.res_id).exists(),
        )
        .order_by(resources.c.res_pk)
        .limit(limit)
    )
    return [(row.res_pk, row.res_id) for row in conn.execute(query)]


def count_unfiled(conn: Connection) -> int:
    query = (
        select(func.count())
        .select_from(resources)
        .where(
            resources.c.res_type == "Patient",
            resources.c.deleted.is_(False),
            ~select(mpi_records.c.source_id).where(mpi_records.c.source_id == resources.c.res_id).exists(),
            ~select(mpi_goldens.c.golden_id).where(mpi_goldens.c.golden_id == resources.c.res_id).exists(),
        )
    )
    return int(conn.execute(query).scalar_one())


# -- merges --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Merge:
    id: int
    kind: str
    source_id: str
    target_id: str
    state: dict[str, Any]


def add_merge(conn: Connection, kind: str, source_id: str, target_id: str, state: dict[str, Any]) -> int:
    return conn.execute(
        insert(mpi_merges)
        .values(
            kind=kind,
            source_id=source_id,
            target_id=target_id,
            state=orjson.dumps(state).decode(),
            merged_at=now_micros(),
        )
        .returning(mpi_merges.c.id)
    ).scalar_one()


def last_merge(conn: Connection, source_id: str) -> Merge | None:
    """The latest merge of ``source_id`` not undone yet."""
    row = conn.execute(
        select(mpi_merges)
        .where(mpi_merges.c.source_id == source_id, mpi_merges.c.undone_at.is_(None))
        .order_by(mpi_merges.c.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return Merge(row.id, row.kind, row.source_id, row.target_id, orjson.loads(row.state))


def mark_undone(conn: Connection, merge_id: int) -> None:
    conn.execute(update(mpi_merges).where(mpi_merges.c.id == merge_id).values(undone_at=now_micros()))


def load_records(conn: Connection, rows: list[tuple[str, str, str, dict[str, Any], Iterable[str]]]) -> None:
    """Bulk load ``(source_id, golden_id, link_kind, demographics, keys)`` of new records and their goldens.

    For initial loads and benchmarks: one statement per table, no matching (the caller decided the goldens).
    """
    if not rows:
        return
    stamp = now_micros()
    goldens = sorted({golden_id for _, golden_id, _, _, _ in rows})
    conn.execute(insert(mpi_goldens), [{"golden_id": g, "active": True} for g in goldens])
    conn.execute(
        insert(mpi_records),
        [
            {
                "source_id": source_id,
                "golden_id": golden_id,
                "link_kind": kind,
                "active": True,
                "demographics": orjson.dumps(demographics).decode(),
                "updated_at": stamp,
            }
            for source_id, golden_id, kind, demographics, _ in rows
        ],
    )
    keys = [
        {"key_hash": h, "source_id": source_id}
        for source_id, _, _, _, record_keys in rows
        for h in sorted({key_hash(key) for key in record_keys})
    ]
    if keys:
        conn.execute(insert(mpi_blocking_keys), keys)
