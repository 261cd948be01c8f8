"""Operations as entries of batch and transaction Bundles (R4B §3.1.0.11, http.html#trules; operations.html).

An entry ``GET|POST [type]/[id]/$op?params`` runs the operation through the registry with the entry's query
and, for POST, its ``resource`` (a Parameters resource or the resource itself) as inputs; the response entry
carries the operation's resource and ``200 OK``.

In a batch every operation may be an entry: each runs on its own. In a transaction only operations whose
whole effect stays inside the unit of work may: :data:`TRANSACTION_SAFE`, and any operation whose declaration
carries the extension :data:`IN_TRANSACTION` with ``valueBoolean: true`` (how an operation module of another
package opts in; the served OperationDefinition shows it). ``$expunge`` (hard delete outside
versioning, audited per call), ``$export`` (an asynchronous job) and ``$resend`` (queues notifications and
wakes the dispatcher) are refused with a 400 naming the entry; the last two are refused in batches as well,
since they answer asynchronously from their own routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import Connection

from fhir_server import definitions
from fhir_server.access import UNRESTRICTED, Access
from fhir_server.config import Settings
from fhir_server.errors import FhirError, invalid
from fhir_server.operations.base import Invocation, Operation
from fhir_server.operations.inputs import read_inputs
from fhir_server.operations.registry import find_operation
from fhir_server.repository import check_id
from fhir_server.search.parameters import LOCAL_BASE
from fhir_server.service import FhirService

TRANSACTION_SAFE = frozenset({"validate", "meta", "meta-add", "meta-delete", "everything", "lastn", "stats"})
"""Read-only operations, and ``$meta-add``/``$meta-delete`` whose change is a versioned write of the same unit."""
IN_TRANSACTION = LOCAL_BASE + "StructureDefinition/operation-in-transaction"
"""Extension of an OperationDefinition: ``valueBoolean`` true when the operation may be a transaction entry."""


@dataclass(frozen=True)
class OperationEntry:
    """An entry's operation call, resolved from its method and URL."""

    operation: Operation
    res_type: str | None
    res_id: str | None
    path: str
    query: list[tuple[str, str]]

    @property
    def target(self) -> str | None:
        """``Type/id`` an instance-level operation changes (two entries may not touch one resource)."""
        if self.operation.affects_state and self.res_type and self.res_id:
            return f"{self.res_type}/{self.res_id}"
        return None


def is_operation(url: str) -> bool:
    """Whether a request URL names an operation (a ``$`` in its path)."""
    return "$" in url.split("?", 1)[0]


def resolve(method: str, url: str) -> OperationEntry:
    """The operation named by ``url``, at system, type or instance level; 400/404/405 as the REST routes answer."""
    path, _, query = url.lstrip("/").partition("?")
    parts = path.split("/")
    if not parts[-1].startswith("$") or len(parts) > 3 or any(not p for p in parts):
        raise invalid(f"'{url}' is not [$op], [type]/[$op] or [type]/[id]/[$op].")
    res_type = parts[0] if len(parts) > 1 else None
    res_id = parts[1] if len(parts) == 3 else None
    if res_type is not None and res_type not in definitions.resource_types():
        raise FhirError("not-found", f"Unknown resource type '{res_type}'.")
    if res_id is not None:
        check_id(res_id)
    code = parts[-1][1:]
    operation = find_operation(code, res_type, instance=res_id is not None)
    if method not in ("GET", "POST"):
        raise invalid(f"${code} is called with GET or POST, not {method}.")
    if method == "GET" and operation.affects_state:
        raise FhirError("method-not-allowed", f"${code} changes data: call it with POST.")
    return OperationEntry(operation, res_type, res_id, path, parse_qsl(query, keep_blank_values=True))


def check_transaction_safe(call: OperationEntry) -> None:
    """400 for an operation whose effect would escape the transaction's unit of work."""
    code = call.operation.code
    if not transaction_safe(call.operation):
        allowed = ", ".join("$" + c for c in sorted(TRANSACTION_SAFE))
        raise invalid(
            f"${code} cannot run inside a transaction (its effect is not part of the unit of work); "
            f"send it in a batch or on its own. Operations allowed in transactions: {allowed} and those "
            f"whose OperationDefinition says so ({IN_TRANSACTION})."
        )


def transaction_safe(operation: Operation) -> bool:
    if operation.code in TRANSACTION_SAFE:
        return True
    return any(
        isinstance(ext, dict) and ext.get("url") == IN_TRANSACTION and ext.get("valueBoolean") is True
        for ext in operation.declaration.get("extension") or []
    )


def run(
    conn: Connection,
    call: OperationEntry,
    body: Any,
    *,
    service: FhirService,
    settings: Settings | None,
    base: str,
    access: Access = UNRESTRICTED,
) -> dict[str, Any]:
    """Run the operation in the caller's unit of work with the bundle's ``access``; the response entry."""
    if settings is None:
        raise FhirError("not-supported", f"{call.path}: operations inside bundles are run by the REST API only.")
    if body is not None and not isinstance(body, dict):
        raise invalid("The entry's resource must be a JSON object: a Parameters resource or the resource itself.")
    inputs = read_inputs(call.operation, call.query, body)
    invocation = Invocation(
        service=service,
        settings=settings,
        base=base,
        path=call.path,
        res_type=call.res_type,
        res_id=call.res_id,
        inputs=inputs.values,
        search=inputs.search,
        cursor=inputs.cursor,
        access=access,
    )
    result = call.operation.run(invocation, conn)
    return {"resource": result, "response": {"status": "200 OK"}}


__all__ = [
    "IN_TRANSACTION",
    "TRANSACTION_SAFE",
    "OperationEntry",
    "check_transaction_safe",
    "is_operation",
    "resolve",
    "run",
    "transaction_safe",
]
