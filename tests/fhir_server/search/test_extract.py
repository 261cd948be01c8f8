"""The compiled FHIRPath walks agree with fhirpathpy on every official example and every parameter."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from fhir_server.search.extract import compile_expression, extract, extract_with_fhirpath, fhirpath_form
from fhir_server.search.parameters import default_registry
from tests.fhir_server.search.examples import inline_examples

# Expressions left to fhirpathpy at index time, with the reason the compiled subset does not cover them.
FHIRPATH_ONLY = {
    "id": "the example SearchParameter shipped with the definitions (not a definition, never registered)",
    "name | alias": "an expression without a type name, evaluated on the resource as is",
    "Patient.deceased.exists() and Patient.deceased != false": "a boolean expression, not a path",
    "QuestionnaireResponse.item.where(extension('http://hl7.org/fhir/StructureDefinition/"
    "questionnaireresponse-isSubject').exists()).answer.value.ofType(Reference)": "where() on an extension test",
}


def canonical(values: list) -> str:
    # fhirpathpy reads decimals as Decimal, the JSON parser as float: compare the numbers, not their classes.
    return json.dumps(values, sort_keys=True, default=lambda v: float(v) if isinstance(v, Decimal) else str(v))


def test_compiled_walks_agree_with_fhirpathpy_on_every_example():
    registry = default_registry()
    examples = inline_examples()
    assert len(examples) == 140
    compared, disagreements, uncompiled = 0, [], set()
    for resource in examples:
        for param in registry.for_type(resource["resourceType"]).values():
            if param.type == "composite" or param.index_function:
                continue
            walk, compiled = compile_expression(param.expression)
            if not compiled:
                uncompiled.add(param.expression)
                continue
            ours = walk(resource, resource)
            reference = extract_with_fhirpath(resource, param.expression)
            compared += 1
            if canonical(ours) != canonical(reference):
                disagreements.append((resource["resourceType"], param.code, param.expression))
    assert disagreements == []
    assert compared > 2000
    assert uncompiled <= set(FHIRPATH_ONLY), uncompiled - set(FHIRPATH_ONLY)


def test_composite_components_compile_relative_to_their_focus():
    observation = {
        "resourceType": "Observation",
        "component": [
            {"code": {"text": "a"}, "valueQuantity": {"value": 1}},
            {"code": {"text": "b"}, "valueCodeableConcept": {"text": "x"}},
        ],
    }
    registry = default_registry()
    param = registry.get("Observation", "component-code-value-quantity")
    focus = extract(observation, param.expression)
    value = compile_expression(param.components[1].expression, relative=True)
    assert value[1] is True
    assert [value[0](f, observation) for f in focus] == [[{"value": 1}], []]


@pytest.mark.parametrize(
    ("official", "rewritten"),
    [
        ("(Group.characteristic.value as CodeableConcept)", "Group.characteristic.value.ofType(CodeableConcept)"),
        ("Observation.value as Quantity", "Observation.value.ofType(Quantity)"),
        ("Observation.value.as(Quantity)", "Observation.value.ofType(Quantity)"),
        ("Resource.meta.tag", "Patient.meta.tag"),
        (
            "Account.subject.where(resolve() is Patient)",
            "Account.subject.where(reference.matches('(^|/)Patient/[^/]+(/_history/[^/]+)?$'))",
        ),
    ],
)
def test_fhirpath_rewrites(official, rewritten):
    assert fhirpath_form(official, "Patient") == rewritten


def test_fallback_expressions_still_yield_values():
    patient = {"resourceType": "Patient", "deceasedDateTime": "2020-01-01"}
    assert extract(patient, "Patient.deceased.exists() and Patient.deceased != false") == [True]
    assert extract({"resourceType": "Patient"}, "Patient.deceased.exists() and Patient.deceased != false") == [False]
