"""``hie import``: load NDJSON files (Bulk Data output) and Bundle JSON files, resumably, reporting rejects.

NDJSON records keep their ids (an existing resource gets a new version, as a bulk update would). A
transaction Bundle is all-or-nothing, like ``POST [base]``; a batch reports each failed entry. Each batch of
records is committed together with the file's progress and its rejects, so an interrupted import resumes
at the first record that was not committed, and no record is applied twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, delete, insert, select, update

from fhir_server.bulk.tables import import_rejects, import_sources
from fhir_server.errors import FhirError, http_status
from fhir_server.repository import check_id
from fhir_server.service import FhirService
from fhir_server.storage.engine import refresh_statistics, unit_of_work
from fhir_server.storage.tables import resources
from fhir_server.transactions import BundleProcessor

log = logging.getLogger("hie.import")

NDJSON_SUFFIXES = (".ndjson", ".jsonl")
JSON_SUFFIXES = (".json",)
_MAX_BUNDLE_ENTRIES = 1_000_000

Progress = Callable[[int], None]
"""Called with the number of bytes just done."""


@dataclass(frozen=True)
class Reject:
    source: str
    record: int
    """NDJSON line or Bundle entry (1-based); 0 for a whole file."""
    res_type: str | None
    res_id: str | None
    reason: str


@dataclass
class FileOutcome:
    source: str
    records: int = 0
    accepted: int = 0
    rejected: int = 0
    resumed_at: int = 0
    """Records already done by an earlier, interrupted run."""
    skipped: bool = False
    """Imported completely before: nothing done."""


@dataclass
class ImportReport:
    files: list[FileOutcome] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(f.accepted for f in self.files)

    @property
    def rejected(self) -> int:
        return sum(f.rejected for f in self.files)


def import_files(path: Path) -> list[Path]:
    """The files an import of ``path`` reads: the file itself, or a directory's NDJSON and JSON files by name."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a file nor a directory")
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in (*NDJSON_SUFFIXES, *JSON_SUFFIXES))


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _now() -> int:
    return time.time_ns() // 1000


class Importer:
    """Imports files through the FHIR service: validation, versioning, indexing and outbox as for REST writes."""

    def __init__(self, engine: Engine, service: FhirService, *, batch: int = 500) -> None:
        self.engine = engine
        self.service = service
        self.batch = batch
        self.bundles = BundleProcessor(service, max_entries=_MAX_BUNDLE_ENTRIES)

    def run(self, paths: list[Path], progress: Progress | None = None) -> ImportReport:
        report = ImportReport()
        for path in paths:
            outcome = self.import_file(path, progress or (lambda _n: None))
            report.files.append(outcome)
        if any(outcome.accepted for outcome in report.files):
            refresh_statistics(self.engine)
        with unit_of_work(self.engine, write=False) as conn:
            sources = [str(p.resolve()) for p in paths]
            rows = conn.execute(
                select(import_rejects)
                .where(import_rejects.c.source.in_(sources))
                .order_by(import_rejects.c.source, import_rejects.c.record)
            )
            report.rejects = [Reject(r.source, r.record, r.res_type, r.res_id, r.reason) for r in rows]
        return report

    def import_file(self, path: Path, progress: Progress) -> FileOutcome:
        source = str(path.resolve())
        state = self._start(source, _fingerprint(path))
        outcome = FileOutcome(source, state.records, state.accepted, state.rejected, resumed_at=state.records)
        if state.complete:
            outcome.skipped = True
            progress(path.stat().st_size)
            return outcome
        if state.done_bytes:
            progress(state.done_bytes)
        if path.suffix.lower() in NDJSON_SUFFIXES:
            self._ndjson(path, source, state.done_bytes, outcome, progress)
        else:
            self._document(path, source, outcome, progress)
        return outcome

    # -- progress state ------------------------------------------------------------------------

    def _start(self, source: str, fingerprint: str) -> Any:
        """The file's saved progress; started over when the file changed since."""
        with unit_of_work(self.engine) as conn:
            row = conn.execute(select(import_sources).where(import_sources.c.source == source)).first()
            if row is not None and row.fingerprint == fingerprint:
                return row
            if row is not None:
                log.info("%s changed since it was imported; importing it again from the start", source)
                conn.execute(delete(import_sources).where(import_sources.c.source == source))
                conn.execute(delete(import_rejects).where(import_rejects.c.source == source))
            values = {
                "source": source,
                "fingerprint": fingerprint,
                "done_bytes": 0,
                "records": 0,
                "accepted": 0,
                "rejected": 0,
                "complete": False,
                "updated_at": _now(),
            }
            conn.execute(insert(import_sources).values(**values))
            return conn.execute(select(import_sources).where(import_sources.c.source == source)).one()

    def _save(self, conn: Connection, outcome: FileOutcome, done_bytes: int, rejects: list[Reject], complete: bool):  # type: ignore[no-untyped-def]
        if rejects:
            conn.execute(insert(import_rejects), [r.__dict__ for r in rejects])
        conn.execute(
            update(import_sources)
            .where(import_sources.c.source == outcome.source)
            .values(
                done_bytes=done_bytes,
                records=outcome.records,
                accepted=outcome.accepted,
                rejected=outcome.rejected,
                complete=complete,
                updated_at=_now(),
            )
        )

    # -- NDJSON --------------------------------------------------------------------------------

    def _ndjson(self, path: Path, source: str, start: int, outcome: FileOutcome, progress: Progress) -> None:
        size = path.stat().st_size
        done = start
        for lines, end in _batches(path, start, self.batch):
            records = []
            rejects = []
            for raw in lines:
                outcome.records += 1
                record = outcome.records
                resource, reason = self._checked(raw)
                if reason is not None:
                    rejects.append(_reject(source, record, resource, reason))
                elif resource is not None:
                    records.append((record, resource))
            with unit_of_work(self.engine) as conn:
                self._store(conn, records)
                outcome.accepted += len(records)
                outcome.rejected += len(rejects)
                self._save(conn, outcome, end, rejects, complete=end >= size)
            progress(end - done)
            done = end
        if done < size or not outcome.records:
            with unit_of_work(self.engine) as conn:
                self._save(conn, outcome, size, [], complete=True)

    def _checked(self, raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
        """A validated resource, or why the record is refused (``(None, None)`` for a blank line)."""
        if not raw.strip():
            return None, None
        try:
            resource = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return None, f"not JSON: {exc}"
        if not isinstance(resource, dict) or "resourceType" not in resource:
            return None, "not a FHIR resource (no resourceType)"
        try:
            if resource.get("id") is not None:
                check_id(str(resource["id"]))
            self.service.validate(resource)
        except FhirError as error:
            return resource, _reason(error)
        return resource, None

    def _store(self, conn: Connection, records: list[tuple[int, dict[str, Any]]]) -> None:
        """Create new ids in bulk, then update the ones that exist (or repeat within the batch) in order."""
        repository = self.service.repository
        keys = {(r["resourceType"], r["id"]) for _, r in records if r.get("id")}
        existing = set()
        for res_type in {t for t, _ in keys}:
            ids = [i for t, i in keys if t == res_type]
            for start in range(0, len(ids), 500):
                existing |= {
                    (res_type, res_id)
                    for res_id in conn.execute(
                        select(resources.c.res_id).where(
                            resources.c.res_type == res_type, resources.c.res_id.in_(ids[start : start + 500])
                        )
                    ).scalars()
                }
        new, later, seen = [], [], set(existing)
        for _, resource in records:
            key = (resource["resourceType"], resource.get("id") or str(uuid.uuid4()))
            if key in seen:
                later.append((key, resource))
            else:
                seen.add(key)
                new.append((resource, key[1]))
        for resource, res_id in new:
            self.service.prepare_write(conn, resource["resourceType"], res_id, resource)
        repository.create_many(conn, new)
        for (res_type, res_id), resource in later:
            resource["id"] = res_id
            self.service.prepare_write(conn, res_type, res_id, resource)
            repository.update(conn, res_type, res_id, resource)

    # -- JSON documents ------------------------------------------------------------------------

    def _document(self, path: Path, source: str, outcome: FileOutcome, progress: Progress) -> None:
        """One JSON document: a transaction or batch Bundle, another Bundle's entries, or one resource."""
        size = path.stat().st_size
        try:
            document = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            document = exc
        if isinstance(document, dict) and document.get("type") in ("transaction", "batch"):
            self._bundle(source, document, size, outcome)
        else:
            records, rejects = [], []
            if isinstance(document, Exception):
                outcome.records += 1
                rejects.append(Reject(source, 0, None, None, f"not JSON: {document}"))
                raws: list[bytes] = []
            elif isinstance(document, dict) and document.get("resourceType") == "Bundle":
                raws = [orjson.dumps(e.get("resource")) for e in document.get("entry") or [] if isinstance(e, dict)]
            else:
                raws = [orjson.dumps(document)]
            for raw in raws:
                outcome.records += 1
                resource, reason = self._checked(raw)
                if reason is not None:
                    rejects.append(_reject(source, outcome.records, resource, reason))
                elif resource is not None:
                    records.append((outcome.records, resource))
            outcome.accepted += len(records)
            outcome.rejected += len(rejects)
            with unit_of_work(self.engine) as conn:
                self._store(conn, records)
                self._save(conn, outcome, size, rejects, complete=True)
        progress(size)

    def _bundle(self, source: str, bundle: dict[str, Any], size: int, outcome: FileOutcome) -> None:
        """``POST [base]`` of the Bundle, committed with the file's progress; a refused transaction is one reject."""
        entries = bundle.get("entry") or []
        outcome.records += len(entries)
        try:
            self.bundles.check(bundle)
            with unit_of_work(self.engine) as conn:
                if bundle["type"] == "transaction":
                    self.bundles.transaction(conn, bundle, prefer="minimal")
                    outcome.accepted += len(entries)
                    self._save(conn, outcome, size, [], complete=True)
                    return
                result = self.bundles.batch(conn, bundle, prefer="minimal")
                rejects = []
                for index, (entry, answer) in enumerate(zip(entries, result["entry"], strict=True), start=1):
                    response = answer.get("response") or {}
                    if str(response.get("status", "")).startswith(("4", "5")):
                        issues = (response.get("outcome") or {}).get("issue") or []
                        reason = f"HTTP {response['status']}: " + "; ".join(map(_issue_text, issues))
                        rejects.append(_reject(source, index, entry.get("resource"), reason))
                outcome.rejected += len(rejects)
                outcome.accepted += len(entries) - len(rejects)
                self._save(conn, outcome, size, rejects, complete=True)
        except FhirError as error:
            outcome.accepted, outcome.rejected = 0, len(entries)
            reject = Reject(source, 0, "Bundle", bundle.get("id"), f"{bundle.get('type')} refused: {_reason(error)}")
            with unit_of_work(self.engine) as conn:
                self._save(conn, outcome, size, [reject], complete=True)


def _batches(path: Path, start: int, size: int) -> Iterator[tuple[list[bytes], int]]:
    """Lines of ``path`` from byte ``start``, ``size`` at a time, with the byte offset after each batch."""
    with path.open("rb") as handle:
        handle.seek(start)
        position = start
        lines: list[bytes] = []
        for line in handle:
            position += len(line)
            lines.append(line)
            if len(lines) >= size:
                yield lines, position
                lines = []
        if lines:
            yield lines, position


def _reject(source: str, record: int, resource: dict[str, Any] | None, reason: str) -> Reject:
    resource = resource if isinstance(resource, dict) else {}
    res_type, res_id = resource.get("resourceType"), resource.get("id")
    return Reject(
        source,
        record,
        res_type if isinstance(res_type, str) else None,
        str(res_id)[:64] if res_id is not None else None,
        reason,
    )


def _reason(error: FhirError) -> str:
    details = "; ".join(_issue_text(issue.to_fhir()) for issue in error.issues)
    return f"{http_status(error)} {error.kind}: {details}"


def _issue_text(issue: dict[str, Any]) -> str:
    where = issue.get("expression")
    return str(issue.get("diagnostics", "")) + (f" at {', '.join(where)}" if where else "")


__all__ = ["FileOutcome", "ImportReport", "Importer", "Reject", "import_files"]
