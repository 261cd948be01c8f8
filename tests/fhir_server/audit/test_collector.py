"""The query an audit event records for a search: ``query_text`` is exactly what ``urlencode`` gives."""

from __future__ import annotations

import random
from urllib.parse import urlencode

import orjson
import pytest

from fhir_server.audit.collector import AccessCollector, query_text


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("subject", "Patient/123"), ("_count", "10")], "subject=Patient%2F123&_count=10"),
        ([("name", "陈 建国")], "name=%E9%99%88+%E5%BB%BA%E5%9B%BD"),
        ([("date", "ge2024-01-01T00:00:00+08:00")], "date=ge2024-01-01T00%3A00%3A00%2B08%3A00"),
        ([("code", "http://loinc.org|8480-6,8462-4")], "code=http%3A%2F%2Floinc.org%7C8480-6%2C8462-4"),
        ([("_text", "a~b_c.d e&f=g%h")], "_text=a~b_c.d+e%26f%3Dg%25h"),
        ([("empty", "")], "empty="),
        ([], ""),
    ],
)
def test_query_text_quotes_as_urlencode(params: list[tuple[str, str]], expected: str) -> None:
    assert query_text(params) == expected
    assert urlencode(params) == expected


def test_query_text_matches_urlencode_on_any_text() -> None:
    rng = random.Random(20261129)
    alphabet = [chr(code) for code in range(128)] + ["é", "ü", "中", "€", "\U0001f600"]
    for _ in range(2000):
        params = [
            (
                "".join(rng.choices(alphabet, k=rng.randint(0, 6))),
                "".join(rng.choices(alphabet, k=rng.randint(0, 10))),
            )
            for _ in range(rng.randint(1, 4))
        ]
        assert query_text(params) == urlencode(params), params


def test_a_bundle_notes_parsed_entries_and_locations_and_leaves_stored_json_to_its_operation() -> None:
    collector = AccessCollector({})
    observation = {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/a"}}
    stored = b'{"resourceType":"Observation","id":"o2","subject":{"reference":"Patient/z"}}'
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"resource": orjson.Fragment(stored), "search": {"mode": "match"}},
            {"resource": observation},
            {"response": {"location": "Condition/c1/_history/1"}},
            {"resource": orjson.Fragment(stored), "response": {"location": "Patient/b/_history/2"}},
            {"resource": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "id": "p"}}]}},
            {"resource": observation, "response": {}},
        ],
    }
    collector.bundle(bundle)
    assert list(collector.resources) == ["Condition/c1", "Patient/b"]
    assert list(collector.patients) == ["Patient/a", "Patient/b", "Patient/p"]
