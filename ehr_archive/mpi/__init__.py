"""The regional master patient index on the FHIR server (issue 7): golden Patients, links, review, merges.

``install_mpi(service)`` registers the MPI as the service's before-write hook; ``mpi_of(service)`` finds it again
(operations, the HL7 v2 adapter). Pure rules live in ``records`` and ``review``; ``links`` owns the MPI tables.
"""

from __future__ import annotations

from ehr_archive.mpi.records import GOLDEN_CODE, GOLDEN_TAG, MPI_SYSTEM, build_golden, golden_of, is_golden
from ehr_archive.mpi.service import REBUILD_MODES, MasterPatientIndex
from fhir_server.errors import FhirError
from fhir_server.service import FhirService


def install_mpi(service: FhirService, *, rebuild: str = "inline") -> MasterPatientIndex:
    """Attach an MPI to the service: every non-golden Patient write is filed in the same unit of work.

    ``rebuild`` says when the goldens a write changed are rebuilt (``service.REBUILD_MODES``): ``inline`` in
    that unit of work, or after its commit (``after-commit``, ``background``; the server's ``HIE_MPI_GOLDEN_REBUILD``).
    """
    found = mpi_of(service)
    if found is not None:
        return found
    mpi = MasterPatientIndex(service, rebuild=rebuild)
    service.before_write.append(mpi)
    return mpi


def mpi_of(service: FhirService) -> MasterPatientIndex | None:
    return next((hook for hook in service.before_write if isinstance(hook, MasterPatientIndex)), None)


def require_mpi(service: FhirService) -> MasterPatientIndex:
    mpi = mpi_of(service)
    if mpi is None:
        raise FhirError("not-supported", "The master patient index is turned off on this server (HIE_MPI_ENABLED).")
    return mpi


__all__ = [
    "GOLDEN_CODE",
    "GOLDEN_TAG",
    "MPI_SYSTEM",
    "REBUILD_MODES",
    "MasterPatientIndex",
    "build_golden",
    "golden_of",
    "install_mpi",
    "is_golden",
    "mpi_of",
    "require_mpi",
]
