"""The profile checker on its own: each covered rule finds its fault at the right path, nothing more."""

from __future__ import annotations

import pytest

from fhir_server.operations.conformance import enumerate_value_set
from fhir_server.operations.profile_check import Profile, ProfileChecker, matches_pattern
from tests.fhir_server.operations.profiles import (
    CATEGORY,
    INTERPRETATION,
    LOINC,
    blood_pressure,
    blood_pressure_profile,
    interpretation_value_set,
)

VALUE_SETS = {"https://hie.wuzhou.gov.cn/fhir/ValueSet/test-interpretation": {INTERPRETATION: frozenset({"N", "H"})}}


def check(resource: dict, profile: dict | None = None) -> list[tuple[str, str, str]]:
    checker = ProfileChecker(Profile(profile or blood_pressure_profile()), VALUE_SETS.get)
    return [(i.severity, i.expression[0], i.diagnostics.split(": ", 1)[1]) for i in checker.check(resource)]


def errors(resource: dict, profile: dict | None = None) -> list[tuple[str, str]]:
    return [(path, text) for severity, path, text in check(resource, profile) if severity == "error"]


def test_a_conforming_resource_has_no_issues():
    assert check(blood_pressure()) == []


def test_cardinality_min_and_max():
    resource = blood_pressure()
    del resource["subject"]
    resource["valueString"] = "120/80"
    resource["extension"] = []
    assert errors(resource) == [
        ("Observation.extension", "Observation.extension:deviceKind needs at least 1 value(s), found 0"),
        ("Observation.subject", "Observation.subject needs at least 1 value(s), found 0"),
        ("Observation.value[x]", "Observation.value[x] allows at most 0 value(s), found 1"),
    ]


def test_fixed_and_pattern_values():
    resource = blood_pressure()
    resource["status"] = "preliminary"
    resource["code"]["coding"][0]["code"] = "55284-4"
    found = errors(resource)
    assert ("Observation.status", "the value must be exactly 'final'") in found
    assert any(path == "Observation.code" and "must match the pattern" in text for path, text in found)
    assert len(found) == 2


def test_reference_targets():
    resource = blood_pressure("Group/g1")
    assert errors(resource) == [("Observation.subject", "a reference to Group is not allowed (only Patient)")]
    assert errors(blood_pressure("https://other.example/fhir/Patient/9/_history/2")) == []


def test_required_binding_with_a_value_set():
    resource = blood_pressure()
    resource["interpretation"][0]["coding"][0]["code"] = "X"
    assert errors(resource) == [
        (
            "Observation.interpretation[0]",
            "no coding is in the required value set https://hie.wuzhou.gov.cn/fhir/ValueSet/test-interpretation",
        )
    ]


def test_a_binding_to_a_value_set_that_cannot_be_expanded_is_reported_not_failed():
    checker = ProfileChecker(Profile(blood_pressure_profile()), lambda url: None)
    issues = checker.check(blood_pressure())
    assert [(i.severity, i.code) for i in issues] == [("information", "not-supported")]


def test_invariants_error_and_warning():
    resource = blood_pressure(systolic=310)
    del resource["effectiveDateTime"]
    del resource["note"]
    assert check(resource) == [
        ("error", "Observation", "invariant bp-1 fails: needs a time"),
        ("warning", "Observation", "invariant bp-2 fails: has a note"),
        ("error", "Observation.component[0].valueQuantity", "invariant systolic-1 fails: a plausible pressure"),
    ]


def test_an_invariant_that_cannot_be_evaluated_is_a_warning():
    profile = blood_pressure_profile()
    profile["differential"]["element"][0]["constraint"] = [
        {"key": "x-1", "severity": "error", "human": "x", "expression": "subject.resolve().active"}
    ]
    [(severity, path, text)] = check(blood_pressure(), profile)
    assert (severity, path) == ("warning", "Observation")
    assert text.startswith("invariant x-1 could not be evaluated")


def test_pattern_slicing_assigns_and_counts_slices():
    resource = blood_pressure()
    resource["category"] = [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}]
    assert errors(resource) == [
        ("Observation.category", "Observation.category:VSCat needs at least 1 value(s), found 0")
    ]
    resource["category"] = [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}] * 2
    assert errors(resource) == [
        ("Observation.category", "Observation.category:VSCat allows at most 1 value(s), found 2")
    ]


def test_closed_slicing_and_rules_inside_slices():
    resource = blood_pressure()
    resource["component"][1]["code"]["coding"][0]["code"] = "8867-4"
    resource["component"][0]["valueQuantity"]["code"] = "kPa"
    assert errors(resource) == [
        ("Observation.component[1]", "the item matches none of the slices of closed Observation.component"),
        ("Observation.component[0].valueQuantity.code", "the value must be exactly 'mm[Hg]'"),
        ("Observation.component", "Observation.component:diastolic needs at least 1 value(s), found 0"),
    ]


def test_choice_types_are_restricted():
    resource = blood_pressure()
    resource["component"][0] = {"code": resource["component"][0]["code"], "valueString": "128"}
    assert errors(resource) == [
        ("Observation.component[0].valueString", "type string is not allowed here (allowed: Quantity)")
    ]


def test_extension_slices_match_by_url():
    resource = blood_pressure()
    resource["extension"] = [{"url": "https://other.example/ext", "valueString": "x"}]
    assert errors(resource) == [
        ("Observation.extension", "Observation.extension:deviceKind needs at least 1 value(s), found 0")
    ]


def test_unsupported_discriminators_are_warned_about_and_skip_the_slicing():
    profile = blood_pressure_profile()
    for element in profile["differential"]["element"]:
        if element["id"] == "Observation.component":
            element["slicing"]["discriminator"] = [{"type": "type", "path": "value"}]
    resource = blood_pressure()
    resource["component"] = resource["component"][:1] * 2
    issues = check(resource, profile)
    assert [(severity, path) for severity, path, _ in issues] == [("warning", "Observation.component")]
    assert "discriminator type 'value' is not checked" in issues[0][2]


def test_the_snapshot_is_preferred_and_missing_parents_are_implied():
    snapshot = {
        "element": [
            {"id": "Observation", "path": "Observation"},
            {"id": "Observation.category:VSCat", "path": "Observation.category", "sliceName": "VSCat", "min": 1},
        ]
    }
    profile = {**blood_pressure_profile(), "snapshot": snapshot}
    resource = blood_pressure()
    resource["status"] = "preliminary"  # only the differential fixes the status
    assert errors(resource, profile) == []
    issues = check(resource | {"category": [{"text": "x"}]}, profile)
    assert [(s, p) for s, p, _ in issues] == [("warning", "Observation.category")]  # no slicing declared


def test_a_profile_of_another_type():
    assert errors({"resourceType": "Patient"}) == [("Patient", "the profile is for Observation, not Patient")]


def test_primitive_extensions_count_as_present():
    profile = {
        **blood_pressure_profile(),
        "differential": {"element": [{"id": "Observation.issued", "path": "Observation.issued", "min": 1}]},
    }
    resource = blood_pressure() | {"_issued": {"extension": [{"url": "urn:x", "valueCode": "masked"}]}}
    assert errors(resource, profile) == []
    assert len(errors(blood_pressure(), profile)) == 1


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ({"coding": [{"code": "a"}]}, {"coding": [{"code": "b"}, {"code": "a", "system": "s"}]}, True),
        ({"coding": [{"code": "a"}]}, {"coding": [{"code": "b"}]}, False),
        ({"text": "x"}, {"coding": []}, False),
        ("a", "a", True),
        ({"a": 1}, [{"a": 2}, {"a": 1, "b": 2}], True),
    ],
)
def test_matches_pattern(pattern, value, expected):
    assert matches_pattern(pattern, value) is expected


def test_enumerating_value_sets():
    assert enumerate_value_set(interpretation_value_set()) == {INTERPRETATION: frozenset({"N", "H"})}
    expansion = {"contains": [{"system": LOINC, "code": "1", "contains": [{"system": LOINC, "code": "2"}]}]}
    assert enumerate_value_set({"expansion": expansion}) == {LOINC: frozenset({"1", "2"})}
    compose = {
        "include": [{"system": LOINC, "concept": [{"code": "1"}, {"code": "2"}]}],
        "exclude": [{"system": LOINC, "concept": [{"code": "2"}]}],
    }
    assert enumerate_value_set({"compose": compose}) == {LOINC: frozenset({"1"})}
    assert enumerate_value_set({"compose": {"include": [{"system": LOINC}]}}) is None
    filtered = {"include": [{"system": LOINC, "filter": [{"property": "x", "op": "=", "value": "y"}]}]}
    assert enumerate_value_set({"compose": filtered}) is None
    assert enumerate_value_set({}) is None


def _core_style_profile() -> dict:
    """Elements as the official vital-signs profiles write them: value discriminators through reslices."""
    component = "Observation.component"
    elements = [
        {
            "id": "Observation",
            "path": "Observation",
            "constraint": [
                {
                    "key": "ele-1",
                    "severity": "error",
                    "human": "core",
                    "expression": "hasValue() or (children().count() > id.count())",
                    "source": "http://hl7.org/fhir/StructureDefinition/Element",
                },
                {
                    "key": "vs-2",
                    "severity": "error",
                    "human": "a value or its components",
                    "expression": "component.exists() or value.exists()",
                    "source": "http://hl7.org/fhir/StructureDefinition/vitalsigns",
                },
            ],
        },
        {
            "id": component,
            "path": component,
            "slicing": {
                "discriminator": [
                    {"type": "value", "path": "code.coding.code"},
                    {"type": "value", "path": "code.coding.system"},
                ],
                "rules": "open",
            },
        },
        {"id": f"{component}:sys", "path": component, "sliceName": "sys", "min": 1, "max": "1"},
        {
            "id": f"{component}:sys.code.coding",
            "path": f"{component}.code.coding",
            "slicing": {"discriminator": [{"type": "value", "path": "code"}], "rules": "open"},
        },
        {"id": f"{component}:sys.code.coding:c", "path": f"{component}.code.coding", "sliceName": "c", "min": 1},
        {"id": f"{component}:sys.code.coding:c.system", "path": f"{component}.code.coding.system", "fixedUri": LOINC},
        {"id": f"{component}:sys.code.coding:c.code", "path": f"{component}.code.coding.code", "fixedCode": "8480-6"},
        {"id": f"{component}:sys.value[x]", "path": f"{component}.value[x]", "type": [{"code": "Quantity"}]},
    ]
    return {
        **blood_pressure_profile(),
        "url": "http://hl7.org/fhir/StructureDefinition/test-bp",
        "snapshot": {"element": elements},
    }


def test_value_discriminators_through_reslices_and_core_profile_constraints():
    profile = _core_style_profile()
    assert check(blood_pressure(), profile) == []
    resource = blood_pressure()
    resource["component"][0]["code"]["coding"][0]["code"] = "8867-4"
    assert errors(resource, profile) == [
        ("Observation.component", "Observation.component:sys needs at least 1 value(s), found 0")
    ]
    del resource["component"]
    assert errors(resource, profile)[0] == ("Observation", "invariant vs-2 fails: a value or its components")
