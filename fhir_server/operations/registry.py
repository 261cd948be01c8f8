"""Every operation this server offers, looked up by code and level (R4B operations.html)."""

from __future__ import annotations

from ehr_archive.mpi.operations import link as mpi_link
from ehr_archive.mpi.operations import match as mpi_match
from ehr_archive.mpi.operations import merge as mpi_merge
from ehr_archive.mpi.operations import pix as mpi_pix
from fhir_server.errors import not_found
from fhir_server.operations import access_log, bulk_export, everything, expunge, lastn, meta, resend, stats, validate
from fhir_server.operations.base import Operation

OPERATIONS: tuple[Operation, ...] = (
    validate.OPERATION,
    meta.META,
    meta.META_ADD,
    meta.META_DELETE,
    everything.OPERATION,
    lastn.OPERATION,
    stats.OPERATION,
    expunge.OPERATION,
    access_log.OPERATION,
    bulk_export.SYSTEM,
    bulk_export.PATIENT,
    bulk_export.GROUP,
    resend.OPERATION,
    mpi_match.OPERATION,
    mpi_pix.OPERATION,
    mpi_link.LINK,
    mpi_link.NOT_DUPLICATE,
    mpi_merge.MERGE,
    mpi_merge.UNMERGE,
)


def find_operation(code: str, res_type: str | None, *, instance: bool) -> Operation:
    """The operation ``$code`` at system (no type), type or instance level; 404 naming where it is defined."""
    level = "system" if res_type is None else "instance" if instance else "type"
    where = "" if res_type is None else f" on {res_type}"
    same_code = [operation for operation in OPERATIONS if operation.code == code]
    for operation in same_code:  # one code may have a definition per level ($export)
        if operation.applies(res_type, instance):
            return operation
    if same_code:
        defined = "; ".join(f"{o.levels()} level for {', '.join(o.resource)}" for o in same_code)
        raise not_found(f"${code} is not defined at {level} level{where}; it is defined at {defined}.")
    offered = ", ".join(dict.fromkeys("$" + o.code for o in OPERATIONS))
    raise not_found(f"Unknown operation ${code}: this server offers {offered}.")


def definition_by_id(definition_id: str) -> Operation | None:
    return next((operation for operation in OPERATIONS if operation.id == definition_id), None)


def type_operations(res_type: str) -> list[Operation]:
    """Operations at type or instance level that apply to ``res_type`` (for the CapabilityStatement)."""
    return [o for o in OPERATIONS if o.applies(res_type, False) or o.applies(res_type, True)]


def system_operations() -> list[Operation]:
    return [o for o in OPERATIONS if o.applies(None, False)]
