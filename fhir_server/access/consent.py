"""A resident's regional-sharing Consent as rules, and the decision they make for one read (pure functions).

R4B Consent (consent.html): ``status``, ``patient``, ``category``, ``provision`` with ``type``, ``period``,
``actor``, ``purpose``, ``class``, ``code``, ``securityLabel`` and nested ``provision``. A provision applies to
a read when every criterion it states matches (any value of a list); nested provisions are exceptions to their
parent and inherit the criteria they do not state. The deepest applicable rule decides; deny wins a tie. With
no applicable permit, nothing is shared. The same decision is made in SQL by :mod:`fhir_server.access.filters`
over the rows :func:`grants_of` produces.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from fhir_server.access.codes import CONSENT_CATEGORY_SYSTEM, REGIONAL_SHARING, RESOURCE_TYPES_SYSTEM
from fhir_server.search.values import date_range

Code = tuple[str | None, str]
"""(system, code); a None system matches the code in any system."""

UNMATCHED = "-"
"""Stands for criteria not enforced here (non-institution actors, classes that are not resource types):
a rule stating only those applies to no read."""


@dataclass(frozen=True)
class Grant:
    """One flattened rule: ``effect`` for reads matching every stated criterion (None: any)."""

    effect: str
    depth: int
    org: str | None = None
    res_type: str | None = None
    label: Code | None = None
    code: Code | None = None
    purpose: str | None = None
    low: int | None = None
    high: int | None = None


@dataclass(frozen=True)
class Read:
    """One institution reading one resource about a resident, at an instant, for a stated purpose."""

    org: str | None
    res_type: str
    at: int
    """Microseconds since the epoch."""
    purpose: str | None = None
    labels: frozenset[Code] = frozenset()
    """The resource's ``meta.security`` codings."""
    codes: frozenset[Code] = frozenset()
    """The codings of the resource's ``code`` search parameter (e.g. ``Condition.code``)."""


@dataclass(frozen=True)
class _Criteria:
    orgs: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    labels: tuple[Code, ...] = ()
    codes: tuple[Code, ...] = ()
    purposes: tuple[str, ...] = ()
    low: int | None = None
    high: int | None = None


def is_regional_sharing(consent: dict[str, Any]) -> bool:
    """Whether a Consent carries the regional-sharing category (:data:`~fhir_server.access.codes.REGIONAL_SHARING`)."""
    return any(
        coding.get("system") == CONSENT_CATEGORY_SYSTEM and coding.get("code") == REGIONAL_SHARING
        for concept in consent.get("category") or []
        for coding in concept.get("coding") or []
    )


def consent_patient(consent: dict[str, Any]) -> str | None:
    """The id of the Patient a Consent is about (``Consent.patient``, a local or absolute reference)."""
    return _local_id((consent.get("patient") or {}).get("reference"), "Patient")


def grants_of(consent: dict[str, Any]) -> list[Grant]:
    """The rules an active regional-sharing Consent makes; none for any other Consent (withdrawn, other kind).

    Without a provision the resident shares everything. A root provision of type deny is an opt-in with
    exceptions: everything is shared except what the provision states (nothing, when it states nothing).
    """
    if consent.get("status") != "active" or not is_regional_sharing(consent) or consent_patient(consent) is None:
        return []
    root = consent.get("provision")
    if not isinstance(root, dict):
        return [Grant("permit", 0)]
    grants = [Grant("permit", -1)] if root.get("type") == "deny" else []
    _flatten(root, _Criteria(), "permit", 0, grants)
    return grants


def applies(grant: Grant, read: Read) -> bool:
    """Whether every criterion the rule states matches the read."""
    return (
        (grant.org is None or grant.org == read.org)
        and (grant.res_type is None or grant.res_type == read.res_type)
        and (grant.purpose is None or grant.purpose == read.purpose)
        and (grant.low is None or grant.low <= read.at)
        and (grant.high is None or read.at <= grant.high)
        and (grant.label is None or _has_code(read.labels, grant.label))
        and (grant.code is None or _has_code(read.codes, grant.code))
    )


def permits(grants: Iterable[Grant], read: Read) -> bool:
    """An applicable permit that no applicable deny at the same or a deeper level overrides (institutions only)."""
    if read.org is None:
        return False
    matching = [grant for grant in grants if applies(grant, read)]
    denied = [grant.depth for grant in matching if grant.effect == "deny"]
    return any(grant.effect == "permit" and not any(d >= grant.depth for d in denied) for grant in matching)


def _flatten(provision: dict[str, Any], parent: _Criteria, parent_effect: str, depth: int, out: list[Grant]) -> None:
    criteria = _criteria(provision, parent)
    effect = provision.get("type") or parent_effect
    if effect not in ("permit", "deny"):
        effect = parent_effect
    for org, res_type, label, code, purpose in itertools.product(
        criteria.orgs or (None,),
        criteria.types or (None,),
        criteria.labels or (None,),
        criteria.codes or (None,),
        criteria.purposes or (None,),
    ):
        out.append(Grant(effect, depth, org, res_type, label, code, purpose, criteria.low, criteria.high))
    for child in provision.get("provision") or []:
        if isinstance(child, dict):
            _flatten(child, criteria, "deny" if effect == "permit" else "permit", depth + 1, out)


def _criteria(provision: dict[str, Any], parent: _Criteria) -> _Criteria:
    criteria = parent
    actors = provision.get("actor") or []
    if actors:
        orgs = {_local_id((a.get("reference") or {}).get("reference"), "Organization") for a in actors}
        criteria = replace(criteria, orgs=tuple(sorted(f"Organization/{o}" for o in orgs if o)) or (UNMATCHED,))
    classes = provision.get("class") or []
    if classes:
        types = [c.get("code") for c in classes if c.get("system") in (None, RESOURCE_TYPES_SYSTEM) and c.get("code")]
        criteria = replace(criteria, types=tuple(types) or (UNMATCHED,))
    labels = _codes(provision.get("securityLabel") or [])
    if labels:
        criteria = replace(criteria, labels=labels)
    codes = _codes(coding for concept in provision.get("code") or [] for coding in concept.get("coding") or [])
    if codes:
        criteria = replace(criteria, codes=codes)
    purposes = tuple(p["code"] for p in provision.get("purpose") or [] if p.get("code"))
    if purposes:
        criteria = replace(criteria, purposes=purposes)
    period = provision.get("period") or {}
    start = date_range(period["start"]) if period.get("start") else None
    end = date_range(period["end"]) if period.get("end") else None
    if start is not None:
        criteria = replace(criteria, low=start[0] if parent.low is None else max(start[0], parent.low))
    if end is not None:
        criteria = replace(criteria, high=end[1] if parent.high is None else min(end[1], parent.high))
    return criteria


def _codes(codings: Iterable[dict[str, Any]]) -> tuple[Code, ...]:
    return tuple((c.get("system"), c["code"]) for c in codings if c.get("code"))


def _has_code(codes: frozenset[Code], wanted: Code) -> bool:
    system, code = wanted
    return any(c == code and (system is None or s == system) for s, c in codes)


def _local_id(reference: str | None, res_type: str) -> str | None:
    """``Type/id`` or ``…/Type/id`` (absolute) → id; anything else → None."""
    if not reference:
        return None
    parts = reference.split("/_history/", 1)[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == res_type and parts[-1]:
        return parts[-1]
    return None
