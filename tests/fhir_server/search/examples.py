"""The inline official R4B examples (tests/fixtures/r4b-examples.zip), shared by the search tests."""

from __future__ import annotations

import zipfile
from functools import cache
from pathlib import Path

import orjson

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "r4b-examples.zip"


@cache
def _raw() -> tuple[bytes, ...]:
    found = []
    with zipfile.ZipFile(FIXTURE) as archive:
        for name in sorted(archive.namelist()):
            for example in orjson.loads(archive.read(name)).values():
                if "value" in example:
                    found.append(orjson.dumps(example["value"]))
    return tuple(found)


def inline_examples() -> list[dict]:
    """Fresh copies of the 140 inline examples (each zip member is a JSON object of named examples)."""
    return [orjson.loads(raw) for raw in _raw()]
