"""The compiled FHIRPath walks agree with fhirpathpy on every official example and every parameter."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from fhir_server.search.extract import (
    compile_expression,
    extract,
    extract_with_fhirpath,
    fhirpath_form,
    root_elements,
)
from fhir_server.search.index import CONVERTERS, index_rows, search_hash
from fhir_server.search.parameters import default_registry
from tests.fhir_server.search.examples import inline_examples

# Expressions left to fhirpathpy at index time, with the reason the compiled subset does not cover them.
FHIRPATH_ONLY = {
    "id": "the example SearchParameter shipped with the definitions (not a definition, never registered)",
    "name | alias": "an expression without a type name, evaluated on the resource as is",
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


DECEASED = "Patient.deceased.exists() and Patient.deceased != false"


@pytest.mark.parametrize(
    "deceased",
    [
        {},
        {"deceasedBoolean": True},
        {"deceasedBoolean": False},
        {"deceasedDateTime": "2020-01-01"},
        {"deceasedDateTime": "2021-06-30T08:15:00+08:00"},
        {"deceasedDateTime": "2019"},
        {"deceasedBoolean": False, "_deceasedBoolean": {"id": "d1"}},
        {
            "deceasedBoolean": True,
            "_deceasedBoolean": {"extension": [{"url": "http://example.org/x", "valueCode": "a"}]},
        },
        {"_deceasedBoolean": {"extension": [{"url": "http://example.org/x", "valueCode": "a"}]}},
        {"deceasedDateTime": "2020-01-01", "_deceasedDateTime": {"id": "d2"}},
        {"_deceasedDateTime": {"extension": [{"url": "http://example.org/x", "valueCode": "a"}]}},
        {"deceasedBoolean": False, "deceasedDateTime": "2020"},  # not valid R4B: still the same values
        {"deceasedBoolean": [False]},
        {"deceasedBoolean": []},
        {"deceasedString": "yes"},
    ],
)
def test_deceased_compiles_to_the_values_and_rows_fhirpathpy_gives(deceased):
    registry = default_registry()
    patient = {"resourceType": "Patient", "name": [{"family": "Li"}], **deceased}
    walk, compiled = compile_expression(DECEASED)
    expected = extract_with_fhirpath(patient, DECEASED)
    assert compiled is True
    assert walk(patient, patient) == expected
    expected_rows = [
        {"param": "deceased", **row, "grp": None}
        for value in expected
        for table, row in CONVERTERS["token"](value)
        if table == "token"
    ]
    for row in expected_rows:
        row["hash_value"] = search_hash("Patient", "deceased", row["code"])
        row["hash_sys_value"] = search_hash("Patient", "deceased", row["system"], row["code"])
    rows = [row for row in index_rows(registry, "Patient", patient).get("token", []) if row["param"] == "deceased"]
    assert rows == expected_rows
    assert [row["code"] for row in rows] in (["true"], ["false"])


def test_deceased_is_indexed_whatever_the_patient_lacks():
    assert root_elements(DECEASED) is None  # false is a value: a Patient without deceased[x] has a row
    assert extract({"resourceType": "Observation"}, DECEASED) == extract_with_fhirpath(
        {"resourceType": "Observation"}, DECEASED
    )
