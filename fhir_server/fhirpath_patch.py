"""FHIRPath Patch (R4B §2.1.0.2 "FHIRPath Patch"): a Parameters resource of add/insert/delete/replace/move.

Paths are evaluated by a small location-tracking evaluator (steps, ``[n]``, ``where(a='v')``, ``first()``,
``last()``, choice names), because the operations must change the very nodes a path selects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fhir_server import definitions
from fhir_server.errors import FhirError, invalid

_STEP = re.compile(r"(?P<name>[A-Za-z][A-Za-z0-9_]*)(?:\((?P<arg>[^()]*)\))?(?:\[(?P<index>\d+)\])?$")


@dataclass
class Location:
    """Where a node lives: ``container[key]`` (a dict and key, or a list and index) and its FHIR type."""

    container: Any
    key: Any
    type: str

    @property
    def node(self) -> Any:
        return self.container[self.key]


def _split(path: str) -> list[str]:
    """Split on dots outside parentheses and quotes."""
    parts, depth, quoted, current = [], 0, False, ""
    for char in path:
        if char == "'" and depth:
            quoted = not quoted
        if not quoted:
            depth += char == "("
            depth -= char == ")"
        if char == "." and depth == 0 and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts]


def _children(location: Location, name: str) -> list[Location]:
    node = location.node
    if not isinstance(node, dict):
        return []
    element_defs = definitions.elements(location.type)
    keys = (
        [name] if name in node else [k for k in node if k.startswith(name) and k[len(name) : len(name) + 1].isupper()]
    )
    found = []
    for key in keys:
        child_type = element_defs[key].type if key in element_defs else ""
        value = node[key]
        if isinstance(value, list):
            found.extend(Location(value, i, child_type) for i in range(len(value)))
        else:
            found.append(Location(node, key, child_type))
    return found


def _where(locations: list[Location], condition: str) -> list[Location]:
    field, _, literal = condition.partition("=")
    field, literal = field.strip(), literal.strip()
    if not field or not literal:
        raise invalid(f"where({condition}) is not supported in a FHIRPath Patch path; use where(element='value').")
    expected: Any = (
        literal.strip("'") if literal.startswith("'") else {"true": True, "false": False}.get(literal, literal)
    )
    kept = []
    for location in locations:
        values = [c.node for c in _evaluate_steps([location], _split(field))]
        if expected in values:
            kept.append(location)
    return kept


def _evaluate_steps(locations: list[Location], steps: list[str]) -> list[Location]:
    for step in steps:
        match = _STEP.match(step)
        if not match:
            raise invalid(f"The path step '{step}' is not supported in a FHIRPath Patch path.")
        name, arg, index = match["name"], match["arg"], match["index"]
        if arg is not None:
            if name == "where":
                locations = _where(locations, arg)
            elif name == "first":
                locations = locations[:1]
            elif name == "last":
                locations = locations[-1:]
            else:
                raise invalid(f"The function {name}() is not supported in a FHIRPath Patch path.")
        else:
            locations = [child for location in locations for child in _children(location, name)]
        if index is not None:
            position = int(index)
            locations = locations[position : position + 1]
    return locations


def evaluate(resource: dict[str, Any], path: str) -> list[Location]:
    steps = _split(path)
    if not steps or steps[0] != resource["resourceType"]:
        raise invalid(f"A FHIRPath Patch path must start with {resource['resourceType']}: '{path}'.")
    root = Location({"root": resource}, "root", resource["resourceType"])
    return _evaluate_steps([root], steps[1:])


def _value(part: dict[str, Any]) -> Any:
    """The value of a ``value`` part: a value[x], or nested parts building a complex element."""
    for key, value in part.items():
        if key.startswith("value"):
            return value
    if "resource" in part:
        return part["resource"]
    if "part" in part:
        return {p["name"]: _value(p) for p in part["part"]}
    raise invalid(f"The patch part '{part.get('name')}' has no value.")


def _one(locations: list[Location], path: str) -> Location:
    if len(locations) != 1:
        raise FhirError("processing", f"The path '{path}' selects {len(locations)} elements; the operation needs one.")
    return locations[0]


def apply(resource: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """Apply every ``operation`` parameter in order; returns the patched resource (changed in place)."""
    if parameters.get("resourceType") != "Parameters":
        raise invalid("A FHIRPath Patch is a Parameters resource.")
    for number, operation in enumerate(parameters.get("parameter") or []):
        if operation.get("name") != "operation":
            raise invalid(f"Parameters.parameter[{number}] must be named 'operation'.")
        parts = {p.get("name"): p for p in operation.get("part") or []}
        kind = (parts.get("type") or {}).get("valueCode")
        path = (parts.get("path") or {}).get("valueString")
        if kind not in ("add", "insert", "delete", "replace", "move") or not path:
            raise invalid(f"Operation {number}: type must be add, insert, delete, replace or move, with a path.")
        try:
            _apply_one(resource, kind, path, parts)
        except FhirError as error:
            raise FhirError(error.kind, f"Operation {number} ({kind} {path}): {error.diagnostics}") from None
    return resource


def _apply_one(resource: dict[str, Any], kind: str, path: str, parts: dict[str, dict]) -> None:
    locations = evaluate(resource, path)
    if kind == "delete":
        if not locations:
            return
        target = _one(locations, path)
        if isinstance(target.container, list):
            target.container.pop(target.key)
        else:
            del target.container[target.key]
        return
    if kind == "replace":
        target = _one(locations, path)
        target.container[target.key] = _value(parts.get("value") or {})
        return
    if kind == "add":
        name = (parts.get("name") or {}).get("valueString")
        if not name:
            raise invalid("An add operation needs a name.")
        target = _one(locations, path)
        if not isinstance(target.node, dict):
            raise invalid(f"'{path}' is not an element that can hold '{name}'.")
        element = definitions.elements(target.type).get(name)
        value = _value(parts.get("value") or {})
        if element is not None and element.repeats:
            target.node.setdefault(name, []).append(value)
        elif name in target.node:
            raise FhirError("processing", f"'{path}.{name}' already has a value; use replace.")
        else:
            target.node[name] = value
        return
    index = (parts.get("index") or parts.get("destination") or {}).get("valueInteger")
    if kind == "insert":
        items = _list_at(resource, path, locations)
        if index is None or not 0 <= index <= len(items):
            raise invalid(f"insert needs an index between 0 and {len(items)}.")
        items.insert(index, _value(parts.get("value") or {}))
        return
    items = _list_at(resource, path, locations)
    source = (parts.get("source") or {}).get("valueInteger")
    if source is None or index is None or not (0 <= source < len(items) and 0 <= index < len(items)):
        raise invalid(f"move needs source and destination indexes within 0..{len(items) - 1}.")
    items.insert(index, items.pop(source))


def _list_at(resource: dict[str, Any], path: str, locations: list[Location]) -> list[Any]:
    if locations and isinstance(locations[0].container, list):
        return locations[0].container
    parent_path, _, name = path.rpartition(".")
    parent = _one(evaluate(resource, parent_path), parent_path) if parent_path else None
    if parent is None or not isinstance(parent.node, dict):
        raise invalid(f"'{path}' is not a list element.")
    return parent.node.setdefault(name, [])
