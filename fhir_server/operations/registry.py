"""Every operation this server offers, looked up by code and level (R4B operations.html)."""

from __future__ import annotations

from fhir_server.errors import not_found
from fhir_server.operations import everything, expunge, lastn, meta, stats, validate
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
)


def find_operation(code: str, res_type: str | None, *, instance: bool) -> Operation:
    """The operation ``$code`` at system (no type), type or instance level; 404 naming where it is defined."""
    level = "system" if res_type is None else "instance" if instance else "type"
    where = "" if res_type is None else f" on {res_type}"
    for operation in OPERATIONS:
        if operation.code == code:
            if operation.applies(res_type, instance):
                return operation
            raise not_found(
                f"${code} is not defined at {level} level{where}; it is defined at {operation.levels()} level "
                f"for {', '.join(operation.resource)}."
            )
    raise not_found(f"Unknown operation ${code}: this server offers {', '.join('$' + o.code for o in OPERATIONS)}.")


def definition_by_id(definition_id: str) -> Operation | None:
    return next((operation for operation in OPERATIONS if operation.id == definition_id), None)


def type_operations(res_type: str) -> list[Operation]:
    """Operations at type or instance level that apply to ``res_type`` (for the CapabilityStatement)."""
    return [o for o in OPERATIONS if o.applies(res_type, False) or o.applies(res_type, True)]


def system_operations() -> list[Operation]:
    return [o for o in OPERATIONS if o.applies(None, False)]
