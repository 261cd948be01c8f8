"""The master patient index on the FHIR service: filing every institution's Patient, links, merges.

:class:`MasterPatientIndex` is a ``before_write`` hook of :class:`fhir_server.service.FhirService`: every Patient
write that is not a golden record is matched (``ehr_archive.matching``) in the writer's unit of work and linked
to one golden Patient. Goldens are written by the MPI alone, through the repository; institutions cannot write
them. Review Tasks and Provenance go through the service like any other resource.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, event

from ehr_archive.matching import (
    DEFAULT_MODEL,
    DEFAULT_THRESHOLDS,
    MatchGrade,
    MatchModel,
    MatchResult,
    Thresholds,
    blocking_keys,
    person_record_from_patient,
    score_pair,
)
from ehr_archive.matching.records import PersonRecord
from ehr_archive.mpi import links
from ehr_archive.mpi.records import (
    MPI_SYSTEM,
    build_golden,
    demographics,
    is_golden,
    same_content,
    to_validate,
    with_golden_link,
)
from ehr_archive.mpi.review import (
    REVIEW_CODE,
    cancelled_task,
    completed_task,
    provenance,
    review_task,
    task_candidate,
)
from fhir_server.access import acting_as
from fhir_server.auth.principal import SYSTEM
from fhir_server.errors import FhirError
from fhir_server.repository import Version, instant
from fhir_server.search.values import to_micros
from fhir_server.service import FhirService
from fhir_server.storage import unit_of_work

log = logging.getLogger("hie.mpi")

REBUILD_MODES = ("background", "after-commit", "inline", "queued")
"""When goldens are rebuilt after a record's write: ``inline`` in the writer's unit of work; ``after-commit`` right
after its commit, in the writer's thread, before the call returns; ``background`` by a worker thread of the process
woken after the commit (the server's default, ``HIE_MPI_GOLDEN_REBUILD``); ``queued`` only queues them, for batch
callers that call :meth:`MasterPatientIndex.rebuild_pending` themselves (the back-fill, benchmarks)."""
_QUEUED = "hie.mpi.goldens-queued"
_RANK = {MatchGrade.CERTAIN: 3, MatchGrade.PROBABLE: 2, MatchGrade.POSSIBLE: 1, MatchGrade.CERTAINLY_NOT: 0}
_KEEP: Any = object()


def _now() -> str:
    return instant(to_micros(datetime.now(UTC)))


def rank(result: MatchResult) -> tuple[int, float]:
    return _RANK[result.grade], result.score


def golden_refused(what: str) -> FhirError:
    return FhirError(
        "forbidden",
        f"{what}: golden (master) Patients are maintained by the master patient index from the institutions' "
        "records; write your institution's Patient instead, or use Patient/$mpi-link, $mpi-not-duplicate, $merge.",
    )


class MasterPatientIndex:
    """Matching, linking and merging of Patients (issue 7); ``__call__`` is the service's before-write hook."""

    def __init__(
        self,
        service: FhirService,
        *,
        model: MatchModel = DEFAULT_MODEL,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
        max_reviews: int = 3,
        rebuild: str = "inline",
    ) -> None:
        if rebuild not in REBUILD_MODES:
            raise ValueError(f"golden rebuild {rebuild!r} is not one of {', '.join(REBUILD_MODES)}")
        self.service = service
        self.model = model
        self.thresholds = thresholds
        self.max_reviews = max_reviews
        self.rebuild = rebuild
        self._engines: weakref.WeakSet[Engine] = weakref.WeakSet()
        self._workers: weakref.WeakKeyDictionary[Engine, _Rebuilder] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._flag = f"{_QUEUED}:{id(self)}"

    # -- the hook ------------------------------------------------------------------------------------------------

    def __call__(self, conn: Connection, res_type: str, res_id: str, resource: dict[str, Any] | None) -> None:
        if res_type != "Patient":
            return
        defer = self.rebuild != "inline"
        if resource is None:
            if links.golden_active(conn, res_id) is not None:
                raise golden_refused(f"Patient/{res_id} is a golden Patient")
            with acting_as(SYSTEM):
                self.forget_record(conn, res_id, defer=defer)
            return
        with acting_as(SYSTEM):  # goldens and review Tasks belong to the exchange, not to the writing institution
            self.file_record(conn, res_id, resource, defer=defer, refuse_golden=True)

    # -- matching ------------------------------------------------------------------------------------------------

    def score_candidates(
        self,
        conn: Connection,
        record: PersonRecord,
        *,
        exclude: str | None = None,
        keys: Iterable[str] | None = None,
    ) -> dict[str, tuple[MatchResult, str]]:
        """Best result per golden among the records sharing a blocking key: ``{golden_id: (result, source_id)}``;
        ``keys``: the record's blocking keys when the caller has them already."""
        best: dict[str, tuple[MatchResult, str]] = {}
        for candidate in links.candidates(conn, blocking_keys(record) if keys is None else keys, exclude=exclude):
            other = _FOLDED.get(candidate.source_id, candidate.stored)
            result = score_pair(record, other, model=self.model, thresholds=self.thresholds)
            if result.grade is MatchGrade.CERTAINLY_NOT:
                continue
            known = best.get(candidate.golden_id)
            if known is None or rank(result) > rank(known[0]):
                best[candidate.golden_id] = (result, candidate.source_id)
        return best

    def match(self, conn: Connection, patient: dict[str, Any]) -> list[tuple[str, MatchResult]]:
        """Goldens that may be the resident of ``patient``, best first (Patient/$match)."""
        record = person_record_from_patient(patient, "")
        scored = self.score_candidates(conn, record)
        return sorted(((g, r) for g, (r, _) in scored.items()), key=lambda item: rank(item[1]), reverse=True)

    # -- filing records ------------------------------------------------------------------------------------------

    def file_record(
        self,
        conn: Connection,
        source_id: str,
        patient: dict[str, Any],
        *,
        defer: bool = False,
        refuse_golden: bool = False,
    ) -> str:
        """Match a record about to be stored, link it (amending its ``link``), refresh goldens; the golden id.

        ``defer``: the goldens it joined or left are queued and rebuilt after commit (:meth:`rebuild_pending`).
        ``refuse_golden``: a write of a golden Patient (by id or by its tag) is refused (the write hook).
        """
        record = person_record_from_patient(patient, source_id)
        keys = blocking_keys(record)
        links.lock_keys(conn, keys)
        golden, existing = links.golden_or_record(conn, source_id)
        if refuse_golden and golden:
            raise golden_refused(f"Patient/{source_id} is a golden Patient")
        if refuse_golden and is_golden(patient):
            raise golden_refused("The Patient carries the golden-record tag")
        refused = links.distinct_goldens(conn, source_id) if existing is not None else set()
        scored = {
            g: v
            for g, v in self.score_candidates(conn, record, exclude=source_id, keys=keys).items()
            if g not in refused
        }
        certain = [g for g, (r, _) in scored.items() if r.grade is MatchGrade.CERTAIN]
        best_certain = max(certain, key=lambda g: rank(scored[g][0]), default=None)
        new_golden = False
        if existing is not None and existing.link_kind in ("manual", "merged"):
            golden_id, kind = existing.golden_id, existing.link_kind
        elif best_certain is not None:
            golden_id, kind = best_certain, "auto"
        elif existing is not None and self._still_fits(conn, existing, record):
            golden_id, kind = existing.golden_id, existing.link_kind
        else:
            golden_id, kind = str(uuid.uuid4()), "new"  # reserved below: its first version may come after commit
            new_golden = True  # (an existing record that still fits keeps its golden, kind "new" or not)
        identity = demographics(patient)
        reviews = sorted(
            ((g, r) for g, (r, _) in scored.items() if g != golden_id and r.grade is not MatchGrade.CERTAIN),
            key=lambda item: rank(item[1]),
            reverse=True,
        )[: self.max_reviews]
        if reviews and kind == "new":
            kind = "review"
        merged_away = existing is not None and existing.link_kind == "merged" and not existing.active
        changed = [golden_id]
        if existing is not None and existing.golden_id != golden_id:
            changed.append(existing.golden_id)
        links.save_record(
            conn,
            source_id,
            golden_id=golden_id,
            link_kind=kind,
            demographics=identity,
            keys=keys,
            active=not merged_away,
            new=existing is None,
            new_golden=new_golden,
            queue=changed if defer else (),
        )
        _FOLDED.put(source_id, orjson.dumps(identity).decode(), record)  # as it is stored: the next writes' candidate
        with_golden_link(patient, golden_id, links.goldens_among(conn, _link_targets(patient)))
        for changed_id in changed if not defer else ():
            self.refresh_golden(conn, changed_id)
        if defer:
            self._rebuild_after_commit(conn)
        if existing is not None and golden_id == best_certain and kind == "auto":
            self._close_settled_tasks(conn, source_id, golden_id, scored, {g for g, _ in reviews})
        if reviews:
            self._ask_review(conn, source_id, golden_id, reviews, fresh=existing is None)
        return golden_id

    def _still_fits(self, conn: Connection, existing: links.Record, record: PersonRecord) -> bool:
        """An updated record stays in its golden unless every other record there now scores below probable."""
        mates = [m for m in links.members(conn, existing.golden_id) if m.active and m.source_id != existing.source_id]
        if not mates:
            return True
        return any(
            _RANK[
                score_pair(
                    record,
                    _FOLDED.get(m.source_id, orjson.dumps(m.demographics).decode()),
                    model=self.model,
                    thresholds=self.thresholds,
                ).grade
            ]
            >= _RANK[MatchGrade.PROBABLE]
            for m in mates
        )

    def _ask_review(
        self, conn: Connection, source_id: str, golden_id: str, reviews: list[tuple[str, MatchResult]], *, fresh: bool
    ) -> None:
        asked = set() if fresh else {task_candidate(t.resource()) for t in self.open_tasks(conn, source_id)}
        for candidate, result in reviews:
            if candidate not in asked:
                self.service.create(conn, review_task(source_id, golden_id, candidate, result, _now()))

    def _close_settled_tasks(
        self,
        conn: Connection,
        source_id: str,
        golden_id: str,
        scored: dict[str, tuple[MatchResult, str]],
        still_asked: set[str],
    ) -> None:
        """A write linked the record with certainty: its open review Tasks that this settles are closed.

        The Task about the golden it is now linked to is ``completed`` (decision ``linked``); a Task about a
        candidate that no longer scores ``possible`` or better is ``cancelled``. A candidate that still scores
        stays asked (it may be another golden of the same resident: a reviewer decides whether to merge).
        """
        result, _ = scored[golden_id]
        closed: list[str] = []
        for task in self.open_tasks(conn, source_id):
            body = task.resource()
            candidate = task_candidate(body)
            when = _now()
            if candidate == golden_id:
                note = (
                    f"Closed automatically: a later write of Patient/{source_id} linked it with certainty to "
                    f"Patient/{golden_id} ({result.rule or 'score'} {result.score:.2f} bits)."
                )
                done = completed_task(body, "linked", golden_id, when, note=note)
            elif candidate not in still_asked:
                note = (
                    f"Cancelled automatically: a later write of Patient/{source_id} linked it with certainty to "
                    f"Patient/{golden_id}, and Patient/{candidate} no longer scores as a possible match."
                )
                done = cancelled_task(body, golden_id, when, note=note)
            else:
                continue
            closed.append(self.service.update(conn, "Task", task.res_id, done).version.location)
        if closed:
            self.record_provenance(
                conn,
                "close-review",
                closed,
                [f"Patient/{source_id}"],
                f"Review of Patient/{source_id} settled: linked with certainty to Patient/{golden_id}",
            )

    def forget_record(self, conn: Connection, source_id: str, *, defer: bool = False) -> None:
        """A source record was deleted: drop it from the index and from its golden."""
        existing = links.get_record(conn, source_id)
        if existing is not None:
            links.remove_record(conn, source_id)
            self.golden_changed(conn, existing.golden_id, defer=defer)

    # -- goldens -------------------------------------------------------------------------------------------------

    def golden_changed(self, conn: Connection, golden_id: str, *, defer: bool) -> None:
        """The records of ``golden_id`` changed: rebuild it now, or queue it for after the commit."""
        if not defer:
            self.refresh_golden(conn, golden_id)
            return
        links.queue_golden(conn, golden_id)
        self._rebuild_after_commit(conn)

    def _rebuild_after_commit(self, conn: Connection) -> None:
        """This unit of work queued goldens: rebuild them once it has ended."""
        conn.info[self._flag] = True
        self._listen(conn.engine)

    def _listen(self, engine: Engine) -> None:
        with self._lock:
            if engine in self._engines:
                return
            self._engines.add(engine)

        mpi = weakref.ref(self)
        flag = self._flag

        def _checkin(_dbapi_connection: Any, record: Any) -> None:
            # The connection goes back to the pool: the unit of work that queued goldens has ended.
            if record is not None and record.info.pop(flag, False):
                found = mpi()
                if found is not None:
                    found._after_commit(engine)

        event.listen(engine, "checkin", _checkin)

    def _after_commit(self, engine: Engine) -> None:
        if self.rebuild == "queued":
            return
        if self.rebuild == "background":
            self._worker(engine).wake()
            return
        if getattr(self._local, "draining", False):
            return
        try:
            self.rebuild_pending(engine)
        except Exception:  # the queue keeps the goldens; the next rebuild finishes them
            log.exception("rebuilding golden Patients after commit failed")

    def _worker(self, engine: Engine) -> _Rebuilder:
        with self._lock:
            worker = self._workers.get(engine)
            if worker is None:
                worker = self._workers[engine] = _Rebuilder(self, engine)
                worker.start()
            return worker

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until the background rebuilders of this process have nothing left (tests, orderly shutdown)."""
        return all(worker.wait_idle(timeout) for worker in list(self._workers.values()))

    def stop(self) -> None:
        """Stop the background rebuilders after a last drain (process exit)."""
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        for worker in workers:
            worker.stop()

    def rebuild_pending(self, engine: Engine, *, batch: int = 100) -> int:
        """Rebuild every queued golden (after commit); the number rebuilt.

        Each golden is rebuilt under its lock from the records committed at that moment, and only the queue rows
        seen are removed: a record written meanwhile queued a row of its own, so its golden is rebuilt again.
        Several processes may drain at once: a rebuild that finds nothing changed writes no version. A batch is
        one unit of work; when a golden of it fails, the batch is rolled back and taken again with a savepoint
        per golden, the failing one left out (and its rows removed all the same).
        """
        done = 0
        self._local.draining = True
        try:
            while True:
                try:
                    queued = self._rebuild_batch(engine, batch, apart=False)
                except Exception:
                    log.debug("rebuilding a batch of golden Patients failed; again one by one", exc_info=True)
                    queued = self._rebuild_batch(engine, batch, apart=True)
                done += len(queued)
                if sum(len(ids) for ids in queued.values()) < batch:
                    return done
        finally:
            self._local.draining = False

    def _rebuild_batch(self, engine: Engine, batch: int, *, apart: bool) -> dict[str, list[int]]:
        """Take up to ``batch`` queue rows and rebuild their goldens in one unit of work; ``apart``: each in a
        savepoint, a failing one logged and left out."""
        with unit_of_work(engine) as conn, acting_as(SYSTEM):
            queued = links.take_queued(conn, limit=batch)
            for golden_id in queued:
                if not apart:
                    self.refresh_golden(conn, golden_id)
                    continue
                savepoint = conn.begin_nested()
                try:
                    self.refresh_golden(conn, golden_id)
                    savepoint.commit()
                except Exception:
                    savepoint.rollback()
                    log.exception("rebuilding golden Patient/%s failed; left out", golden_id)
        return queued

    def refresh_golden(
        self, conn: Connection, golden_id: str, *, replaced_by: Any = _KEEP, replaces: Any = _KEEP
    ) -> Version | None:
        """Rebuild a golden from its records (survivorship) and store it when it changed."""
        repository = self.service.repository
        repository.lock_condition(conn, f"mpi-golden:{golden_id}")  # two rebuilds of a new golden: one creates it
        state = links.golden_state(conn, golden_id)  # read under that lock, which every writer of a golden holds
        current = state.current
        stored = current.resource() if current is not None and not current.deleted else {}
        if replaced_by is _KEEP:
            replaced_by = next(iter(_links_of(stored, "replaced-by")), None)
        if replaces is _KEEP:
            replaces = _links_of(stored, "replaces")
        golden = build_golden(
            golden_id, [r.member() for r in state.members], replaced_by=replaced_by, replaces=replaces
        )
        links.save_golden(conn, golden_id, active=golden["active"], known=state.active)
        if stored and same_content(stored, golden):
            return current
        part = to_validate(stored, golden)
        if part is not None:
            self.service.validate(part, "Patient")
        if current is None:
            return repository.create(conn, golden, res_id=golden_id, method="POST").version
        # read under lock above; a rebuild changes a few elements (a new record's seealso): the rest keeps its rows
        return repository.update(conn, "Patient", golden_id, golden, read=current, reindex_changed=True).version

    # -- review decisions ----------------------------------------------------------------------------------------

    def open_tasks(self, conn: Connection, source_id: str) -> list[Version]:
        found = self.service.matches(
            conn,
            "Task",
            [("focus", f"Patient/{source_id}"), ("status", "requested"), ("code", f"{MPI_SYSTEM}|{REVIEW_CODE}")],
            limit=100,
        )
        return self.service.repository.load_many(conn, found)

    def _complete_tasks(
        self, conn: Connection, source_id: str, candidate: str, decision: str, golden: str
    ) -> list[str]:
        done = []
        for task in self.open_tasks(conn, source_id):
            body = task.resource()
            if task_candidate(body) == candidate:
                result = self.service.update(conn, "Task", task.res_id, completed_task(body, decision, golden, _now()))
                done.append(result.version.location)
        return done

    def source_record(self, conn: Connection, source_id: str) -> Version:
        """An institution's current Patient (not a golden); 404 / 410 / 422 otherwise."""
        found = self.service.repository.read(conn, "Patient", source_id)
        if is_golden(found.resource()):
            raise FhirError("business-rule", f"Patient/{source_id} is a golden Patient, not an institution's record.")
        if links.get_record(conn, source_id) is None:
            self.file_record(conn, source_id, found.resource())
        return found

    def golden_record(self, conn: Connection, golden_id: str) -> Version:
        found = self.service.repository.read(conn, "Patient", golden_id)
        if not is_golden(found.resource()):
            raise FhirError("business-rule", f"Patient/{golden_id} is an institution's record, not a golden Patient.")
        if not links.golden_active(conn, golden_id):
            raise FhirError("business-rule", f"Golden Patient/{golden_id} is inactive (merged or without records).")
        return found

    def link(self, conn: Connection, source_id: str, golden_id: str) -> dict[str, Any]:
        """Manual link (``$mpi-link``): the record belongs to that golden; review Tasks of the pair complete."""
        source = self.source_record(conn, source_id)
        golden = self.golden_record(conn, golden_id)
        record = links.get_record(conn, source_id)
        assert record is not None
        links.forget_distinct(conn, source_id, golden_id)
        written = self._move(conn, source, record.golden_id, golden_id, "manual")
        tasks = self._complete_tasks(conn, source_id, golden_id, "linked", golden_id)
        prior = [source.location, golden.location]
        self.record_provenance(
            conn, "link", written + tasks, prior, f"Patient/{source_id} linked to Patient/{golden_id}"
        )
        return _parameters(golden_id, written, tasks)

    def not_duplicate(self, conn: Connection, source_id: str, golden_id: str) -> dict[str, Any]:
        """``$mpi-not-duplicate``: never link the record to that golden; it leaves it when linked there."""
        source = self.source_record(conn, source_id)
        golden = self.golden_record(conn, golden_id)
        record = links.get_record(conn, source_id)
        assert record is not None
        links.add_distinct(conn, source_id, golden_id)
        target = record.golden_id
        written: list[str] = []
        if record.golden_id == golden_id:
            target = str(uuid.uuid4())
            written = self._move(conn, source, golden_id, target, "manual")
        tasks = self._complete_tasks(conn, source_id, golden_id, "not-duplicate", target)
        reason = f"Patient/{source_id} is not the resident of Patient/{golden_id}"
        self.record_provenance(conn, "not-duplicate", written + tasks or [source.location], [golden.location], reason)
        return _parameters(target, written, tasks)

    def _move(self, conn: Connection, source: Version, old: str, new: str, kind: str) -> list[str]:
        """Relink a record: its table row, its ``refer`` link (a new version) and both goldens."""
        links.relink(conn, source.res_id, new, kind)
        patient = with_golden_link(source.resource(), new, {old, new})
        self.service.validate(patient, "Patient")
        stored = self.service.repository.update(conn, "Patient", source.res_id, patient).version
        written = [stored.location]
        for golden_id in dict.fromkeys((new, old)):
            version = self.refresh_golden(conn, golden_id)
            if version is not None:
                written.append(version.location)
        return written

    def record_provenance(
        self, conn: Connection, activity: str, targets: Iterable[str], prior: Iterable[str], reason: str
    ) -> str:
        created = self.service.create(
            conn, provenance(activity, list(dict.fromkeys(targets)), list(prior), _now(), reason)
        )
        return f"Provenance/{created.version.res_id}"


class _Rebuilder:
    """The background rebuild of queued goldens for one engine: a daemon thread woken after each commit.

    A drain rebuilds every queued golden, also those another process queued and could not finish; ``hie mpi
    rebuild`` does the same by hand. At exit the thread finishes what it was woken for.
    """

    SPACING = 0.05
    """Seconds from one drain's start to the next at least: after a quiet spell a wake drains at once; under a
    burst of writes one drain takes the goldens of several (one unit of work, commit and outbox wake-up for all)."""

    def __init__(self, mpi: MasterPatientIndex, engine: Engine) -> None:
        self.mpi = mpi
        self.engine = engine
        self._changed = threading.Condition()
        self._pending = False
        self._stopping = False
        self._drained = -self.SPACING
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hie-mpi-goldens", daemon=True)
        atexit.register(self.stop)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        with self._changed:
            self._pending = True
            self._idle.clear()
            self._changed.notify()

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self._idle.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._stopping:
                    self._idle.set()
                    self._changed.wait()
                if not self._pending:
                    return
                rest = self._drained + self.SPACING - time.monotonic()
                if rest > 0:
                    self._changed.wait_for(lambda: self._stopping, rest)
                self._pending = False
            self._drained = time.monotonic()
            try:
                self.mpi.rebuild_pending(self.engine)
            except Exception:  # the queue keeps them: the next wake retries
                log.exception("background rebuild of golden Patients failed")


class _FoldedRecords:
    """Filed records as the matcher compares them, by source id and stored demographics (JSON text; the same
    text folds the same way, a changed record is a new key), the least recently used dropped past ``size``."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._records: OrderedDict[tuple[str, str], PersonRecord] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, source_id: str, stored: str) -> PersonRecord:
        key = (source_id, stored)
        with self._lock:
            record = self._records.get(key)
            if record is not None:
                self._records.move_to_end(key)
                return record
        record = person_record_from_patient(orjson.loads(stored), source_id)
        self.put(source_id, stored, record)
        return record

    def put(self, source_id: str, stored: str, record: PersonRecord) -> None:
        """Keep ``record``, folded from a Patient whose identity elements are ``stored`` (it folds the same)."""
        key = (source_id, stored)
        with self._lock:
            self._records[key] = record
            self._records.move_to_end(key)
            if len(self._records) > self._size:
                self._records.popitem(last=False)


_FOLDED = _FoldedRecords(8192)


def _link_targets(patient: dict[str, Any]) -> list[str]:
    return [
        r.split("/", 1)[1]
        for r in (((link.get("other") or {}).get("reference") or "") for link in patient.get("link") or [])
        if r.startswith("Patient/")
    ]


def _links_of(patient: dict[str, Any], kind: str) -> list[str]:
    return [
        link["other"]["reference"].removeprefix("Patient/")
        for link in patient.get("link") or []
        if link.get("type") == kind and (link.get("other") or {}).get("reference", "").startswith("Patient/")
    ]


def _parameters(golden_id: str, written: list[str], tasks: list[str]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [{"name": "golden", "valueReference": {"reference": f"Patient/{golden_id}"}}]
    parameters.extend({"name": "written", "valueReference": {"reference": location}} for location in written)
    parameters.extend({"name": "task", "valueReference": {"reference": location}} for location in tasks)
    return {"resourceType": "Parameters", "parameter": parameters}


__all__ = ["MasterPatientIndex", "golden_refused", "rank"]
