"""Bulk Data export jobs (Bulk Data Access IG v2 §$export): kick-off, run, status, manifest, cancel, expiry.

Job state lives in the database and files on disk under ``export_dir/<job id>/``. A worker claims a job
with a lease and writes each NDJSON file to a temporary name, renames it when whole and only then records
it, so a restarted worker resumes after the last recorded file and a job is complete only when every
recorded file is there. Resource bodies are copied as stored, never re-serialised: each chunk is one query
of ``(res_pk, stored body)`` (streamed from a server-side cursor on PostgreSQL), decompressed and written to
the file in one buffered write.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, or_, select, update

from fhir_server.access import Access
from fhir_server.access.inprocess import audited_task
from fhir_server.bulk.scope import (
    ExportScope,
    chunk_query,
    deleted_query,
    export_types,
    group_members,
    present_types,
    was_in_compartment,
)
from fhir_server.bulk.tables import export_files, export_jobs
from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.repository import Repository, instant
from fhir_server.search.parameters import Registry
from fhir_server.storage.codec import decode_body
from fhir_server.storage.engine import unit_of_work

log = logging.getLogger("hie.bulk")

ACTIVE = ("queued", "running")
MAX_ATTEMPTS = 3
DELETED = "deleted"
"""Name prefix of the files of the manifest's ``deleted`` array (transaction Bundles of DELETE entries)."""
DELETES_PER_BUNDLE = 100
STREAM_ROWS = 2000
"""Rows fetched at a time from the chunk's cursor (a server-side cursor on PostgreSQL)."""
WRITE_BUFFER = 1 << 20


def now_micros() -> int:
    return time.time_ns() // 1000


class ExportStopped(Exception):
    """The worker is stopping, lost its lease or the job was cancelled: leave the job to its new state."""


@dataclass(frozen=True)
class ExportFile:
    name: str
    res_type: str
    part: int
    count: int
    bytes: int
    last_pk: int

    @property
    def deleted(self) -> bool:
        """A file of the ``deleted`` array rather than of ``output``."""
        return self.name.startswith(DELETED + ".")


def kickoff(conn: Connection, scope: ExportScope, request_url: str) -> str:
    """Record a queued job; the caller enqueues it after commit. Returns the job id."""
    job_id = str(uuid.uuid4())
    now = now_micros()
    conn.execute(
        insert(export_jobs).values(
            id=job_id,
            status="queued",
            level=scope.level,
            group_id=scope.group_id,
            types=json.dumps(scope.types) if scope.types else None,
            since=scope.since,
            type_filters=json.dumps(scope.type_filters) if scope.type_filters else None,
            requester=scope.access.to_json(),
            request_url=request_url,
            transaction_time=now,
            created_at=now,
            progress="queued",
            attempts=0,
            lease_until=0,
        )
    )
    return job_id


def job(conn: Connection, job_id: str) -> Any:
    return conn.execute(select(export_jobs).where(export_jobs.c.id == job_id)).first()


def files(conn: Connection, job_id: str) -> list[ExportFile]:
    rows = conn.execute(
        select(export_files)
        .where(export_files.c.job_id == job_id)
        .order_by(export_files.c.res_type, export_files.c.part)
    )
    return [ExportFile(r.name, r.res_type, r.part, r.count, r.bytes, r.last_pk) for r in rows]


def job_dir(settings: Settings, job_id: str) -> Path:
    return Path(settings.export_dir) / job_id


def missing_files(settings: Settings, job_id: str, recorded: list[ExportFile]) -> list[str]:
    """Recorded files that are not on disk whole."""
    folder = job_dir(settings, job_id)
    return [f.name for f in recorded if not _whole(folder / f.name, f.bytes)]


def _whole(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def manifest(row: Any, recorded: list[ExportFile], base_url: str) -> dict[str, Any]:
    """The complete-status body (Bulk Data IG v2 §Response - Complete Status)."""
    return {
        "transactionTime": instant(row.transaction_time),
        "request": row.request_url,
        "requiresAccessToken": True,
        "output": [_file_item(row.id, f, base_url) for f in recorded if not f.deleted],
        "deleted": [_file_item(row.id, f, base_url) for f in recorded if f.deleted],
        "error": [],
    }


def _file_item(job_id: str, found: ExportFile, base_url: str) -> dict[str, Any]:
    return {"type": found.res_type, "url": f"{base_url}/$export-file/{job_id}/{found.name}", "count": found.count}


def cancel(conn: Connection, settings: Settings, job_id: str) -> bool:
    """Cancel a job that is not over yet or whose files are still kept; its files are deleted."""
    found = job(conn, job_id)
    if found is None or found.status not in (*ACTIVE, "complete"):
        return False
    conn.execute(update(export_jobs).where(export_jobs.c.id == job_id).values(status="cancelled", progress="cancelled"))
    conn.execute(delete(export_files).where(export_files.c.job_id == job_id))
    shutil.rmtree(job_dir(settings, job_id), ignore_errors=True)
    return True


def expire(engine: Engine, settings: Settings) -> int:
    """Delete the files of complete jobs past their expiry time; their status becomes ``expired``."""
    now = now_micros()
    with unit_of_work(engine) as conn:
        due = conn.execute(
            select(export_jobs.c.id).where(export_jobs.c.status == "complete", export_jobs.c.expires_at < now)
        ).scalars()
        ids = list(due)
        if ids:
            conn.execute(
                update(export_jobs).where(export_jobs.c.id.in_(ids)).values(status="expired", progress="expired")
            )
            conn.execute(delete(export_files).where(export_files.c.job_id.in_(ids)))
    for job_id in ids:
        shutil.rmtree(job_dir(settings, job_id), ignore_errors=True)
    return len(ids)


class Exporter:
    """Runs export jobs: claim under a lease, write files, resume after a restart, finish or fail."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        registry: Registry,
        *,
        lease_seconds: float = 60.0,
        chunk: int = 10_000,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.registry = registry
        self.repository = Repository(registry)
        self.lease = int(lease_seconds * 1e6)
        self.heartbeat_every = min(1.0, lease_seconds / 4)
        """Seconds between lease renewals (and progress updates) while a type is written."""
        self.chunk = chunk
        self.stopping = threading.Event()

    def claimable(self) -> list[str]:
        """Queued jobs, and running ones whose worker's lease ran out (it died), oldest first."""
        now = now_micros()
        with unit_of_work(self.engine, write=False) as conn:
            return list(
                conn.execute(
                    select(export_jobs.c.id)
                    .where(
                        or_(
                            export_jobs.c.status == "queued",
                            (export_jobs.c.status == "running") & (export_jobs.c.lease_until < now),
                        )
                    )
                    .order_by(export_jobs.c.created_at)
                ).scalars()
            )

    def run_next(self) -> str | None:
        for job_id in self.claimable():
            if self.run(job_id):
                return job_id
        return None

    def run(self, job_id: str) -> bool:
        """Run (or resume) one job to its end; False when another worker holds it or it is over.

        Each run holds the job under its own token, so two runs in one process never share a lease.
        """
        owner = uuid.uuid4().hex
        if not self._claim(job_id, owner):
            return False
        with unit_of_work(self.engine, write=False) as conn:
            requester = Access.from_json(job(conn, job_id).requester)
        task = audited_task(
            self.engine, "$export", f"job {job_id}", organization=requester.org, client=requester.client
        )
        with task as work:  # the run is audited as background work for its requester
            work.always = True
            try:
                self._export(job_id, owner)
            except ExportStopped:
                self._release(job_id, owner)
                work.status = 503
            except Exception as exc:  # a failed job is recorded, never lost: retried, then reported as error
                log.exception("export %s failed", job_id)
                self._failed(job_id, owner, f"{type(exc).__name__}: {exc}")
                work.status = 500
        return True

    # -- the job -------------------------------------------------------------------------------

    def _export(self, job_id: str, owner: str) -> None:
        with unit_of_work(self.engine, write=False) as conn:
            row = job(conn, job_id)
            scope = ExportScope(
                row.level,
                row.group_id,
                json.loads(row.types) if row.types else None,
                row.since,
                json.loads(row.type_filters) if row.type_filters else [],
                access=Access.from_json(row.requester),
            )
            members = group_members(conn, self.repository, row.group_id) if row.level == "group" else None
            done = files(conn, job_id)
            present = present_types(conn)
        folder = job_dir(self.settings, job_id)
        folder.mkdir(parents=True, exist_ok=True)
        if missing_files(self.settings, job_id, done):
            done = self._restart(job_id, owner)
        recorded = {f.name for f in done}
        for leftover in folder.iterdir():
            if leftover.name not in recorded:
                leftover.unlink()
        types = export_types(scope)
        written = sum(f.count for f in done)
        limit = self.settings.export_file_max_resources
        beat = time.monotonic()
        for position, res_type in enumerate(types, start=1):
            if res_type not in present:
                continue
            mine = [f for f in done if f.res_type == res_type and not f.deleted]
            after = max((f.last_pk for f in mine), default=0)
            part = len(mine)
            out = _NdjsonFile(folder, res_type, part)
            while True:
                if self.stopping.is_set():
                    raise ExportStopped
                rows = 0
                rolled_over = False
                with unit_of_work(self.engine, write=False) as conn:
                    query = chunk_query(
                        conn, self.registry, scope, res_type, members=members, after=after, limit=self.chunk
                    )
                    result = conn.execute(query, execution_options={"yield_per": STREAM_ROWS})
                    for batch in result.partitions():
                        rows += len(batch)
                        after = batch[-1][0]
                        start = 0
                        while start < len(batch):
                            take = batch[start : start + limit - out.count]
                            out.write_many([decode_body(body) for _, body in take], take[-1][0])
                            start += len(take)
                            if out.count >= limit:
                                self._record(job_id, owner, out.finish())
                                rolled_over = True
                                part += 1
                                out = _NdjsonFile(folder, res_type, part)
                written += rows
                if rows and (rolled_over or time.monotonic() - beat >= self.heartbeat_every):
                    self._heartbeat(
                        job_id, owner, f"{res_type} ({position}/{len(types)} types), {written} resources written"
                    )
                    beat = time.monotonic()
                if rows < self.chunk:
                    break
            if out.count:
                self._record(job_id, owner, out.finish())
            out.discard()
        if scope.since is not None:
            self._export_deleted(job_id, owner, scope, types, members, [f for f in done if f.deleted])
        self._complete(job_id, owner)

    def _export_deleted(
        self,
        job_id: str,
        owner: str,
        scope: ExportScope,
        types: list[str],
        members: list[str] | None,
        done: list[ExportFile],
    ) -> None:
        """The ``deleted`` files: transaction Bundles with a ``DELETE Type/id`` entry per resource deleted since.

        Bulk Data IG v2 §Response - Complete Status. Resumes after the last recorded file like the output.
        """
        folder = job_dir(self.settings, job_id)
        after = max((f.last_pk for f in done), default=0)
        part = len(done)
        out = _NdjsonFile(folder, "Bundle", part, prefix=DELETED)
        listed = 0
        while True:
            if self.stopping.is_set():
                raise ExportStopped
            with unit_of_work(self.engine, write=False) as conn:
                limit = min(self.chunk, DELETES_PER_BUNDLE)
                rows = conn.execute(deleted_query(scope, types, after=after, limit=limit)).all()
                if not rows:
                    break
                after = rows[-1].res_pk
                if scope.level != "system":
                    rows = [row for row in rows if self._was_in_scope(conn, row, members)]
            if rows:
                out.write(_deletion_bundle(rows), after)
                listed += len(rows)
                if out.count >= self.settings.export_file_max_resources:
                    self._record(job_id, owner, out.finish())
                    part += 1
                    out = _NdjsonFile(folder, "Bundle", part, prefix=DELETED)
            self._heartbeat(job_id, owner, f"deleted resources: {listed} listed")
        if out.count:
            self._record(job_id, owner, out.finish())
        out.discard()

    def _was_in_scope(self, conn: Connection, row: Any, members: list[str] | None) -> bool:
        last_live = None
        if row.res_type != "Patient" and row.version > 1:
            try:
                last_live = self.repository.vread(conn, row.res_type, row.res_id, row.version - 1).resource()
            except FhirError:  # expunged meanwhile
                last_live = None
        return was_in_compartment(self.registry, row.res_type, row.res_id, last_live, members)

    def _restart(self, job_id: str, owner: str) -> list[ExportFile]:
        """A recorded file went missing: start the job's files over."""
        with unit_of_work(self.engine) as conn:
            self._check(conn, job_id, owner)
            conn.execute(delete(export_files).where(export_files.c.job_id == job_id))
        shutil.rmtree(job_dir(self.settings, job_id), ignore_errors=True)
        job_dir(self.settings, job_id).mkdir(parents=True, exist_ok=True)
        return []

    def _record(self, job_id: str, owner: str, done: ExportFile) -> None:
        with unit_of_work(self.engine) as conn:
            self._check(conn, job_id, owner)
            conn.execute(insert(export_files).values(job_id=job_id, **done.__dict__))

    def _heartbeat(self, job_id: str, owner: str, progress: str) -> None:
        with unit_of_work(self.engine) as conn:
            self._check(conn, job_id, owner)
            conn.execute(
                update(export_jobs)
                .where(export_jobs.c.id == job_id)
                .values(progress=progress, lease_until=now_micros() + self.lease)
            )

    def _check(self, conn: Connection, job_id: str, owner: str) -> None:
        """Still ours and still wanted? (Checked in every write, so a cancelled job's files are never recorded.)"""
        row = conn.execute(
            select(export_jobs.c.status, export_jobs.c.owner).where(export_jobs.c.id == job_id).with_for_update()
        ).first()
        if row is None or row.status != "running" or row.owner != owner:
            if row is None or row.status == "cancelled":
                shutil.rmtree(job_dir(self.settings, job_id), ignore_errors=True)
            raise ExportStopped

    def _complete(self, job_id: str, owner: str) -> None:
        with unit_of_work(self.engine) as conn:
            self._check(conn, job_id, owner)
            recorded = files(conn, job_id)
            missing = missing_files(self.settings, job_id, recorded)
            if missing:
                raise RuntimeError(f"files {', '.join(missing)} disappeared before the export completed")
            now = now_micros()
            total = sum(f.count for f in recorded)
            conn.execute(
                update(export_jobs)
                .where(export_jobs.c.id == job_id)
                .values(
                    status="complete",
                    progress=f"complete, {total} resources in {len(recorded)} files",
                    completed_at=now,
                    expires_at=now + self.settings.export_ttl_seconds * 1_000_000,
                    owner=None,
                    lease_until=0,
                )
            )

    # -- leases --------------------------------------------------------------------------------

    def _claim(self, job_id: str, owner: str) -> bool:
        now = now_micros()
        with unit_of_work(self.engine) as conn:
            row = job(conn, job_id)
            if row is None:
                return False
            return bool(
                conn.execute(
                    update(export_jobs)
                    .where(
                        export_jobs.c.id == job_id,
                        or_(
                            export_jobs.c.status == "queued",
                            (export_jobs.c.status == "running") & (export_jobs.c.lease_until < now),
                        ),
                    )
                    .values(
                        status="running",
                        owner=owner,
                        lease_until=now + self.lease,
                        attempts=export_jobs.c.attempts + 1,
                        progress="running",
                    )
                ).rowcount
            )

    def _release(self, job_id: str, owner: str) -> None:
        """Give the job back (stopping): the next worker resumes it at once."""
        with unit_of_work(self.engine) as conn:
            conn.execute(
                update(export_jobs)
                .where(export_jobs.c.id == job_id, export_jobs.c.owner == owner, export_jobs.c.status == "running")
                .values(status="queued", owner=None, lease_until=0, attempts=export_jobs.c.attempts - 1)
            )

    def _failed(self, job_id: str, owner: str, reason: str) -> None:
        with unit_of_work(self.engine) as conn:
            row = job(conn, job_id)
            if row is None or row.status != "running" or row.owner != owner:
                return
            final = row.attempts >= MAX_ATTEMPTS
            conn.execute(
                update(export_jobs)
                .where(export_jobs.c.id == job_id)
                .values(
                    status="error" if final else "queued",
                    error=reason,
                    progress="error" if final else f"retrying after: {reason}",
                    owner=None,
                    lease_until=0,
                )
            )
            if final:
                conn.execute(delete(export_files).where(export_files.c.job_id == job_id))
        if final:
            shutil.rmtree(job_dir(self.settings, job_id), ignore_errors=True)


def _deletion_bundle(rows: list[Any]) -> bytes:
    """One line of a ``deleted`` file: a transaction Bundle of ``DELETE Type/id`` entries."""
    bundle = {
        "resourceType": "Bundle",
        "meta": {"lastUpdated": instant(max(row.ts for row in rows))},
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": f"{row.res_type}/{row.res_id}"}} for row in rows],
    }
    return json.dumps(bundle, separators=(",", ":")).encode()


class _NdjsonFile:
    """One output file being written under a temporary name; renamed into place by :meth:`finish`."""

    def __init__(self, folder: Path, res_type: str, part: int, *, prefix: str | None = None) -> None:
        self.name = f"{prefix or res_type}.{part:03d}.ndjson"
        self.res_type = res_type
        self.part = part
        self.path = folder / self.name
        self.temporary = folder / f".{self.name}.partial"
        self.handle: Any = None
        self.count = 0
        self.bytes = 0
        self.last_pk = 0

    def write(self, body: bytes, res_pk: int) -> None:
        self.write_many([body], res_pk)

    def write_many(self, bodies: list[bytes], last_pk: int) -> None:
        """Append one line per body (canonical JSON holds no newline) in one write."""
        if not bodies:
            return
        if self.handle is None:
            self.handle = self.temporary.open("wb", buffering=WRITE_BUFFER)
        lines = b"\n".join(bodies) + b"\n"
        self.handle.write(lines)
        self.count += len(bodies)
        self.bytes += len(lines)
        self.last_pk = last_pk

    def finish(self) -> ExportFile:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        self.handle = None
        os.replace(self.temporary, self.path)
        return ExportFile(self.name, self.res_type, self.part, self.count, self.bytes, self.last_pk)

    def discard(self) -> None:
        if self.handle is not None:
            self.handle.close()
        self.temporary.unlink(missing_ok=True)


__all__ = [
    "ExportFile",
    "Exporter",
    "cancel",
    "expire",
    "files",
    "job",
    "job_dir",
    "kickoff",
    "manifest",
    "missing_files",
]
