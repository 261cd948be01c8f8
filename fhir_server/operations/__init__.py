"""Extended operations (R4B operations.html): one module per ``$operation``, each declaring its OperationDefinition.

Modules: ``validate``, ``meta`` (``$meta``, ``$meta-add``, ``$meta-delete``), ``everything``, ``lastn``,
``stats``, ``expunge``, ``access_log`` (``Patient/[id]/$access-log``); ``bulk_export`` and ``resend`` declare
operations served by their own routes (Bulk Data ``$export``, ``Subscription/[id]/$resend``). ``inputs`` checks
a call against a declaration; ``registry`` lists and finds operations.
"""

from fhir_server.operations.base import DEFINITION_BASE, Invocation, Operation, Parameter
from fhir_server.operations.inputs import Inputs, read_inputs
from fhir_server.operations.registry import (
    OPERATIONS,
    definition_by_id,
    find_operation,
    system_operations,
    type_operations,
)

__all__ = [
    "DEFINITION_BASE",
    "OPERATIONS",
    "Inputs",
    "Invocation",
    "Operation",
    "Parameter",
    "definition_by_id",
    "find_operation",
    "read_inputs",
    "system_operations",
    "type_operations",
]
