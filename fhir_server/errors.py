"""Errors are OperationOutcomes all the way down; `http_status` is the one place a status is chosen."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue (R4B §2.37 OperationOutcome)."""

    code: str
    diagnostics: str
    severity: str = "error"
    expression: tuple[str, ...] = ()

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


# FHIR issue-type code → HTTP status when the issue is the reason a request failed.
_STATUS_BY_KIND = {
    "invalid": 400,
    "structure": 400,
    "required": 400,
    "value": 400,
    "invariant": 400,
    "code-invalid": 400,
    "business-rule": 422,
    "not-found": 404,
    "deleted": 410,
    "conflict": 409,
    "duplicate": 412,
    "multiple-matches": 412,
    "precondition-failed": 412,
    "too-costly": 413,
    "too-long": 413,
    "not-supported": 405,
    "not-acceptable": 406,
    "unsupported-media-type": 415,
    "security": 403,
    "login": 401,
    "forbidden": 403,
    "throttled": 429,
    "exception": 500,
    "timeout": 504,
    "transient": 503,
}

# Our own refinements of a FHIR issue code, so that one code can map to different statuses.
_FHIR_CODE = {
    "precondition-failed": "conflict",
    "not-acceptable": "not-supported",
    "unsupported-media-type": "not-supported",
    "method-not-allowed": "not-supported",
    "multiple-matches": "multiple-matches",
    "forbidden": "forbidden",
}


@dataclass
class FhirError(Exception):
    """A request that cannot be honoured, described by one or more issues."""

    kind: str
    diagnostics: str
    expression: tuple[str, ...] = ()
    extra: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.diagnostics)

    @property
    def issues(self) -> list[Issue]:
        first = Issue(_FHIR_CODE.get(self.kind, self.kind), self.diagnostics, expression=self.expression)
        return [first, *self.extra]

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def http_status(error: FhirError) -> int:
    """The single mapping from a failure to an HTTP status code."""
    if error.kind == "method-not-allowed":
        return 405
    return _STATUS_BY_KIND.get(error.kind, 400)


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [issue.to_fhir() for issue in issues]}


def invalid(diagnostics: str, *issues: Issue, expression: tuple[str, ...] = ()) -> FhirError:
    return FhirError("invalid", diagnostics, expression=expression, extra=list(issues))


def not_found(diagnostics: str) -> FhirError:
    return FhirError("not-found", diagnostics)


def gone(diagnostics: str) -> FhirError:
    return FhirError("deleted", diagnostics)


def precondition_failed(diagnostics: str) -> FhirError:
    return FhirError("precondition-failed", diagnostics)
