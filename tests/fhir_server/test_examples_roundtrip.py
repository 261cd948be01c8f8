"""Official R4B examples are stored and read back unchanged apart from id and meta, on both backends."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import orjson

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


# Elements the server itself manages after a write: a Subscription's status and error are set by the
# notification dispatcher (R4 Subscription: "requested" becomes "active", or "error" when the endpoint fails).
SERVER_MANAGED = {"Subscription": ("status", "error")}


def strip(resource: dict) -> dict:
    managed = SERVER_MANAGED.get(resource.get("resourceType"), ())
    return {k: v for k, v in resource.items() if k not in ("id", "meta", *managed)}


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
