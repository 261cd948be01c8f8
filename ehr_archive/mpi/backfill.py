"""Back-fill of the master patient index: file the Patients stored before the MPI was turned on (``hie mpi backfill``).

Patients are taken in storage order, ``batch`` per unit of work, and each is filed exactly as a write would file it
(``MasterPatientIndex.file_record``): matched, linked to a golden, review Tasks asked for ``probable``/``possible``
candidates; its ``refer`` link is stored as a new version of the record, written as the exchange. The goldens a
batch touched are rebuilt after its commit. Only Patients without an MPI row are taken, so the command is
idempotent and resumable: run it again after an interruption and it continues with what is left; a Patient that
failed (reported with its reason) is tried again on the next run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine

from ehr_archive.mpi import links
from ehr_archive.mpi.records import is_golden
from ehr_archive.mpi.service import MasterPatientIndex
from fhir_server.access import acting_as
from fhir_server.auth.principal import SYSTEM
from fhir_server.errors import FhirError
from fhir_server.storage import unit_of_work

DEFAULT_BATCH = 200
MAX_REPORTED_ERRORS = 100


@dataclass
class BackfillReport:
    """What a back-fill did. ``linked`` joined an existing golden with certainty, ``new`` got a golden of its own,
    ``review`` got one and review Tasks; ``errors`` are ``(Patient id, reason)`` (the first hundred)."""

    total: int = 0
    filed: int = 0
    linked: int = 0
    new: int = 0
    review: int = 0
    skipped: int = 0
    failed: int = 0
    goldens_rebuilt: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"Filed {self.filed} of {self.total} Patients: {self.linked} linked with certainty to an existing golden, "
            f"{self.review} sent to review, {self.new} new residents; {self.goldens_rebuilt} goldens rebuilt, "
            f"{self.skipped} skipped (golden-tagged), {self.failed} errors."
        )


def backfill(
    engine: Engine,
    mpi: MasterPatientIndex,
    *,
    batch: int = DEFAULT_BATCH,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BackfillReport:
    """File every Patient the MPI does not know yet (at most ``limit``); ``progress(done, total)`` after each batch."""
    report = BackfillReport()
    with unit_of_work(engine, write=False) as conn:
        report.total = links.count_unfiled(conn)
    if limit is not None:
        report.total = min(report.total, limit)
    repository = mpi.service.repository
    after = 0
    done = 0
    if progress is not None:
        progress(0, report.total)
    while done < report.total:
        with unit_of_work(engine) as conn, acting_as(SYSTEM):
            found = links.unfiled_patients(conn, after=after, limit=min(batch, report.total - done))
            if not found:
                break
            after = found[-1][0]
            for version in repository.load_many(conn, [pk for pk, _ in found]):
                done += 1
                patient = version.resource()
                if is_golden(patient):
                    report.skipped += 1
                    continue
                savepoint = conn.begin_nested()
                try:
                    mpi.file_record(conn, version.res_id, patient, defer=True)
                    mpi.service.validate(patient, "Patient")
                    repository.update(conn, "Patient", version.res_id, patient, method="PUT")
                    savepoint.commit()
                except Exception as exc:  # reported with its reason; the next run tries the Patient again
                    savepoint.rollback()
                    report.failed += 1
                    if len(report.errors) < MAX_REPORTED_ERRORS:
                        report.errors.append((version.res_id, _reason(exc)))
                    continue
                record = links.get_record(conn, version.res_id)
                report.filed += 1
                kind = record.link_kind if record is not None else "new"
                if kind == "auto":
                    report.linked += 1
                elif kind == "review":
                    report.review += 1
                else:
                    report.new += 1
        report.goldens_rebuilt += mpi.rebuild_pending(engine)
        if progress is not None:
            progress(done, report.total)
    return report


def _reason(exc: Exception) -> str:
    if isinstance(exc, FhirError):
        return "; ".join(issue.diagnostics or issue.code for issue in exc.issues) or str(exc)
    return f"{type(exc).__name__}: {exc}"


__all__ = ["DEFAULT_BATCH", "BackfillReport", "backfill"]
