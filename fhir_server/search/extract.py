"""Values of a search parameter in a resource: a compiled FHIRPath subset, fhirpathpy for the rest.

The official R4B expressions are mostly paths with ``|`` unions, ``.where(resolve() is X)``,
``as X``/``.as(X)``/``.ofType(X)``, ``.where(field='value')``, ``.extension('url')`` and indexers; these
compile to direct walks over the JSON (FHIRPath N1 §5–6). Anything else is evaluated by fhirpathpy on the
expression rewritten by :func:`fhirpath_form`, which spells what fhirpathpy cannot evaluate as written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

import fhirpathpy
import orjson
from fhirpathpy.models import models as fhirpath_models

from fhir_server import definitions

Extractor = Callable[[Any, dict[str, Any]], list[Any]]
"""``extractor(focus, resource)``: the values reached from ``focus``; ``resource`` is ``%resource``."""

Step = Callable[[list[Any], dict[str, Any]], list[Any]]

_TOKEN = re.compile(
    r"\s*(?:(?P<name>%?[A-Za-z_][A-Za-z0-9_]*)|(?P<string>'(?:[^'\\]|\\.)*')|(?P<number>\d+)|(?P<op>[.()\[\]|=]))"
)


class Unsupported(Exception):
    """The expression uses FHIRPath beyond the compiled subset."""


# R4B data types (§2.24): the suffixes of choice elements (``value[x]`` → ``valueQuantity``).
_TYPE_SUFFIXES = frozenset({
    "Address", "Age", "Annotation", "Attachment", "Base64Binary", "Boolean", "Canonical", "Code", "CodeableConcept",
    "CodeableReference", "Coding", "ContactDetail", "ContactPoint", "Contributor", "Count", "DataRequirement",
    "Date", "DateTime", "Decimal", "Distance", "Dosage", "Duration", "Expression", "HumanName", "Id", "Identifier",
    "Instant", "Integer", "Integer64", "Markdown", "Meta", "Money", "Oid", "ParameterDefinition", "Period",
    "PositiveInt", "Quantity", "Range", "Ratio", "RatioRange", "Reference", "RelatedArtifact", "SampledData",
    "Signature", "String", "Time", "Timing", "TriggerDefinition", "UnsignedInt", "Uri", "Url", "UsageContext",
    "Uuid",
})  # fmt: skip


@cache
def _choice_names() -> frozenset[str]:
    """Names ``n`` for which some R4B type has an element ``n`` + a type suffix (``value`` of ``valueQuantity``).

    Only these can reach a choice variant, so the scan of a node's keys is skipped for every other name.
    """
    names: set[str] = set()
    pending, seen = list(definitions.resource_types()), set()
    while pending:  # every type reachable from a resource: datatypes and backbone elements
        type_name = pending.pop()
        if type_name in seen:
            continue
        seen.add(type_name)
        for element, spec in definitions.elements(type_name).items():
            pending.append(spec.type)
            for cut in range(1, len(element)):
                if element[cut].isupper() and element[cut:] in _TYPE_SUFFIXES:
                    names.add(element[:cut])
    return frozenset(names)


def _children(node: Any, name: str) -> list[Any]:
    if not isinstance(node, dict):
        return []
    if name in node:
        value = node[name]
    elif name not in _choice_names():
        return []
    else:
        value = [v for k, v in node.items() if k.startswith(name) and k[len(name) :] in _TYPE_SUFFIXES]
        if not value:
            return []
        value = value[0] if len(value) == 1 else value
    return list(value) if isinstance(value, list) else [value]


def _typed_children(node: Any, name: str, type_name: str) -> list[Any]:
    """``name.ofType(T)``: the choice variant ``nameT``, or children of ``name`` that are resources of type T."""
    if not isinstance(node, dict):
        return []
    key = name + type_name[:1].upper() + type_name[1:]
    if key in node:
        value = node[key]
        return list(value) if isinstance(value, list) else [value]
    if type_name in definitions.resource_types():
        return [v for v in _children(node, name) if isinstance(v, dict) and v.get("resourceType") == type_name]
    return []


def reference_type(reference: Any) -> str | None:
    """The resource type a Reference points at, from its literal reference or its ``type``."""
    if not isinstance(reference, dict):
        return None
    literal = reference.get("reference")
    if isinstance(literal, str):
        parts = literal.split("?")[0].split("/")
        if len(parts) >= 4 and parts[-2] == "_history":
            parts = parts[:-2]
        if len(parts) >= 2 and parts[-2][:1].isupper():
            return parts[-2]
        return None
    kind = reference.get("type")
    return kind if isinstance(kind, str) else None


class _Parser:
    """Recursive descent over the compiled subset; raises :class:`Unsupported` on anything else."""

    def __init__(self, text: str, *, relative: bool) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        text = text.strip()
        while position < len(text):
            match = _TOKEN.match(text, position)
            if not match or match.end() == position:
                raise Unsupported(text[position:])
            kind = match.lastgroup or "op"
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.index = 0
        self.relative = relative

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        at = self.index + offset
        return self.tokens[at] if at < len(self.tokens) else None

    def take(self, kind: str, value: str | None = None) -> str:
        token = self.peek()
        if token is None or token[0] != kind or (value is not None and token[1] != value):
            raise Unsupported(str(token))
        self.index += 1
        return token[1]

    def at(self, kind: str, value: str | None = None) -> bool:
        token = self.peek()
        return token is not None and token[0] == kind and (value is None or token[1] == value)

    def parse(self) -> Step:
        step = self.union()
        if self.peek() is not None:
            raise Unsupported(str(self.peek()))
        return step

    def union(self) -> Step:
        terms = [self.term()]
        while self.at("op", "|"):
            self.take("op")
            terms.append(self.term())
        if len(terms) == 1:
            return terms[0]
        return lambda nodes, resource: _distinct([v for term in terms for v in term(nodes, resource)])

    def term(self) -> Step:
        steps: list[Step] = []
        pending: str | None = None  # a child name whose step waits for a following as()/ofType()
        if self.at("op", "("):
            self.take("op")
            inner = self.parenthesised()
            self.take("op", ")")
            steps.append(inner)
        else:
            name = self.take("name")
            if name == "%resource":
                steps.append(lambda _nodes, resource: [resource])
            elif self.relative:
                pending = name
            elif name in ("Resource", "DomainResource"):
                steps.append(lambda nodes, _resource: [n for n in nodes if isinstance(n, dict)])
            elif name in definitions.resource_types():
                steps.append(
                    lambda nodes, _r, t=name: [n for n in nodes if isinstance(n, dict) and n.get("resourceType") == t]
                )
            else:
                raise Unsupported(name)
        while self.at("op", ".") or self.at("op", "["):
            if self.at("op", "["):
                self.take("op")
                position = int(self.take("number"))
                self.take("op", "]")
                steps.extend(self.flush(pending))
                pending = None
                steps.append(lambda nodes, _r, i=position: nodes[i : i + 1])
                continue
            self.take("op")
            name = self.take("name")
            if not self.at("op", "("):
                steps.extend(self.flush(pending))
                pending = name
                continue
            self.take("op")
            if name in ("as", "ofType"):
                type_name = self.take("name")
                self.take("op", ")")
                if pending is None:
                    raise Unsupported(f"{name}() without a child element")
                steps.append(
                    lambda nodes, _r, n=pending, t=type_name: [c for x in nodes for c in _typed_children(x, n, t)]
                )
                pending = None
                continue
            steps.extend(self.flush(pending))
            pending = None
            if name == "where":
                steps.append(self.condition())
            elif name == "extension":
                url = _unquote(self.take("string"))
                steps.append(
                    lambda nodes, _r, u=url: [
                        e for x in nodes for e in _children(x, "extension") if isinstance(e, dict) and e.get("url") == u
                    ]
                )
            else:
                raise Unsupported(name)
            self.take("op", ")")
        if self.at("name", "as"):
            self.take("name")
            type_name = self.take("name")
            if pending is None:
                raise Unsupported("as without a child element")
            steps.append(lambda nodes, _r, n=pending, t=type_name: [c for x in nodes for c in _typed_children(x, n, t)])
            pending = None
        steps.extend(self.flush(pending))
        return _chain(steps)

    def parenthesised(self) -> Step:
        step = self.union()
        return step

    @staticmethod
    def flush(pending: str | None) -> list[Step]:
        if pending is None:
            return []
        return [lambda nodes, _r, n=pending: [c for x in nodes for c in _children(x, n)]]

    def condition(self) -> Step:
        if self.at("name", "resolve"):
            self.take("name")
            self.take("op", "(")
            self.take("op", ")")
            self.take("name", "is")
            type_name = self.take("name")
            return lambda nodes, _r, t=type_name: [n for n in nodes if reference_type(n) == t]
        field = self.take("name")
        if self.at("op", "="):
            self.take("op")
            expected = _unquote(self.take("string"))
            return lambda nodes, _r, f=field, v=expected: [n for n in nodes if v in _children(n, f)]
        if self.at("op", ".") and self.peek(1) == ("name", "exists"):
            self.take("op")
            self.take("name")
            self.take("op", "(")
            self.take("op", ")")
            return lambda nodes, _r, f=field: [n for n in nodes if _children(n, f)]
        raise Unsupported(f"where({field} …)")


def _distinct(values: list[Any]) -> list[Any]:
    """``|`` is a union without duplicates (FHIRPath N1 §6.5)."""
    if len(values) < 2:
        return values
    seen: set[bytes] = set()
    out = []
    for value in values:
        key = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


def _unquote(literal: str) -> str:
    return literal[1:-1].replace("\\'", "'").replace("\\\\", "\\")


def _chain(steps: list[Step]) -> Step:
    def run(nodes: list[Any], resource: dict[str, Any]) -> list[Any]:
        for step in steps:
            if not nodes:
                return []
            nodes = step(nodes, resource)
        return nodes

    return run


# -- fhirpathpy ---------------------------------------------------------------------------------

_AS_PARENS = re.compile(r"\((?P<path>[A-Za-z%][\w.%]*) as (?P<type>\w+)\)")
_AS_BARE = re.compile(r"^(?P<path>[A-Za-z%][\w.%]*) as (?P<type>\w+)$")
_AS_CALL = re.compile(r"\.as\((?P<type>\w+)\)")
_RESOLVE_IS = re.compile(r"\.where\(resolve\(\) is (?P<type>\w+)\)")
_UNION = re.compile(r"\s+\|\s+")


def fhirpath_form(expression: str, resource_type: str | None = None) -> str:
    """The expression as fhirpathpy can evaluate it; each rewrite keeps the official meaning.

    * ``X as T`` and ``X.as(T)`` become ``X.ofType(T)``: R4B applies ``as`` to collections (``useContext.value``),
      which FHIRPath N1 §6.3 makes an error and fhirpathpy enforces.
    * ``.where(resolve() is T)`` becomes a test of the literal reference: fhirpathpy has no resolver.
    * ``Resource.x`` / ``DomainResource.x`` become ``T.x``: fhirpathpy does not match an abstract type name.
    """
    parts = []
    for part in _UNION.split(expression.strip()):
        part = _AS_PARENS.sub(r"\g<path>.ofType(\g<type>)", part)
        part = _AS_BARE.sub(r"\g<path>.ofType(\g<type>)", part)
        part = _AS_CALL.sub(r".ofType(\g<type>)", part)
        part = _RESOLVE_IS.sub(r".where(reference.matches('(^|/)\g<type>/[^/]+(/_history/[^/]+)?$'))", part)
        if resource_type:
            part = re.sub(r"^(\(?)(Resource|DomainResource)\.", rf"\g<1>{resource_type}.", part)
        parts.append(part)
    return " | ".join(parts)


def _fhirpath_extractor(expression: str) -> Extractor:
    # fhirpathpy ships no R4B model; R4's type hierarchy is the same for what search expressions use.
    compiled = fhirpathpy.compile(expression, model=fhirpath_models["r4"])

    def extract(focus: Any, resource: dict[str, Any]) -> list[Any]:
        try:
            return [v for v in compiled(focus, {"resource": resource}) if v is not None]
        except Exception:  # an expression that does not apply to this resource yields nothing
            return []

    return extract


_PRESENT_NOT_FALSE = re.compile(
    r"^(?P<path>(?P<type>[A-Z][A-Za-z]*)\.(?P<name>[a-z][A-Za-z0-9]*))\.exists\(\) and (?P=path) != false$"
)
"""``T.x.exists() and T.x != false`` (``Patient.deceased``): a boolean, not a path."""


def _present_not_false(type_name: str, name: str) -> Extractor:
    """``T.x.exists() and T.x != false`` for a top-level element ``x``, with fhirpathpy's values.

    ``T.x`` is the first of the element's choice types (in the order of fhirpathpy's R4 model) that the resource
    has, its value and its JSON ``_x`` (id, extensions) each an item. Without items ``exists()`` is false and so
    is the ``and`` (FHIRPath N1 §6.5.1); with items ``!=`` is the negated equality of §6.1.1: false only for the
    one item ``false``.
    """
    choices = fhirpath_models["r4"]["choiceTypePaths"].get(f"{type_name}.{name}")
    keys = tuple(name + choice for choice in choices) if choices else (name,)

    def extract(focus: Any, _resource: dict[str, Any]) -> list[Any]:
        if not isinstance(focus, dict) or focus.get("resourceType") != type_name:
            return [False]
        for key in keys:
            value, extension = focus.get(key), focus.get("_" + key)
            if value is not None or extension is not None:
                items = _items(value) + _items(extension)
                return [bool(items) and items != [False]]
        return [False]

    return extract


def _items(value: Any) -> list[Any]:
    """A JSON element as a FHIRPath collection (N1 §4): an array's items, or the one value."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


@cache
def compile_expression(expression: str, *, relative: bool = False) -> tuple[Extractor, bool]:
    """Compile an expression; the flag says whether it compiled to a direct walk (else fhirpathpy runs it).

    ``relative`` expressions (composite components) start at the focus instead of naming a type.
    """
    flag = _PRESENT_NOT_FALSE.match(expression.strip()) if not relative else None
    if flag is not None:
        return _present_not_false(flag["type"], flag["name"]), True
    try:
        step = _Parser(expression, relative=relative).parse()
    except (Unsupported, ValueError):
        return _fhirpath_extractor(fhirpath_form(expression)), False
    return (lambda focus, resource: step([focus], resource)), True


_ROOT = re.compile(r"^\(?(?P<type>[A-Z][A-Za-z]*)\.(?P<name>[a-z][A-Za-z0-9]*)(?P<rest>.*)$")
_ROOT_TYPE = re.compile(r"^\)?(?:\s+as\s+|\.as\(|\.ofType\()(?P<type>\w+)")


@cache
def root_elements(expression: str) -> frozenset[str] | None:
    """The keys of a resource of which one must be present for the compiled walk to find anything.

    None when the expression is not a compiled walk starting with ``Type.element`` in every union member.
    """
    if not compile_expression(expression)[1] or _PRESENT_NOT_FALSE.match(expression.strip()):
        return None  # a boolean has a value (false) whatever the resource lacks
    keys: set[str] = set()
    for part in _UNION.split(expression.strip()):
        match = _ROOT.match(part)
        if match is None:
            return None
        name, rest = match["name"], match["rest"]
        if rest.startswith("(") and name != "extension":
            return None  # a function on the resource itself
        keys.add(name)
        typed = _ROOT_TYPE.match(rest)
        if typed:
            keys.add(name + typed["type"][:1].upper() + typed["type"][1:])
        if name in _choice_names():
            keys.update(name + suffix for suffix in _TYPE_SUFFIXES)
    return frozenset(keys)


def extract(resource: dict[str, Any], expression: str) -> list[Any]:
    """The values of ``expression`` in ``resource`` (compiled walk or fhirpathpy)."""
    return compile_expression(expression)[0](resource, resource)


def extract_with_fhirpath(resource: dict[str, Any], expression: str) -> list[Any]:
    """The reference evaluation by fhirpathpy, used to check the compiled walks."""
    return _fhirpath_extractor(fhirpath_form(expression, resource.get("resourceType")))(resource, resource)
