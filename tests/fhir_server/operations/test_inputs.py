"""Checking operation inputs against their declarations: every bad input is a 400 naming the parameter."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fhir_server.errors import FhirError, http_status
from fhir_server.operations import Operation, read_inputs


def _operation(**flags: bool) -> Operation:
    declaration = {
        "id": "Resource-test",
        "name": "Test",
        "code": "test",
        "resource": ["Resource"],
        "system": False,
        "type": True,
        "instance": True,
        "affectsState": False,
        "parameter": [
            {"name": "count", "use": "in", "min": 0, "max": "1", "type": "positiveInt"},
            {"name": "flag", "use": "in", "min": 0, "max": "1", "type": "boolean"},
            {"name": "when", "use": "in", "min": 0, "max": "1", "type": "dateTime"},
            {"name": "ratio", "use": "in", "min": 0, "max": "1", "type": "decimal"},
            {"name": "code", "use": "in", "min": 1, "max": "2", "type": "code"},
            {"name": "meta", "use": "in", "min": 0, "max": "1", "type": "Meta"},
            {"name": "resource", "use": "in", "min": 0, "max": "1", "type": "Resource"},
            {"name": "patient", "use": "in", "min": 0, "max": "1", "type": "Patient"},
            {"name": "return", "use": "out", "min": 1, "max": "1", "type": "Bundle"},
        ],
    }
    return Operation(declaration, lambda call, conn: {}, **flags)


def _error(query: list[tuple[str, str]], body: dict | None = None, **flags: bool) -> FhirError:
    with pytest.raises(FhirError) as raised:
        read_inputs(_operation(**flags), query, body)
    assert http_status(raised.value) == 400
    return raised.value


def _parameters(*entries: dict) -> dict:
    return {"resourceType": "Parameters", "parameter": list(entries)}


def test_query_values_are_typed():
    inputs = read_inputs(
        _operation(),
        [("count", "5"), ("flag", "true"), ("when", "2024-05-01T08:00:00 08:00"), ("ratio", "0.5"), ("code", "a")],
        None,
    )
    assert inputs.values == {
        "count": [5],
        "flag": [True],
        "when": ["2024-05-01T08:00:00+08:00"],
        "ratio": [Decimal("0.5")],
        "code": ["a"],
    }


def test_body_values_are_typed_and_merge_with_the_query():
    meta = {"tag": [{"system": "urn:s", "code": "t"}]}
    body = _parameters(
        {"name": "count", "valuePositiveInt": 3},
        {"name": "flag", "valueBoolean": False},
        {"name": "meta", "valueMeta": meta},
        {"name": "patient", "resource": {"resourceType": "Patient"}},
    )
    inputs = read_inputs(_operation(), [("code", "a"), ("_format", "json"), ("_pretty", "true")], body)
    assert inputs.values["count"] == [3]
    assert inputs.values["flag"] == [False]
    assert inputs.values["meta"] == [meta]
    assert inputs.values["patient"] == [{"resourceType": "Patient"}]


def test_a_resource_body_binds_to_the_one_resource_parameter():
    declaration = {
        **_operation().declaration,
        "parameter": [{"name": "resource", "use": "in", "min": 1, "max": "1", "type": "Resource"}],
    }
    inputs = read_inputs(Operation(declaration, lambda call, conn: {}), [], {"resourceType": "Observation"})
    assert inputs.values == {"resource": [{"resourceType": "Observation"}]}


@pytest.mark.parametrize(
    ("query", "name", "words"),
    [
        ([("code", "a"), ("bogus", "1")], "bogus", "Unknown parameter 'bogus'"),
        ([("code", "a"), ("return", "x")], "return", "Unknown parameter 'return'"),
        ([("code", "a"), ("_cursor", "abc")], "_cursor", "Unknown parameter '_cursor'"),
        ([], "code", "needs the parameter 'code'"),
        ([("code", "a"), ("code", "b"), ("code", "c")], "code", "at most 2 time(s), not 3"),
        ([("code", "a"), ("count", "0")], "count", "must be a positiveInt, not '0'"),
        ([("code", "a"), ("count", "-1")], "count", "must be a positiveInt"),
        ([("code", "a"), ("count", "99999999999")], "count", "must be a positiveInt"),
        ([("code", "a"), ("flag", "yes")], "flag", "must be a boolean"),
        ([("code", "a"), ("when", "yesterday")], "when", "must be a dateTime"),
        ([("code", "a"), ("ratio", "1,5")], "ratio", "must be a decimal"),
        ([("code", "a b  c")], "code", "must be a code"),
        ([("code", "a"), ("meta", "x")], "meta", "is a Meta; send it in a POST Parameters body"),
        ([("code", "a"), ("resource", "x")], "resource", "is a Resource; send it in a POST Parameters body"),
    ],
)
def test_bad_query_inputs(query, name, words):
    error = _error(query)
    assert error.expression == (name,)
    assert words in error.diagnostics


@pytest.mark.parametrize(
    ("entry", "name", "words"),
    [
        ({"name": "count", "valueString": "3"}, "count", "send it as valuePositiveInt, not valueString"),
        ({"name": "count", "valuePositiveInt": "3"}, "count", "must be a positiveInt"),
        ({"name": "count", "valuePositiveInt": 1.5}, "count", "must be a positiveInt"),
        ({"name": "flag", "valueBoolean": "true"}, "flag", "must be a boolean"),
        ({"name": "meta", "valueMeta": {"tag": "not a list"}}, "meta", "is not a valid Meta"),
        ({"name": "meta", "valueMeta": "x"}, "meta", "must be a JSON object"),
        ({"name": "meta", "valueCoding": {"code": "x"}}, "meta", "send it as valueMeta"),
        ({"name": "patient", "resource": {"resourceType": "Observation"}}, "patient", "must be a Patient"),
        ({"name": "patient", "valueString": "x"}, "patient", "is a resource"),
        ({"name": "resource", "resource": ["not", "a", "resource"]}, "resource", "must be a resource"),
        ({"name": "unknown", "valueString": "x"}, "unknown", "Unknown parameter 'unknown'"),
    ],
)
def test_bad_body_inputs(entry, name, words):
    error = _error([("code", "a")], _parameters(entry))
    assert error.expression == (name,)
    assert words in error.diagnostics


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"resourceType": "Parameters", "parameter": {"name": "code"}}, "must be an array"),
        ({"resourceType": "Parameters", "parameter": ["code"]}, "must be an object with a name"),
        ({"resourceType": "Parameters", "parameter": [{"valueCode": "a"}]}, "must be an object with a name"),
        ({"resourceType": "Parameters", "parameter": [{"name": "code"}]}, "exactly one of value[x]"),
        (
            {"resourceType": "Parameters", "parameter": [{"name": "code", "valueCode": "a", "valueString": "b"}]},
            "exactly one of value[x]",
        ),
        ({"resourceType": "Parameters", "bogus": 1}, "Unknown element(s) of Parameters: bogus"),
    ],
)
def test_malformed_parameters_bodies(body, words):
    assert words in _error([("code", "a")], body).diagnostics


def test_a_body_that_is_neither_parameters_nor_the_one_resource_is_refused():
    assert "must be a Parameters resource" in _error([("code", "a")], {"resourceType": "Patient"}).diagnostics


def test_search_parameters_and_the_cursor_pass_through_when_declared():
    inputs = read_inputs(
        _operation(accepts_search=True, paged=True),
        [("code", "a"), ("category", "vital-signs"), ("_cursor", "xyz")],
        _parameters({"name": "date", "valueString": "ge2024"}, {"name": "flagged", "valueBoolean": True}),
    )
    assert inputs.search == [("category", "vital-signs"), ("date", "ge2024"), ("flagged", "true")]
    assert inputs.cursor == "xyz"
