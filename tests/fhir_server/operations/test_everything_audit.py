"""``Patient/$everything`` notes a page's residents for the audit trail at once: the same residents, in the same
order, as noting the page's stored versions one by one."""

from __future__ import annotations

import dataclasses
import random

import orjson
import pytest

from fhir_server.audit.collector import AccessCollector
from fhir_server.operations.everything import _note_residents
from fhir_server.repository import Version


def _version(resource: dict, pk: int) -> Version:
    return Version(resource["resourceType"], resource["id"], 1, 0, "POST", orjson.dumps(resource), pk)


def _observation(oid: str, subject: str, **extra: object) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": subject}, **extra}


PLAIN = [
    {"resourceType": "Patient", "id": "p1"},
    {"resourceType": "Patient", "id": "p2"},
    *(_observation(f"o{n}", "Patient/p1") for n in range(6)),
    _observation("o6", "Patient/p2"),
    _observation("o7", "Patient/p1", performer=[{"reference": "Patient/p2"}]),
    {"resourceType": "Organization", "id": "org", "name": "ward"},
]
"""Every mention of a resident is a plain ``Patient/{id}`` reference."""

MIXED = [
    *PLAIN,
    _observation("o8", "Patient/p1/_history/2"),
    _observation("o9", "http://elsewhere.example/fhir/Patient/p4"),
    _observation("o10", "Patient/p1", note=[{"text": "Patient/p5"}]),  # a mention, no reference
    _observation("o11", "Patient/p3", focus=[{"reference": "Patient/p6"}]),  # not a compartment reference
]
"""Mentions the page-wide check cannot vouch for: entry by entry throughout."""


def _cases() -> list[tuple[list[dict], list[str]]]:
    rng = random.Random(6)
    cases = []
    for pool in (PLAIN, MIXED):
        for _ in range(60):
            page = rng.sample(pool, rng.randint(1, len(pool)))
            noted = rng.sample(["Patient/p1", "Patient/p2", "Patient/p9"], rng.randint(0, 2))
            cases.append((page, noted))
    return cases


@pytest.mark.parametrize(("page", "noted"), _cases())
def test_a_page_notes_the_residents_of_its_entries_in_order(page, noted):
    versions = [_version(resource, pk) for pk, resource in enumerate(page, start=1)]
    one_by_one, at_once = AccessCollector({}), AccessCollector({})
    for collector in (one_by_one, at_once):
        collector.patients.update(dict.fromkeys(noted))
    for version in versions:
        one_by_one.stored(version)
    _note_residents(at_once, [dataclasses.astuple(version) for version in versions])
    assert list(at_once.patients) == list(one_by_one.patients)
    assert at_once.resources == one_by_one.resources == {}


def test_a_resident_first_named_before_its_patient_is_noted_once():
    page = [_observation("o1", "Patient/p1"), {"resourceType": "Patient", "id": "p1"}, _observation("o2", "Patient/p1")]
    collector = AccessCollector({})
    _note_residents(collector, [dataclasses.astuple(_version(r, pk)) for pk, r in enumerate(page, start=1)])
    assert list(collector.patients) == ["Patient/p1"]
