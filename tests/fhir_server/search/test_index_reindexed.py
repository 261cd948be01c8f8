"""``reindexed``: the rows of an earlier state brought up to date equal the rows of the changed resource."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from bench.regional.generate import RegionalData
from fhir_server.search.index import index_rows, reindexed
from fhir_server.search.parameters import default_registry


def _sorted(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[bytes]]:
    return {
        table: sorted(orjson.dumps(row, option=orjson.OPT_SORT_KEYS) for row in found) for table, found in rows.items()
    }


def _link(resource: dict[str, Any]) -> None:
    resource["link"] = [{"other": {"reference": "Patient/golden-1"}, "type": "refer"}]


def _rename(resource: dict[str, Any]) -> None:
    resource["name"] = [{"family": "黄", "given": ["志强"]}]


def _drop_identifiers(resource: dict[str, Any]) -> None:
    resource.pop("identifier", None)


def _deceased(resource: dict[str, Any]) -> None:
    resource["deceasedBoolean"] = True


def _tag(resource: dict[str, Any]) -> None:
    resource["meta"] = {"tag": [{"system": "urn:test", "code": "amended"}]}


@pytest.mark.parametrize("change", [_link, _rename, _drop_identifiers, _deceased, _tag])
def test_rows_brought_up_to_date_equal_the_rows_of_the_changed_patient(change: Callable[[dict[str, Any]], None]):
    registry = default_registry()
    patient = RegionalData(3, seed=5).record(1).patient
    before = index_rows(registry, "Patient", patient)
    after = copy.deepcopy(patient)
    change(after)
    changed = frozenset(k for k in patient.keys() | after.keys() if patient.get(k) != after.get(k))
    assert _sorted(reindexed(registry, "Patient", after, before, changed)) == _sorted(
        index_rows(registry, "Patient", after)
    )
    assert _sorted(before) != _sorted(index_rows(registry, "Patient", after))


def test_a_change_of_an_element_no_parameter_walks_from_keeps_every_row():
    registry = default_registry()
    observation = next(r for r in RegionalData(3, seed=5).record(1).resources if r["resourceType"] == "Observation")
    before = index_rows(registry, "Observation", observation)
    after = {**observation, "comment": "复查"}  # R4 name of note: no parameter reads it
    assert _sorted(reindexed(registry, "Observation", after, before, frozenset({"comment"}))) == _sorted(before)
