"""Token modifiers :in, :not-in, :above and :below against stored ValueSets and CodeSystems, on both backends."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.search.terminology import Expansion, hierarchy, listed

FHIR = {"Content-Type": "application/fhir+json"}
CS = "http://example.org/fhir/CodeSystem/chronic-disease"
LOINC = "http://loinc.org"
VS = "http://example.org/fhir/ValueSet/"
GENDER = "http://hl7.org/fhir/ValueSet/administrative-gender"

CODE_SYSTEM = {
    "resourceType": "CodeSystem",
    "url": CS,
    "status": "active",
    "content": "complete",
    "hierarchyMeaning": "is-a",
    "concept": [
        {
            "code": "CVD",
            "display": "心血管疾病",
            "concept": [
                {"code": "HTN", "display": "高血压", "concept": [{"code": "HTN-1", "display": "原发性高血压"}]},
                {"code": "CHD", "display": "冠心病"},
            ],
        },
        {"code": "MET", "display": "代谢性疾病", "concept": [{"code": "DM", "display": "糖尿病"}]},
        {"code": "DM2", "display": "2型糖尿病", "property": [{"code": "subsumedBy", "valueCode": "DM"}]},
    ],
}


def _value_set(name: str, compose: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    resource = {"resourceType": "ValueSet", "url": VS + name, "status": "active", **extra}
    if compose is not None:
        resource["compose"] = compose
    return resource


VALUE_SETS = [
    _value_set(
        "genders-but-female",
        {
            "include": [{"system": "http://hl7.org/fhir/administrative-gender"}],
            "exclude": [{"system": "http://hl7.org/fhir/administrative-gender", "concept": [{"code": "female"}]}],
        },
    ),
    _value_set("all-genders", {"include": [{"system": "http://hl7.org/fhir/administrative-gender"}]}),
    _value_set(
        "chronic-but-dm", {"include": [{"system": CS}], "exclude": [{"system": CS, "concept": [{"code": "DM"}]}]}
    ),
    _value_set(
        "cardio", {"include": [{"system": CS, "filter": [{"property": "concept", "op": "is-a", "value": "CVD"}]}]}
    ),
    _value_set(
        "listed",
        {
            "include": [
                {"system": CS, "concept": [{"code": "HTN"}, {"code": "DM2"}]},
                {"system": LOINC, "concept": [{"code": "8867-4"}]},
            ]
        },
    ),
    _value_set(
        "loinc-but-heart-rate",
        {"include": [{"system": LOINC}], "exclude": [{"system": LOINC, "concept": [{"code": "8867-4"}]}]},
    ),
    _value_set(
        "expanded",
        {"include": [{"system": CS, "concept": [{"code": "CHD"}]}]},
        expansion={"timestamp": "2026-01-01T00:00:00Z", "contains": [{"system": CS, "code": "DM"}]},
    ),
    _value_set(
        "cardio-but-primary",
        {"include": [{"valueSet": [VS + "cardio"]}], "exclude": [{"system": CS, "concept": [{"code": "HTN-1"}]}]},
    ),
    _value_set("versioned", {"include": [{"system": CS, "concept": [{"code": "HTN-1"}]}]}, version="1"),
    _value_set("versioned", {"include": [{"system": CS, "concept": [{"code": "DM"}]}]}, version="2"),
    _value_set(
        "bad-filter", {"include": [{"system": CS, "filter": [{"property": "concept", "op": "regex", "value": "D.*"}]}]}
    ),
    _value_set("cycle", {"include": [{"valueSet": [VS + "cycle"]}]}),
    _value_set(
        "unknown-system-filter",
        {"include": [{"system": "urn:test:nowhere", "filter": [{"property": "concept", "op": "is-a", "value": "x"}]}]},
    ),
    _value_set(
        "large", {"include": [{"system": CS, "concept": [{"code": f"X{n}"} for n in range(150)] + [{"code": "CHD"}]}]}
    ),
]


def _create(client, resource: dict[str, Any]) -> str:  # type: ignore[no-untyped-def]
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _condition(code: str | None, subject: str) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Condition", "subject": {"reference": f"Patient/{subject}"}}
    if code:
        resource["code"] = {"coding": [{"system": CS, "code": code}]}
    return resource


def _observation(code: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": LOINC, "code": code}]}}


@pytest.fixture(scope="module")
def world(client) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    _create(client, CODE_SYSTEM)
    ids = {vs["url"].rsplit("/", 1)[1] + vs.get("version", ""): _create(client, vs) for vs in VALUE_SETS}
    woman = _create(client, {"resourceType": "Patient", "gender": "female"})
    unknown = _create(client, {"resourceType": "Patient"})
    conditions = {
        name: _create(client, _condition(code, woman if name != "none" else unknown))
        for name, code in (("htn1", "HTN-1"), ("chd", "CHD"), ("dm2", "DM2"), ("none", None), ("dm", "DM"))
    }
    observations = {code: _create(client, _observation(code)) for code in ("8867-4", "8480-6")}
    return {"vs": ids, "woman": woman, "unknown": unknown, "conditions": conditions, "observations": observations}


def _found(client, query: str) -> set[str]:  # type: ignore[no-untyped-def]
    response = client.get(f"/fhir/{query}")
    assert response.status_code == 200, response.text
    return {entry["resource"]["id"] for entry in response.json().get("entry", [])}


def _conditions(world: dict[str, Any], *names: str) -> set[str]:
    return {world["conditions"][name] for name in names}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (f"code:in={VS}cardio", ("htn1", "chd")),
        (f"code:not-in={VS}cardio", ("dm2", "none", "dm")),  # a Condition without a code is not in it
        (f"code:in={VS}listed", ("dm2",)),
        (f"code:in={VS}expanded", ("dm",)),  # expansion.contains is used when present
        (f"code:in={VS}cardio-but-primary", ("chd",)),
        (f"code:in={VS}versioned|1", ("htn1",)),
        (f"code:in={VS}versioned|2,{VS}expanded", ("dm",)),
        (f"code:in={VS}large", ("chd",)),
        (f"code:not-in={VS}large", ("htn1", "dm2", "none", "dm")),
        (f"code:below={CS}|CVD", ("htn1", "chd")),
        (f"code:below={CS}|MET", ("dm2", "dm")),  # DM2 through its subsumedBy property
        (f"code:below={CS}|HTN-1", ("htn1",)),
        (f"code:above={CS}|HTN-1", ("htn1",)),
        (f"code:above={CS}|CVD", ()),
        (f"code:above={CS}|DM2", ("dm2", "dm")),
        (f"code:in={VS}cardio&code:below={CS}|HTN", ("htn1",)),
        (f"subject:Patient.gender:in={GENDER}", ("htn1", "chd", "dm2", "dm")),
    ],
)
def test_conditions_by_terminology(client, world, query, expected) -> None:
    assert _found(client, f"Condition?{query}") == _conditions(world, *expected)


def test_literal_reference_to_a_value_set(client, world) -> None:
    assert _found(client, f"Condition?code:in=ValueSet/{world['vs']['listed']}") == _conditions(world, "dm2")
    assert _found(client, f"Observation?code:in=ValueSet/{world['vs']['listed']}") == {world["observations"]["8867-4"]}
    absolute = f"http://testserver/fhir/ValueSet/{world['vs']['cardio']}"
    assert _found(client, f"Condition?code:in={absolute}") == _conditions(world, "htn1", "chd")


def test_whole_system_include_with_exclude(client, world) -> None:
    assert _found(client, f"Observation?code:in={VS}loinc-but-heart-rate") == {world["observations"]["8480-6"]}
    assert _found(client, f"Observation?code:not-in={VS}loinc-but-heart-rate") == {world["observations"]["8867-4"]}


def test_official_value_sets_match_code_values_without_a_system(client, world) -> None:
    assert _found(client, f"Patient?gender:in={GENDER}") == {world["woman"]}
    assert _found(client, f"Patient?gender:not-in={GENDER}") == {world["unknown"]}
    observations = set(world["observations"].values())
    assert _found(client, "Observation?status:in=http://hl7.org/fhir/ValueSet/observation-status") == observations


def test_whole_system_includes_match_code_values_by_the_known_codes(client, world) -> None:
    assert _found(client, f"Patient?gender:in={VS}all-genders") == {world["woman"]}
    assert _found(client, f"Patient?gender:in={VS}genders-but-female") == set()
    assert _found(client, f"Patient?gender:not-in={VS}genders-but-female") == {world["woman"], world["unknown"]}
    assert _found(client, f"Condition?code:in={VS}chronic-but-dm") == _conditions(world, "htn1", "chd", "dm2")


def test_count_only_search_with_a_large_expansion(client, world) -> None:
    response = client.get("/fhir/Condition", params={"code:in": f"{VS}large", "_count": "0"})
    assert response.json()["total"] == 1


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("code:in=http://example.org/fhir/ValueSet/nowhere", "is not known to this server"),
        ("code:in=ValueSet/nowhere", "ValueSet/nowhere is not known"),
        ("code:in=not-a-url", "is not a ValueSet URL"),
        (f"code:in={VS}versioned", "Several ValueSet resources have the URL"),
        (f"code:in={VS}bad-filter", "filters by 'concept regex D.*'"),
        (f"code:in={VS}cycle", "includes itself"),
        (f"code:in={VS}unknown-system-filter", "urn:test:nowhere is not stored on this server"),
        ("code:below=http://snomed.info/sct|38341003", "is not stored on this server"),
        ("code:above=HTN", "is not system|code"),
        (f"code:below={CS}|NOPE", "'NOPE' is not a code of the CodeSystem"),
        ("code:in=", "has no value"),
    ],
)
def test_unsupported_terminology_requests_are_400(client, world, query, words) -> None:
    response = client.get(f"/fhir/Condition?{query}")
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert words in issue["diagnostics"]
    assert issue["expression"] == [query.split("=", 1)[0]]


def test_lenient_handling_leaves_out_an_unknown_value_set(client, world) -> None:
    query = {"code:in": f"{VS}nowhere", "subject:Patient.gender:in": f"{VS}nowhere", "code:below": f"{CS}|CHD"}
    response = client.get("/fhir/Condition", params=query, headers={"Prefer": "handling=lenient"})
    assert response.status_code == 200, response.text
    result = response.json()
    matches = [e for e in result["entry"] if e["search"]["mode"] == "match"]
    assert {e["resource"]["id"] for e in matches} == _conditions(world, "chd")
    outcome = result["entry"][-1]["resource"]
    assert len(outcome["issue"]) == 2 and all("is not known" in i["diagnostics"] for i in outcome["issue"])
    self_link = next(link["url"] for link in result["link"] if link["relation"] == "self")
    assert "code%3Abelow" in self_link and "code%3Ain" not in self_link and "gender" not in self_link


def test_modifiers_are_for_tokens_only(client, world) -> None:
    response = client.get("/fhir/Patient?birthdate:in=http://example.org/fhir/ValueSet/x")
    assert response.status_code == 400
    assert "Modifier ':in' is not supported" in response.json()["issue"][0]["diagnostics"]


# -- pure parts ---------------------------------------------------------------------------------


def test_expansion_algebra() -> None:
    whole = Expansion(systems=frozenset({"s"}), excluded=frozenset({("s", "x")}))
    some = listed([("s", "x"), ("s", "y"), ("t", "z")])
    assert not whole.has(("s", "x")) and whole.has(("s", "q"))
    assert whole.union(some).has(("s", "x")) and whole.union(some).has(("t", "z"))
    both = whole.intersection(some)
    assert both.has(("s", "y")) and not both.has(("s", "x")) and not both.has(("t", "z"))
    assert some.minus(whole).codes == frozenset({("s", "x"), ("t", "z")})
    rest = whole.minus(Expansion(systems=frozenset({"s"}), excluded=frozenset({("s", "k")})))
    assert rest.has(("s", "k")) and not rest.has(("s", "q"))


def test_hierarchy_from_nesting_and_properties() -> None:
    tree = hierarchy(CODE_SYSTEM)
    assert tree.closure("CVD", below=True) == {"CVD", "HTN", "HTN-1", "CHD"}
    assert tree.closure("DM2", below=False) == {"DM2", "DM", "MET"}
    assert tree.codes == {"CVD", "HTN", "HTN-1", "CHD", "MET", "DM", "DM2"}
