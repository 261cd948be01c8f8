"""Conformance resources posted to this server, found by canonical URL (R4B resource.html#canonical).

Profiles (StructureDefinition) and value sets (ValueSet) used by ``$validate``; the required value sets of the
core definitions come from the generated definition table.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection

from fhir_server import definitions
from fhir_server.errors import FhirError
from fhir_server.service import FhirService


def canonical_resource(conn: Connection, service: FhirService, res_type: str, canonical: str) -> dict[str, Any] | None:
    """The current ``res_type`` with this ``url`` (``url|version`` picks a version); several matches → 412."""
    url, _, version = canonical.partition("|")
    params = [("url", url), *([("version", version)] if version else [])]
    found = service.matches(conn, res_type, params, limit=2)
    if len(found) > 1:
        raise FhirError(
            "multiple-matches", f"Several {res_type} resources have the URL {url}; name one as url|version."
        )
    versions = service.repository.load_many(conn, found)
    return versions[0].resource() if versions else None


def value_set_codes(conn: Connection, service: FhirService, canonical: str) -> dict[str, frozenset[str]] | None:
    """``{system: codes}`` of a value set: a core required one, or a stored ValueSet that can be enumerated."""
    url = canonical.partition("|")[0]
    core = definitions.value_set_codes(url)
    if core is not None:
        return core
    try:
        value_set = canonical_resource(conn, service, "ValueSet", canonical)
    except FhirError:
        return None
    return enumerate_value_set(value_set) if value_set is not None else None


def enumerate_value_set(value_set: dict[str, Any]) -> dict[str, frozenset[str]] | None:
    """The codes of a ValueSet's expansion, or of a compose that lists every concept; None otherwise."""
    codes: dict[str, set[str]] = defaultdict(set)
    expansion = value_set.get("expansion")
    if isinstance(expansion, dict) and isinstance(expansion.get("contains"), list):
        pending = list(expansion["contains"])
        while pending:
            item = pending.pop()
            if not isinstance(item, dict):
                continue
            if isinstance(item.get("system"), str) and isinstance(item.get("code"), str):
                codes[item["system"]].add(item["code"])
            pending.extend(item.get("contains") or [])
        return {system: frozenset(found) for system, found in codes.items()}
    compose = value_set.get("compose")
    if not isinstance(compose, dict) or not compose.get("include"):
        return None
    for rule in compose["include"]:
        listed = _listed(rule)
        if listed is None:
            return None
        codes[listed[0]].update(listed[1])
    for rule in compose.get("exclude") or []:
        listed = _listed(rule)
        if listed is None:
            return None
        codes[listed[0]].difference_update(listed[1])
    return {system: frozenset(found) for system, found in codes.items()}


def _listed(rule: Any) -> tuple[str, set[str]] | None:
    """(system, codes) of an include/exclude that enumerates its concepts, without filters or value sets."""
    if not isinstance(rule, dict) or rule.get("filter") or rule.get("valueSet"):
        return None
    system, concepts = rule.get("system"), rule.get("concept")
    if not isinstance(system, str) or not isinstance(concepts, list) or not concepts:
        return None
    return system, {c["code"] for c in concepts if isinstance(c, dict) and isinstance(c.get("code"), str)}
