"""The compiled indexers give the same rows as walking every parameter of the type, and ``fold`` the same text.

``reference_rows`` is the plain definition: every parameter's expression evaluated, its values converted, duplicate
rows dropped. ``index_rows`` compiles each type's parameters once, skips walks whose first element is absent and
skips NFKD work on text that cannot change: neither may change a row.
"""

from __future__ import annotations

import copy
import sys
import tarfile
import unicodedata
from typing import Any

import orjson
import pytest

from bench.regional.generate import RegionalData
from fhir_server.search import pinyin
from fhir_server.search.extract import compile_expression, extract, root_elements
from fhir_server.search.index import CONVERTERS, IDENTIFIER_SUFFIX, index_rows, search_hash
from fhir_server.search.parameters import Registry, default_registry
from fhir_server.search.values import fold
from tests.conftest import corpus_dir
from tests.fhir_server.search.examples import inline_examples


def reference_fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def reference_rows(registry: Registry, resource_type: str, resource: dict[str, Any]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    seen: set[tuple] = set()

    def emit(table: str, param: str, row: dict, group: int | None = None) -> None:
        full = {"param": param, **row}
        if table != "coords":
            full["grp"] = group
        if table == "token":
            code = full["code"]
            full["hash_value"] = None if code is None else search_hash(resource_type, param, code)
            full["hash_sys_value"] = None if code is None else search_hash(resource_type, param, full["system"], code)
        if table == "string":
            full["hash_prefix"] = search_hash(resource_type, param, full["norm"][:1])
        key = (table, *sorted(full.items()))
        if key not in seen:
            seen.add(key)
            rows.setdefault(table, []).append(full)

    for param in registry.for_type(resource_type).values():
        if param.code in ("_id", "_lastUpdated"):
            continue
        values = extract(resource, param.expression)
        if param.type == "composite":
            for group, focus in enumerate(values):
                parts = []
                for component in param.components:
                    convert = CONVERTERS.get(component.type)
                    walk = compile_expression(component.expression, relative=True)[0]
                    found = walk(focus, resource) if convert else []
                    parts.append([(t, r) for v in found for t, r in convert(v) if t == component.type])  # type: ignore[misc]
                if all(parts):
                    for position, found_rows in enumerate(parts):
                        for table, row in found_rows:
                            emit(table, f"{param.code}${position}", row, group)
        elif param.index_function == "pinyin":
            for value in values:
                for form in pinyin.name_forms(value):
                    emit("string", param.code, {"norm": form[:2000], "exact": form[:2000]})
        elif param.type in CONVERTERS:
            for value in values:
                for table, row in CONVERTERS[param.type](value):
                    own = table in (param.type, "coords")
                    emit(table, param.code if own else param.code + IDENTIFIER_SUFFIX, row)
    return rows


def canonical(rows: dict[str, list[dict]]) -> dict[str, list[bytes]]:
    return {table: [orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in found] for table, found in rows.items()}


def corpus_examples() -> list[dict[str, Any]]:
    """Every resource of the official R4B example package in the shared corpus."""
    found = []
    with tarfile.open(corpus_dir() / "hl7.fhir.r4b.examples-4.3.0.tgz") as archive:
        for member in archive.getmembers():
            if not (member.isfile() and member.name.endswith(".json")):
                continue
            try:
                resource = orjson.loads(archive.extractfile(member).read())  # type: ignore[union-attr]
            except orjson.JSONDecodeError:
                continue
            if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
                found.append(resource)
    return found


def assert_same_rows(resources: list[dict[str, Any]]) -> None:
    registry = default_registry()
    differ = []
    for resource in resources:
        res_type = resource["resourceType"]
        ours = canonical(index_rows(registry, res_type, copy.deepcopy(resource)))
        expected = canonical(reference_rows(registry, res_type, copy.deepcopy(resource)))
        if ours != expected:
            differ.append(f"{res_type}/{resource.get('id')}")
    assert differ == []


def test_rows_of_the_inline_examples_and_generated_residents_are_unchanged():
    residents = RegionalData(30, seed=3)
    generated = [r for record in residents.records(range(30)) for r in record.resources]
    assert {r["resourceType"] for r in generated} >= {"Patient", "Observation", "Encounter", "Claim"}
    assert_same_rows(inline_examples() + generated)


def test_rows_of_every_corpus_example_are_unchanged():
    examples = corpus_examples()
    assert len(examples) > 2000
    assert_same_rows(examples)


def test_walks_are_skipped_only_when_their_first_element_is_absent():
    registry = default_registry()
    observation = {"resourceType": "Observation", "valueQuantity": {"value": 1}, "component": [{"code": {}}]}
    assert root_elements("Observation.value") >= {"valueQuantity", "valueString"}
    assert root_elements("(Observation.component.value as Quantity)") == {"component"}
    assert root_elements("Observation | Observation.component") is None  # the resource itself is a value
    assert root_elements("Patient.deceased.exists() and Patient.deceased != false") is None  # false without it
    rows = index_rows(registry, "Observation", observation)
    assert [r["param"] for r in rows["quantity"]] == ["combo-value-quantity", "value-quantity"]


@pytest.mark.parametrize(
    "text",
    [
        "Zhang San ",
        "  ÉLODIE Brûlée",
        "张三 广西壮族自治区梧州市",
        "Ｗｕｚｈｏｕ",
        "ﬁ Straße",
        "e\u0301",
        "か\u3099",
        "Ǆ",
        "",
    ],
)
def test_fold_is_nfkd_without_marks_casefolded(text: str):
    assert fold(text) == reference_fold(text)


def test_fold_agrees_with_its_definition_on_every_character_that_has_a_mark_or_a_decomposition():
    # Planes 0, 1 and 14 hold every combining mark; plane 2 adds the compatibility ideographs (U+2F800–U+2FA1F).
    planes = [*range(0xD800), *range(0xE000, 0x20000), *range(0x2F800, 0x2FA20), *range(0xE0000, 0xE1000)]
    assert max(c for c in range(sys.maxunicode + 1) if unicodedata.combining(chr(c))) < 0x20000
    differ = [c for c in planes if fold(chr(c)) != reference_fold(chr(c))]
    assert differ == []
