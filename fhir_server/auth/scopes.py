"""SMART on FHIR clinical scopes, v1 (``system/Patient.read``) and v2 (``system/Observation.rs?category=…``).

SMART App Launch 2.0 §Scopes for requesting clinical data: ``context/type.permissions[?param=value&…]``, where
the v2 permissions are an ordered subset of ``cruds`` and v1's ``read``/``write``/``*`` stand for ``rs``/``cud``/
``cruds``. ``user/`` scopes grant like ``system/`` ones (the institution filters still apply). ``patient/`` scopes
are granted only to a client registered for one resident (its tokens carry the ``patient`` claim); they grant
read and search, and the access filters narrow them to that resident's record.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl, urlencode

from fhir_server import definitions

PERMISSIONS = "cruds"
READ_PERMISSIONS = frozenset("rs")
"""What a ``patient/`` scope may grant: a resident's app reads, it does not write."""
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^(system|user|patient)/([A-Z][A-Za-z]*|\*)\.([a-z]+|\*)(?:\?(.+))?$")
_NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}

Constraint = tuple[tuple[str, str], ...]
"""Search parameters a v2 scope restricts its resources to, e.g. ``(("category", "vital-signs"),)``."""


class ScopeError(ValueError):
    """A scope string that is not a well-formed SMART clinical scope."""


@dataclass(frozen=True)
class Scope:
    """One parsed clinical scope."""

    context: str
    res_type: str
    permissions: frozenset[str]
    constraint: Constraint = ()

    def covers(self, other: Scope) -> bool:
        """Everything ``other`` grants, this scope grants too."""
        return (
            self.context == other.context
            and self.res_type in ("*", other.res_type)
            and other.permissions <= self.permissions
            and set(self.constraint) <= set(other.constraint)
        )

    def intersect(self, other: Scope) -> Scope | None:
        """What both scopes grant, or None."""
        if self.context != other.context:
            return None
        if self.res_type != other.res_type and "*" not in (self.res_type, other.res_type):
            return None
        permissions = self.permissions & other.permissions
        if not permissions:
            return None
        res_type = other.res_type if self.res_type == "*" else self.res_type
        constraint = tuple(dict.fromkeys([*self.constraint, *other.constraint]))
        return Scope(self.context, res_type, permissions, constraint)

    def text(self) -> str:
        """The v2 spelling."""
        letters = "".join(p for p in PERMISSIONS if p in self.permissions)
        query = f"?{urlencode(self.constraint)}" if self.constraint else ""
        return f"{self.context}/{self.res_type}.{letters}{query}"


def parse_scope(text: str) -> Scope | None:
    """A clinical scope; None for one that grants no resource access (``openid``, ``launch``, ``fhirUser`` …)."""
    if "/" not in text or text.startswith("launch/"):
        return None
    match = _SCOPE.match(text)
    if match is None:
        raise ScopeError(f"'{text}' is not a SMART scope like system/Patient.read or system/Observation.rs.")
    context, res_type, permissions, query = match.groups()
    if res_type != "*" and res_type not in definitions.resource_types():
        raise ScopeError(f"'{text}' names {res_type}, which is not an R4B resource type.")
    if permissions in _V1:
        if query:
            raise ScopeError(f"'{text}': only v2 scopes (…rs?param=value) carry search constraints.")
        letters = _V1[permissions]
    else:
        letters = permissions
        if any(p not in PERMISSIONS for p in letters) or "".join(p for p in PERMISSIONS if p in letters) != letters:
            raise ScopeError(f"'{text}': v2 permissions are letters of 'cruds' in that order, each at most once.")
    constraint: Constraint = ()
    if query:
        try:
            constraint = tuple(parse_qsl(query, keep_blank_values=False, strict_parsing=True))
        except ValueError:
            raise ScopeError(f"'{text}': the constraint must be param=value pairs joined by '&'.") from None
        if res_type == "*":
            raise ScopeError(f"'{text}': search constraints need a resource type, not '*'.")
    return Scope(context, res_type, frozenset(letters), constraint)


def split_scopes(value: str | Iterable[str] | None) -> list[str]:
    """Scope strings from a space-separated value (RFC 6749 §3.3) or a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part for part in value.split() if part]
    return [str(part) for part in value if str(part)]


def granted_scopes(requested: list[str], registered: list[str], *, patient_context: bool = False) -> list[str]:
    """The scopes to grant: what was requested, cut down to what the client is registered for (SMART §Scopes).

    Raises ScopeError for a malformed scope, or a ``patient/`` scope when the client acts for no resident
    (``patient_context``).
    """
    allowed = [scope for scope in (parse_scope(text) for text in registered) if scope is not None]
    if not requested:
        return [text for text in registered if parse_scope(text) is not None]
    granted: dict[str, None] = {}
    for text in requested:
        scope = parse_scope(text)
        if scope is None:
            continue
        if scope.context == "patient" and not patient_context:
            raise ScopeError(
                f"'{text}': patient/ scopes are granted only to a client registered for a resident; use system/ scopes."
            )
        if any(reg.covers(scope) for reg in allowed):
            granted[text] = None
            continue
        for reg in allowed:
            common = scope.intersect(reg)
            if common is not None:
                granted[reg.text() if common == reg else common.text()] = None
    return list(granted)


@dataclass(frozen=True)
class Access:
    """What the granted scopes allow for one type and permission."""

    allowed: bool
    constraints: tuple[Constraint, ...] = ()
    """Alternatives (any one suffices) when only constrained scopes allow it; empty means unconstrained."""


_DENIED = Access(False)
_FULL = Access(True)


class Grants:
    """The parsed scopes of one token, answering 'may it do ``permission`` on ``res_type``?'."""

    def __init__(self, scopes: Iterable[str]) -> None:
        parsed = []
        self.patient_scopes = False
        for text in scopes:
            try:
                scope = parse_scope(text)
            except ScopeError:
                continue
            if scope is None:
                continue
            if scope.context == "patient":
                self.patient_scopes = True
                permissions = scope.permissions & READ_PERMISSIONS
                if not permissions:
                    continue
                scope = Scope(scope.context, scope.res_type, permissions, scope.constraint)
            parsed.append(scope)
        self.scopes = tuple(parsed)
        self._cache: dict[tuple[str, str], Access] = {}

    def access(self, res_type: str, permission: str) -> Access:
        """``res_type`` may be ``*``: every type (only wildcard scopes grant that)."""
        key = (res_type, permission)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._access(res_type, permission)
        return found

    def _access(self, res_type: str, permission: str) -> Access:
        constraints: list[Constraint] = []
        for scope in self.scopes:
            if permission not in scope.permissions or scope.res_type not in ("*", res_type):
                continue
            if not scope.constraint:
                return _FULL
            constraints.append(scope.constraint)
        return Access(True, tuple(constraints)) if constraints else _DENIED

    def everything(self) -> bool:
        """Every permission on every type, unconstrained (``system/*.*``)."""
        return all(self.access("*", p) is _FULL for p in PERMISSIONS)

    def readable(self, res_type: str) -> bool:
        """Unconstrained read of ``res_type`` (what ``_include`` needs)."""
        access = self.access(res_type, "r")
        return access.allowed and not access.constraints


@lru_cache(maxsize=4096)
def grants_for(scopes: frozenset[str]) -> Grants:
    """Parsed grants, shared by every request carrying the same scopes."""
    return Grants(scopes)


def needed_scope(res_type: str, permission: str) -> str:
    """How a 403 names the scope that was missing, in both versions."""
    v1 = "read" if permission in "rs" else "write"
    return f"system/{res_type}.{permission} (v1: system/{res_type}.{v1})"


def permission_name(permission: str) -> str:
    return _NAMES[permission]


__all__ = [
    "READ_PERMISSIONS",
    "Access",
    "Grants",
    "Scope",
    "ScopeError",
    "granted_scopes",
    "grants_for",
    "needed_scope",
    "parse_scope",
    "permission_name",
    "split_scopes",
]
