"""All 2,840 examples of the official R4B examples package (shared corpus), on both backends.

Kept in its own module so the test runner can give it a worker of its own: it is the longest test.
"""

from __future__ import annotations

import io
import json
import tarfile

import orjson
import pytest

from tests.conftest import corpus_dir
from tests.fhir_server.test_examples_roundtrip import same_json, strip


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
