"""The official R4B definitions the server is driven by, as a compact generated table.

``r4b.json`` is written by ``scripts/generate_definitions.py`` from ``hl7.fhir.r4b.core@4.3.0``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class ElementDef:
    """One child element: its type name, whether it repeats, its required binding, minimum, summary flag."""

    type: str
    repeats: bool
    value_set: str | None
    min: int
    summary: bool


@cache
def _table() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath("r4b.json").read_bytes())


@cache
def resource_types() -> frozenset[str]:
    return frozenset(_table()["resourceTypes"])


@cache
def elements(type_name: str) -> dict[str, ElementDef]:
    """Children of a resource, complex datatype or backbone element (``Patient.contact``)."""
    return {name: ElementDef(*spec) for name, spec in _table()["types"].get(type_name, {}).items()}


@cache
def value_set_codes(url: str) -> dict[str, frozenset[str]] | None:
    """The expansion of a required value set as {system: codes}, or None when it is not enumerable."""
    expansion = _table()["valueSets"].get(url)
    if expansion is None:
        return None
    return {system: frozenset(codes) for system, codes in expansion.items()}


def value_set_urls() -> list[str]:
    """The URLs of the value sets :func:`value_set_codes` knows."""
    return list(_table()["valueSets"])


def search_parameters() -> list[dict[str, Any]]:
    return _table()["searchParameters"]


def compartment(code: str) -> dict[str, list[str]]:
    return _table()["compartments"].get(code, {})


FHIR_VERSION = "4.3.0"
