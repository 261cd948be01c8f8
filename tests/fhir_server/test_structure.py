"""The quick structural proof (fhir_server/structure.py) never accepts what the fhir.resources model refuses."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from bench.regional.generate import RegionalData
from fhir_server.structure import conforms
from fhir_server.validation import structural_issues
from tests.fhir_server.test_examples_corpus import corpus_examples

ODD_VALUES = [
    None,
    "",
    " x",
    "x ",
    0,
    -1,
    1.5,
    10**20,
    True,
    "true",
    "1e3",
    "2021-02-30",
    "2021-13-01",
    "2021-01-01T25:00:00Z",
    "abc",
    "http://x y",
    "\u0000",
    [],
    {},
    [None],
    [1],
    ["a"],
    {"x": 1},
]
ODD_KEYS = ["foo", "resourceType", "resource_type", "extension", "valueString", "effectiveDateTime", "id", "_status"]


def model_accepts(resource_type: str, resource: dict[str, Any]) -> bool:
    try:
        get_fhir_model_class(resource_type).model_validate(copy.deepcopy(resource))
    except Exception:  # any refusal, the model's own faults included
        return False
    return True


def w1_resources() -> list[dict[str, Any]]:
    data = RegionalData(12, seed=3, heavy=120)
    return [resource for record in data.records(range(12)) for resource in record.resources]


def mutations(document: dict[str, Any], rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Copies of ``document`` with one element deleted, replaced by an odd value, or an odd key added."""
    out = []
    for _ in range(count):
        mutated = copy.deepcopy(document)
        places: list[tuple[Any, Any]] = []
        stack: list[Any] = [mutated]
        while stack:
            node = stack.pop()
            keys = node.keys() if isinstance(node, dict) else range(len(node)) if isinstance(node, list) else ()
            for key in keys:
                places.append((node, key))
                stack.append(node[key])
        parent, key = rng.choice(places)
        roll = rng.random()
        if roll < 0.25 and isinstance(parent, dict):
            del parent[key]
        elif roll < 0.4 and isinstance(parent, dict):
            parent[rng.choice(ODD_KEYS)] = rng.choice(ODD_VALUES)
        else:
            parent[key] = rng.choice(ODD_VALUES)
        out.append(mutated)
    return out


def test_w1_resources_take_the_quick_path():
    resources = w1_resources()
    assert resources
    assert all(conforms(r["resourceType"], r) for r in resources)


def test_mutated_w1_resources_never_accepted_wrongly():
    rng = random.Random(6)
    wrong = [
        m
        for resource in w1_resources()
        for m in mutations(resource, rng, 4)
        if conforms(resource["resourceType"], m) and not model_accepts(resource["resourceType"], m)
    ]
    assert wrong == []


@pytest.mark.corpus
def test_official_examples_and_their_mutations_never_accepted_wrongly():
    rng = random.Random(6)
    examples = [example for _, example in corpus_examples()]
    assert sum(conforms(e["resourceType"], e) for e in examples) > 0.9 * len(examples)
    wrong = [
        m
        for example in examples
        for m in [example, *mutations(example, rng, 1)]
        if conforms(example["resourceType"], m) and not model_accepts(example["resourceType"], m)
    ]
    assert [m.get("id") for m in wrong] == []


GOOD = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "effectiveDateTime": "2024-05-01T08:00:00+08:00",
    "valueQuantity": {"value": 72, "unit": "/min"},
}


@pytest.mark.parametrize(
    "change",
    [
        {"status": None},
        {"code": None},
        {"effectivePeriod": {"start": "2024-05-01"}},
        {"category": [None]},
        {"note": {"text": "one note, not a list"}},
        {"code": [{"text": "a list"}]},
        {"issued": "2024-05-01"},
        {"effectiveDateTime": "2024-02-30"},
        {"valueQuantity": {"value": "seventy"}},
        {"subject": "Patient/1"},
        {"_status": {"extension": []}},
        {"status_ext": "x"},
        {"contained": [{"resourceType": "Patient"}]},
        {"code": {"text": ""}},
    ],
)
def test_refuses_what_it_cannot_prove(change):
    resource = {**GOOD, **change}
    resource = {k: v for k, v in resource.items() if v is not None}
    assert conforms("Observation", GOOD)
    assert not conforms("Observation", resource)


def test_wrong_resource_type_is_not_proven():
    assert not conforms("Patient", GOOD)
    assert not conforms("NoSuchType", {**GOOD, "resourceType": "NoSuchType"})


def test_faults_still_named_by_the_model():
    resource = {**GOOD, "effectiveDateTime": "2024-02-30", "foo": 1}
    expressions = sorted(issue.expression[0] for issue in structural_issues("Observation", resource))
    assert expressions == ["Observation.effectiveDateTime", "Observation.foo"]
