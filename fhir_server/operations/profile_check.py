"""Checking a resource against a profile (a constraining StructureDefinition), without a database.

R4B profiling.html and elementdefinition.html. The snapshot is used when present, else the differential.
Covered: cardinality (min/max) per parent instance; the allowed types of choice elements and the target types
of references (core ``targetProfile`` URLs); ``fixed[x]`` (exact) and ``pattern[x]`` (contained) values;
required bindings whose value set can be enumerated; FHIRPath invariants (``constraint.expression``, evaluated
with fhirpathpy; those inherited from the core type definitions are left to base validation); slicing with
``value`` and ``pattern`` discriminators on a path of plain element names or ``$this`` (extension slices by
``url`` take the extension's profile URL), choice type slices (``value[x]:valueQuantity``), per-slice
cardinality and closed slicing.
Not covered: :data:`NOT_COVERED`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import fhirpathpy
from fhirpathpy.models import models

from fhir_server import definitions
from fhir_server.errors import Issue
from fhir_server.operations.inputs import PRIMITIVES

NOT_COVERED = (
    "slicing discriminators of type exists, type and profile, and discriminator paths with functions "
    "(resolve(), extension(), ofType())",
    "ordered slicing, and reslices (slice names with '/')",
    "profiles on element types (type.profile, other than extension slices) and non-core targetProfile URLs",
    "the content of extensions against their own StructureDefinitions",
    "extensible and preferred bindings, and value sets defined by filters or whole code systems",
    "maxLength, minValue/maxValue, mustSupport and contentReference",
)

ValueSets = Callable[[str], dict[str, frozenset[str]] | None]
"""Resolves a value set canonical to ``{system: codes}``, or None when it cannot be enumerated."""

CORE = "http://hl7.org/fhir/StructureDefinition/"
_FHIRPATH_MODEL = models["r4"]
_PLAIN_PATH = re.compile(r"^(\$this|[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*)$")


@dataclass(frozen=True)
class Element:
    """One ElementDefinition: its id, the id of the element it slices (if a slice) and its definition."""

    id: str
    name: str
    raw: dict[str, Any]

    @property
    def slice_name(self) -> str | None:
        return self.raw.get("sliceName")

    @property
    def path(self) -> str:
        return self.raw.get("path", "")

    def label(self) -> str:
        return f"{self.path}:{self.slice_name}" if self.slice_name else self.path


def element_id(raw: dict[str, Any]) -> str:
    if isinstance(raw.get("id"), str):
        return raw["id"]
    path = raw.get("path", "")
    return f"{path}:{raw['sliceName']}" if raw.get("sliceName") else path


def _split(identifier: str) -> tuple[str, str, str | None]:
    """``A.b:s.c:t`` → (parent id ``A.b:s``, name ``c``, slice ``t``)."""
    parent, _, last = identifier.rpartition(".")
    name, _, slice_name = last.partition(":")
    return parent, name, slice_name or None


class Profile:
    """The element tree of a StructureDefinition: children and slices of every element id."""

    def __init__(self, structure: dict[str, Any]) -> None:
        self.url = structure.get("url", "")
        self.type = structure.get("type", "")
        section = structure.get("snapshot") or structure.get("differential") or {}
        self.children: dict[str, list[Element]] = defaultdict(list)
        self.slices: dict[str, list[Element]] = defaultdict(list)
        self.by_id: dict[str, Element] = {}
        for raw in section.get("element") or []:
            if isinstance(raw, dict):
                identifier = element_id(raw)
                if "/" not in identifier:  # reslices (``a:s/r``) are not checked
                    self._add(Element(identifier, _split(identifier)[1], raw))
        for identifier in list(self.by_id):
            self._ensure_parents(identifier)

    def _add(self, element: Element) -> None:
        self.by_id[element.id] = element
        parent, name, slice_name = _split(element.id)
        if not parent:
            return
        if slice_name:
            self.slices[f"{parent}.{name}"].append(element)
        else:
            self.children[parent].append(element)

    def _ensure_parents(self, identifier: str) -> None:
        """A differential may leave out the elements above the ones it constrains: add them, unconstrained."""
        parent, name, slice_name = _split(identifier)
        for above in ((f"{parent}.{name}",) if slice_name else ()) + ((parent,) if "." in parent else ()):
            if above not in self.by_id:
                _, above_name, above_slice = _split(above)
                raw: dict[str, Any] = {"path": ".".join(part.split(":")[0] for part in above.split("."))}
                if above_slice:
                    raw["sliceName"] = above_slice
                self._add(Element(above, above_name, raw))
                self._ensure_parents(above)


class Node(NamedTuple):
    """One value met on the walk: where it is (issue path and FHIRPath) and, for a choice, its type code."""

    value: Any
    path: str
    """``Observation.component[0].valueQuantity``: what issues name."""
    fhirpath: str
    """``Observation.component[0].value``: what invariants are evaluated on."""
    type_code: str | None = None


class ProfileChecker:
    """Walks one resource along one profile and collects issues."""

    def __init__(self, profile: Profile, value_sets: ValueSets) -> None:
        self.profile = profile
        self.value_sets = value_sets
        self.issues: list[Issue] = []
        self.root: dict[str, Any] = {}

    def check(self, resource: dict[str, Any]) -> list[Issue]:
        self.root = resource
        self.issues = []
        root_type = self.profile.type
        if resource.get("resourceType") != root_type:
            found = resource.get("resourceType")
            self._issue("invalid", found or "Resource", f"the profile is for {root_type}, not {found}")
            return self.issues
        nodes = [Node(resource, root_type, root_type)]
        root = self.profile.by_id.get(root_type)
        if root is not None:
            self._check_values(root, nodes)
        self._check_children(root_type, nodes)
        return self.issues

    # -- walking -------------------------------------------------------------------------------

    def _check_children(self, element_id: str, nodes: list[Node]) -> None:
        for child in self.profile.children.get(element_id, []):
            for node in nodes:
                if isinstance(node.value, dict):
                    self._check_element(child, _items(node, child.name), node.path)

    def _check_element(self, element: Element, items: list[Node], parent_path: str) -> None:
        self._cardinality(element, len(items), f"{parent_path}.{element.name}")
        self._check_values(element, items)
        slices = self.profile.slices.get(element.id)
        if slices:
            self._check_slices(element, slices, items, parent_path)
        self._check_children(element.id, items)

    def _check_values(self, element: Element, items: list[Node]) -> None:
        raw = element.raw
        fixed = _choice_value(raw, "fixed")
        pattern = _choice_value(raw, "pattern")
        allowed = [t.get("code") for t in raw.get("type") or [] if isinstance(t, dict)]
        for node in items:
            if node.type_code is not None and allowed and node.type_code not in allowed:
                shown = ", ".join(allowed)
                self._issue("structure", node.path, f"type {node.type_code} is not allowed here (allowed: {shown})")
                continue
            if fixed is not None and node.value != fixed:
                self._issue("value", node.path, f"the value must be exactly {_show(fixed)}")
            if pattern is not None and not matches_pattern(pattern, node.value):
                self._issue("value", node.path, f"the value must match the pattern {_show(pattern)}")
            if node.value is None:
                continue
            self._check_targets(raw, node)
            self._check_binding(raw, node, node.type_code or (allowed[0] if len(allowed) == 1 else None))
            self._check_constraints(element, node)

    def _check_slices(self, element: Element, slices: list[Element], items: list[Node], parent_path: str) -> None:
        slicing = element.raw.get("slicing") or {}
        matchers = []
        for slice_element in slices:
            matcher = self._matcher(element, slice_element, slicing)
            if matcher is None:
                return
            matchers.append((slice_element, matcher))
        assigned: dict[str, list[Node]] = {s.id: [] for s in slices}
        for node in items:
            owner = next((s for s, matches in matchers if matches(node)), None)
            if owner is not None:
                assigned[owner.id].append(node)
            elif slicing.get("rules") == "closed":
                self._issue("structure", node.path, f"the item matches none of the slices of closed {element.label()}")
        for slice_element in slices:
            members = assigned[slice_element.id]
            self._cardinality(slice_element, len(members), f"{parent_path}.{element.name}")
            self._check_values(slice_element, members)
            self._check_children(slice_element.id, members)

    def _matcher(
        self, element: Element, slice_element: Element, slicing: dict[str, Any]
    ) -> Callable[[Node], bool] | None:
        """How to tell the members of a slice, or None (with a warning) when this checker cannot."""
        name = slice_element.slice_name or ""
        if element.name.endswith("[x]") and name.startswith(element.name[:-3]):
            return lambda node: node.path.rsplit(".", 1)[-1] == name  # a type slice: valueQuantity
        tests = []
        for discriminator in slicing.get("discriminator") or []:
            kind, path = discriminator.get("type"), discriminator.get("path", "")
            expected = None
            if kind in ("value", "pattern") and _PLAIN_PATH.match(path):
                expected = self._discriminator_value(slice_element, path)
            if expected is None:
                message = f"slice '{name}': discriminator {kind} '{path}' is not checked by this server"
                self._issue("not-supported", element.path, message, severity="warning")
                return None
            tests.append((path, *expected))
        if not tests:
            self._issue("not-supported", element.path, f"slice '{name}' has no discriminator", severity="warning")
            return None

        def matches(node: Node) -> bool:
            return all(
                any(_agrees(mode, value, found) for found in _walk(node.value, path)) for path, mode, value in tests
            )

        return matches

    def _discriminator_value(self, slice_element: Element, path: str) -> tuple[str, Any] | None:
        """The fixed or pattern value a slice gives the discriminator path (reslices on the way allowed)."""
        if path == "$this":
            candidates = [slice_element]
        else:
            full_path = f"{slice_element.path}.{path}"
            prefix = f"{slice_element.id}."
            candidates = [e for i, e in self.profile.by_id.items() if i.startswith(prefix) and e.path == full_path]
        for target in candidates:
            for mode in ("fixed", "pattern"):
                value = _choice_value(target.raw, mode)
                if value is not None:
                    return mode, value
        if path == "url":
            for type_ in slice_element.raw.get("type") or []:
                if isinstance(type_, dict) and type_.get("code") == "Extension" and type_.get("profile"):
                    return "fixed", type_["profile"][0]
        return None

    # -- rules ---------------------------------------------------------------------------------

    def _cardinality(self, element: Element, count: int, path: str) -> None:
        low = element.raw.get("min")
        high = element.raw.get("max")
        if isinstance(low, int) and count < low:
            self._issue("required", path, f"{element.label()} needs at least {low} value(s), found {count}")
        if isinstance(high, str) and high.isdigit() and count > int(high):
            self._issue("structure", path, f"{element.label()} allows at most {high} value(s), found {count}")

    def _check_targets(self, raw: dict[str, Any], node: Node) -> None:
        if not isinstance(node.value, dict) or not isinstance(node.value.get("reference"), str):
            return
        targets = set()
        for type_ in raw.get("type") or []:
            if isinstance(type_, dict) and type_.get("code") == "Reference":
                for target in type_.get("targetProfile") or []:
                    if not (isinstance(target, str) and target.startswith(CORE)):
                        return  # a non-core target profile: not checked
                    targets.add(target.removeprefix(CORE))
        if not targets or "Resource" in targets:
            return
        parts = node.value["reference"].split("?", 1)[0].split("/")
        ref_type = parts[-4] if len(parts) >= 4 and parts[-2] == "_history" else parts[-2] if len(parts) >= 2 else None
        if ref_type in definitions.resource_types() and ref_type not in targets:
            allowed = ", ".join(sorted(targets))
            self._issue("structure", node.path, f"a reference to {ref_type} is not allowed (only {allowed})")

    def _check_binding(self, raw: dict[str, Any], node: Node, type_code: str | None) -> None:
        binding = raw.get("binding")
        if not isinstance(binding, dict) or binding.get("strength") != "required":
            return
        url = binding.get("valueSet")
        if not isinstance(url, str):
            return
        expansion = self.value_sets(url)
        if expansion is None:
            message = f"the value set {url} cannot be expanded here; not checked"
            self._issue("not-supported", node.path, message, severity="information")
            return
        item = node.value
        if isinstance(item, str):
            if not any(item in codes for codes in expansion.values()):
                self._issue("code-invalid", node.path, f"'{item}' is not in the required value set {url}")
            return
        if not isinstance(item, dict):
            return
        concept = "coding" in item or type_code == "CodeableConcept"
        codings = [c for c in (item.get("coding") or [] if concept else [item]) if isinstance(c, dict)]
        if not any(_in_expansion(expansion, c.get("system"), c.get("code")) for c in codings):
            self._issue("code-invalid", node.path, f"no coding is in the required value set {url}")

    def _check_constraints(self, element: Element, node: Node) -> None:
        """FHIRPath invariants, evaluated on the node in the context of the whole resource."""
        for constraint in element.raw.get("constraint") or []:
            if not isinstance(constraint, dict) or not isinstance(constraint.get("expression"), str):
                continue
            if _from_core_type(constraint.get("source")):
                continue
            key = constraint.get("key", "?")
            expression = constraint["expression"]
            if node.value is not self.root:
                expression = f"{node.fhirpath}.all({expression})"
            try:
                context = {"resource": self.root, "rootResource": self.root}
                result = fhirpathpy.evaluate(self.root, expression, context, _FHIRPATH_MODEL)
            except Exception as exc:  # fhirpathpy raises bare Exceptions for unsupported functions and syntax
                message = f"invariant {key} could not be evaluated: {exc}"
                self._issue("not-supported", node.path, message, severity="warning")
                continue
            if result != [True]:
                severity = "warning" if constraint.get("severity") == "warning" else "error"
                human = constraint.get("human") or constraint["expression"]
                self._issue("invariant", node.path, f"invariant {key} fails: {human}", severity=severity)

    def _issue(self, code: str, path: str, message: str, *, severity: str = "error") -> None:
        self.issues.append(Issue(code, f"Profile {self.profile.url}: {message}", severity=severity, expression=(path,)))


def _from_core_type(source: Any) -> bool:
    """A constraint inherited from a core type (``.../StructureDefinition/Element``): base validation's job.

    Core types are capitalised; core profiles (``vitalsigns``, ``bp``) and extensions are not, and their
    constraints are checked here.
    """
    return isinstance(source, str) and source.startswith(CORE) and source.removeprefix(CORE)[:1].isupper()


def _items(parent: Node, name: str) -> list[Node]:
    """The values of child ``name`` of a node; for a choice element, of each ``name[Type]`` present."""
    node = parent.value
    if name.endswith("[x]"):
        prefix = name[:-3]
        found = []
        for key in node:
            if key.startswith(prefix) and len(key) > len(prefix) and key[len(prefix)].isupper():
                suffix = key[len(prefix) :]
                lowered = suffix[0].lower() + suffix[1:]
                type_code = lowered if lowered in PRIMITIVES else suffix
                for item in _items(parent, key):
                    found.append(Node(item.value, item.path, f"{parent.fhirpath}.{prefix}", type_code))
        return found
    path, fhirpath = f"{parent.path}.{name}", f"{parent.fhirpath}.{name}"
    value = node.get(name)
    if value is None:
        shadow = node.get(f"_{name}")  # a primitive with only an id or extensions is present, without a value
        if shadow is None:
            return []
        value = [None] * len(shadow) if isinstance(shadow, list) else None
        if value is None:
            return [Node(None, path, fhirpath)]
    if isinstance(value, list):
        return [Node(item, f"{path}[{i}]", f"{fhirpath}[{i}]") for i, item in enumerate(value)]
    return [Node(value, path, fhirpath)]


def _in_expansion(expansion: dict[str, frozenset[str]], system: Any, code: Any) -> bool:
    if system is None:
        return any(code in codes for codes in expansion.values())
    return code in expansion.get(system, ())


def _walk(value: Any, path: str) -> list[Any]:
    """The values at a dotted path (or ``$this``) below ``value``, lists flattened."""
    current = value if isinstance(value, list) else [value]
    if path == "$this":
        return current
    for name in path.split("."):
        following = []
        for node in current:
            if isinstance(node, dict) and name in node:
                child = node[name]
                following.extend(child if isinstance(child, list) else [child])
        current = following
    return current


def _agrees(mode: str, expected: Any, value: Any) -> bool:
    return value == expected if mode == "fixed" else matches_pattern(expected, value)


def _choice_value(raw: dict[str, Any], prefix: str) -> Any:
    for key, value in raw.items():
        if key.startswith(prefix) and len(key) > len(prefix) and key[len(prefix)].isupper():
            return value
    return None


def matches_pattern(pattern: Any, value: Any) -> bool:
    """ElementDefinition.pattern[x]: every element of the pattern is in the value with the same value."""
    if isinstance(pattern, dict):
        if isinstance(value, list):
            return any(matches_pattern(pattern, v) for v in value)
        return isinstance(value, dict) and all(k in value and matches_pattern(v, value[k]) for k, v in pattern.items())
    if isinstance(pattern, list):
        values = value if isinstance(value, list) else [value]
        return all(any(matches_pattern(p, v) for v in values) for p in pattern)
    return pattern == value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
