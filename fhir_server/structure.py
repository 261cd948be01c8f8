"""A quick proof that a resource is R4B-structurally valid, read from the fhir.resources models themselves.

:func:`conforms` walks the JSON once with a plan compiled per model class: every key is a known element of its
type, lists and single values where the model has them, complex values are objects, primitives pass the model
field's own pydantic type (same pattern, range and date checks), required elements and choice groups (R4B JSON
format, choice elements ``[x]``) hold. It answers True only for documents the full model validation accepts;
anything it does not cover (nulls, empty objects, ``_element`` extensions, contained resources, unusual keys)
answers False, and the caller runs the full validation, which names the faults.
"""

from __future__ import annotations

import threading
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase, FhirElementOrResourceBase
from pydantic import TypeAdapter

__all__ = ["conforms"]

_STANDARD_VALIDATORS = frozenset({"reject_null_complex_elements", "validate_after_model_construction"})
"""The model validators of every generated class: nulls in lists, required primitives, choice groups (covered
here). A class with any other validator is left to the full validation."""


@dataclass
class _Plan:
    """How to check the elements of one model class; ``None`` entries of ``children`` mean "not covered"."""

    children: dict[str, tuple[bool, Any]] = field(default_factory=dict)  # key -> (is list, _Plan | TypeAdapter)
    required: tuple[str, ...] = ()
    choices: tuple[tuple[tuple[str, ...], bool], ...] = ()  # (keys of one [x] group, one of them required)
    covered: bool = True


def conforms(resource_type: str, resource: dict[str, Any]) -> bool:
    """True when the fhir.resources model of ``resource_type`` certainly accepts ``resource`` (False: unsure)."""
    if resource.get("resourceType") != resource_type:
        return False
    try:
        model = get_fhir_model_class(resource_type)
    except (KeyError, ValueError):
        return False
    with _COMPILING:  # a plan is used only once it and the plans under it are complete
        plan = _plan(model)
    return _conforms(plan, resource, top=True)


def _conforms(plan: _Plan, node: Any, *, top: bool = False) -> bool:
    if not plan.covered or type(node) is not dict or not node:
        return False
    children = plan.children
    for key, value in node.items():
        spec = children.get(key)
        if spec is None:
            if top and key == "resourceType":
                continue
            return False
        many, check = spec
        if many:
            if type(value) is not list:
                return False
            for item in value:
                if not _value(check, item):
                    return False
        elif type(value) is list or not _value(check, value):
            return False
    for key in plan.required:
        if key not in node:
            return False
    for keys, required in plan.choices:
        present = sum(1 for key in keys if key in node)
        if present > 1 or (required and present == 0):
            return False
    return True


def _value(check: Any, value: Any) -> bool:
    if value is None:
        return False
    if type(check) is _Plan:
        return _conforms(check, value)
    if check is None or type(value) in (dict, list):
        return False
    try:
        check.validate_python(value)
    except Exception:
        return False
    return True


_PLANS: dict[type, _Plan] = {}
_COMPILING = threading.Lock()


def _plan(model: type[FHIRAbstractModel]) -> _Plan:
    """The plan of a model class, compiled once; registered before its children so cycles end."""
    known = _PLANS.get(model)
    if known is not None:
        return known
    plan = _PLANS[model] = _Plan()
    decorators = model.__pydantic_decorators__
    if set(decorators.model_validators) != _STANDARD_VALIDATORS or decorators.field_validators:
        plan.covered = False
        return plan
    groups: dict[str, tuple[list[str], bool]] = {}
    required = []
    for name, info in model.model_fields.items():
        if name == "fhir_comments" or name.endswith("__ext") or not info.alias or info.alias.startswith("_"):
            continue
        many, item = _unwrap(info.annotation)
        plan.children[info.alias] = (many, None if info.metadata else _checker(item))
        if info.is_required():
            required.append(info.alias)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if "one_of_many" in extra:
            group = str(extra["one_of_many"])
            keys, needed = groups.get(group, ([], False))
            groups[group] = ([*keys, info.alias], needed or extra.get("one_of_many_required") is True)
    aliases = {name: info.alias or name for name, info in model.model_fields.items()}
    for name, _ext in model.model_construct().get_required_fields():
        required.append(aliases.get(name, name))
    plan.required = tuple(dict.fromkeys(required))
    plan.choices = tuple((tuple(keys), needed) for keys, needed in groups.values())
    return plan


def _unwrap(annotation: Any) -> tuple[bool, Any]:
    """(is a list, item type) of ``Optional[List[T]]``, ``Optional[T]``, ``T | None``, ``List[T]`` or ``T``."""
    many = False
    for _ in range(3):
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return many, None
            annotation = args[0]
        elif origin is list and not many:
            many = True
            annotation = typing.get_args(annotation)[0]
        else:
            break
    return many, annotation


def _checker(item: Any) -> Any:
    """A :class:`_Plan` for a complex type, a TypeAdapter for a primitive, None when not covered."""
    if item is None:
        return None
    if isinstance(item, type) and issubclass(item, FhirBase):
        if issubclass(item, FhirElementOrResourceBase):
            return None  # Resource/Element-typed: contained resources, Bundle entries, Parameters
        return _plan(item.get_model_klass())
    origin = typing.get_origin(item)
    if origin is not typing.Annotated and item not in (str, bool, int, float):
        return None
    return _adapter(item)


@cache
def _adapter(item: Any) -> TypeAdapter:
    return TypeAdapter(item)
