"""Official R4B examples are stored and read back unchanged apart from id and meta, on both backends."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import orjson
import pytest

from tests.conftest import corpus_dir

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "r4b-examples.zip"


def inline_examples() -> list[dict]:
    """The inline examples shipped in a registry package (examples.zip: 140 examples of 137 types)."""
    examples = []
    with zipfile.ZipFile(FIXTURE) as archive:
        for name in sorted(archive.namelist()):
            for example in orjson.loads(archive.read(name)).values():
                if "value" in example:
                    examples.append(example["value"])
    return examples


def strip(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k not in ("id", "meta")}


def same_json(a: dict, b: dict) -> bool:
    # Decimal precision is part of FHIR: compare the canonical JSON text, not floats.
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_every_inline_example_round_trips(client):
    examples = inline_examples()
    assert len(examples) == 140
    assert len({e["resourceType"] for e in examples}) >= 137
    failures = []
    for example in examples:
        response = client.post(f"/fhir/{example['resourceType']}", json=example)
        if response.status_code != 201:
            failures.append((example["resourceType"], response.text[:300]))
            continue
        read = client.get(f"/fhir/{example['resourceType']}/{response.json()['id']}").json()
        meta = {k: v for k, v in read["meta"].items() if k not in ("versionId", "lastUpdated")}
        assert meta == {k: v for k, v in example.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
        if not same_json(strip(read), strip(example)):
            failures.append((example["resourceType"], "content changed"))
    assert failures == []


def corpus_examples() -> list[tuple[str, dict]]:
    path = corpus_dir() / "hl7.fhir.r4b.examples-4.3.0.tgz"
    found = []
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            if not member.isfile() or not member.name.endswith(".json") or member.name.endswith("package.json"):
                continue
            data = json.load(io.TextIOWrapper(archive.extractfile(member), encoding="utf-8"))
            if isinstance(data, dict) and "resourceType" in data:
                found.append((member.name, data))
    return found


@pytest.mark.corpus
def test_all_official_examples(client):
    """2,840 examples: the valid ones round-trip; those missing required elements are refused."""
    examples = corpus_examples()
    assert len(examples) >= 2800
    refused, changed = {}, []
    for name, example in examples:
        response = client.post(
            f"/fhir/{example['resourceType']}",
            content=orjson.dumps(example),
            headers={"Content-Type": "application/fhir+json"},
        )
        if response.status_code != 201:
            body = response.json()
            assert body["resourceType"] == "OperationOutcome"
            refused[name] = [i.get("expression", [""])[0] + ": " + i["diagnostics"] for i in body["issue"][1:]]
            continue
        read = client.get(f"/fhir/{example['resourceType']}/{response.json()['id']}").json()
        if not same_json(strip(read), strip(example)):
            changed.append(name)
    assert changed == []
    # The 13 examples of the package that lack required elements (status, SearchParameter.base).
    assert len(refused) == 13, json.dumps(refused, indent=1)[:4000]
    unexpected = {name: reasons for name, reasons in refused.items() if not all("required" in r for r in reasons)}
    assert unexpected == {}, json.dumps(unexpected, indent=1, ensure_ascii=False)[:4000]
