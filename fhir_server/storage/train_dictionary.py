"""Train the body compression dictionary (Zstandard, RFC 8878 §5) from sample resources.

    python -m fhir_server.storage.train_dictionary --out bodies-NNNNN.zdict --dict-id NNNNN SOURCE[=COUNT]...

Each SOURCE is an NDJSON file, a JSON file (a resource or a Bundle, whose entries count) or a folder of
them. Samples get an id and ``meta`` as the server stores them; COUNT of them (``--per-source`` when not
given) are drawn at random from each source, so the mix is chosen, not whatever a source happens to hold.

Shipping a new dictionary: a new id (private range, 32768 and up), a new file next to ``codec.py``,
registered in ``codec._DICTIONARIES``; old files stay for the rows that name them. The shipped
``bodies-32769.zdict`` was trained on 5,000 resources of ``python -m bench.regional.generate --residents 300
--seed 7``, 3,000 of a Synthea bulk export, 2,500 of Synthea transaction Bundles and 2,500 of the R4B examples.
"""

from __future__ import annotations

import argparse
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import zstandard

__all__ = ["main", "samples_of", "train"]

DICTIONARY_SIZE = 64 * 1024


def _stamped(resource: dict[str, Any]) -> bytes:
    resource = {**resource, "id": resource.get("id") or str(uuid.uuid4())}
    meta = {**(resource.get("meta") or {}), "versionId": "1", "lastUpdated": "2026-01-01T08:00:00.000+00:00"}
    resource["meta"] = meta
    return orjson.dumps(resource)


def _resources(document: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(document, dict) or "resourceType" not in document:
        return
    if document["resourceType"] == "Bundle":
        for entry in document.get("entry") or []:
            if isinstance(entry.get("resource"), dict):
                yield entry["resource"]
    else:
        yield document


def samples_of(source: Path) -> list[bytes]:
    """Stored-form bodies of every resource in an NDJSON or JSON file, or in a folder of them."""
    files = sorted(p for p in source.rglob("*") if p.suffix in (".ndjson", ".json")) if source.is_dir() else [source]
    found: list[bytes] = []
    for path in files:
        try:
            if path.suffix == ".ndjson":
                documents = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
            else:
                documents = [orjson.loads(path.read_bytes())]
        except orjson.JSONDecodeError:
            continue
        found += [_stamped(r) for document in documents for r in _resources(document)]
    return found


def train(samples: list[bytes], dict_id: int, size: int = DICTIONARY_SIZE) -> bytes:
    """A Zstandard dictionary of ``size`` bytes with the given id."""
    return zstandard.train_dictionary(size, samples, dict_id=dict_id, level=3).as_bytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", metavar="SOURCE[=COUNT]")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dict-id", type=int, required=True)
    parser.add_argument("--per-source", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    samples: list[bytes] = []
    for spec in args.sources:
        source, _, count = spec.partition("=")
        found = samples_of(Path(source))
        drawn = rng.sample(found, min(int(count or args.per_source), len(found)))
        samples += drawn
        print(f"{source}: {len(drawn)} of {len(found)} resources")
    args.out.write_bytes(train(samples, args.dict_id))
    print(f"{args.out}: {DICTIONARY_SIZE} bytes from {len(samples)} samples, dictionary id {args.dict_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
