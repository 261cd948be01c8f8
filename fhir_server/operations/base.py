"""An operation is one module declaring its OperationDefinition as a dict and the function that runs it.

R4B Extended Operations (operations.html) and OperationDefinition (operationdefinition.html): the declaration
drives parameter checking, the CapabilityStatement and ``GET [base]/OperationDefinition/[id]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from fhir_server.access import UNRESTRICTED, Access
from fhir_server.audit.collector import AccessCollector
from fhir_server.auth.principal import SYSTEM, Principal
from fhir_server.config import Settings
from fhir_server.search.parameters import LOCAL_BASE
from fhir_server.service import FhirService

DEFINITION_BASE = LOCAL_BASE + "OperationDefinition/"
"""Canonical URLs of the definitions this server generates."""


@dataclass(frozen=True)
class Parameter:
    """One ``OperationDefinition.parameter``: name, use (in or out), cardinality and FHIR type."""

    name: str
    use: str
    min: int
    max: str
    type: str

    @property
    def limit(self) -> int | None:
        """The most values allowed, None for ``*``."""
        return None if self.max == "*" else int(self.max)


@dataclass(frozen=True)
class Invocation:
    """One call of an operation: where it was called, its checked inputs and what it may use."""

    service: FhirService
    settings: Settings
    base: str
    path: str
    """The operation's URL below the base, e.g. ``Patient/1/$everything``."""
    res_type: str | None
    res_id: str | None
    inputs: dict[str, list[Any]]
    search: list[tuple[str, str]] = field(default_factory=list)
    """Search parameters, for operations that take them (``Observation/$lastn``)."""
    cursor: str | None = None
    principal: Principal = SYSTEM
    """The caller (``request.state.principal``); the exchange itself in-process."""
    access: Access = UNRESTRICTED
    """What the caller may read (institution, consent, break-glass): operations filter their SQL with it."""
    audit: AccessCollector | None = None
    """What the request touched, for the audit trail (``$expunge`` reports the resources it erased)."""
    stored_json: bool = False
    """The answer is only serialised (the REST API): a Bundle may carry stored JSON as ``orjson.Fragment``
    entries, reported to ``audit`` by the operation, instead of parsed resources."""

    def one(self, name: str, default: Any = None) -> Any:
        values = self.inputs.get(name)
        return values[0] if values else default

    def all(self, name: str) -> list[Any]:
        return list(self.inputs.get(name, []))


Run = Callable[[Invocation, Connection], dict[str, Any]]
"""Runs the operation inside one unit of work and returns the resource to answer with."""


class Operation:
    """A declared operation and its implementation."""

    def __init__(
        self, declaration: dict[str, Any], run: Run, *, accepts_search: bool = False, paged: bool = False
    ) -> None:
        self.declaration = declaration
        self.run = run
        self.accepts_search = accepts_search
        """Undeclared parameters are search parameters of the resource type, checked by the search parser."""
        self.paged = paged
        """The operation answers pages of a Bundle and takes the ``_cursor`` of its next links."""
        self.parameters = tuple(
            Parameter(p["name"], p["use"], p["min"], p["max"], p["type"]) for p in declaration["parameter"]
        )

    @property
    def id(self) -> str:
        return self.declaration["id"]

    @property
    def code(self) -> str:
        return self.declaration["code"]

    @property
    def resource(self) -> tuple[str, ...]:
        return tuple(self.declaration["resource"])

    @property
    def affects_state(self) -> bool:
        return bool(self.declaration["affectsState"])

    @property
    def inputs(self) -> dict[str, Parameter]:
        return {p.name: p for p in self.parameters if p.use == "in"}

    def applies(self, res_type: str | None, instance: bool) -> bool:
        """Whether the operation is defined at this level (system, type or instance) for this type."""
        if res_type is None:
            return bool(self.declaration["system"])
        if not (self.declaration["instance"] if instance else self.declaration["type"]):
            return False
        return "Resource" in self.resource or res_type in self.resource

    def levels(self) -> str:
        names = [level for level in ("system", "type", "instance") if self.declaration[level]]
        return ", ".join(names)

    def definition(self) -> dict[str, Any]:
        """The OperationDefinition resource (generated, never stored)."""
        return {
            "resourceType": "OperationDefinition",
            "id": self.id,
            "url": DEFINITION_BASE + self.id,
            "version": "0.1.0",
            "status": "active",
            "kind": "operation",
            "publisher": "Wuzhou Health Information Exchange",
            **self.declaration,
        }
