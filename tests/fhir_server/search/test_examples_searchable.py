"""Generated: every official inline example is found by each of its own indexed values (both backends).

For each of the 140 examples and each token, string, reference, date and uri index row it produces, a
search built from that row's value (plus ``_id``, so that common values need not page through every match)
must return the example.
"""

from __future__ import annotations

from datetime import timedelta

from fhir_server.repository import Repository
from fhir_server.search.index import IDENTIFIER_SUFFIX, OF_TYPE, UNBOUNDED_HIGH, UNBOUNDED_LOW, index_rows
from fhir_server.search.parameters import default_registry
from fhir_server.search.query import find
from fhir_server.search.values import from_micros
from fhir_server.storage.engine import unit_of_work
from tests.fhir_server.search.examples import inline_examples

KINDS = ("token", "string", "reference", "date", "uri")


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|").replace("$", "\\$")


def instant(micros: int) -> str:
    return (from_micros(0) + timedelta(microseconds=micros)).isoformat(timespec="microseconds").replace("+00:00", "Z")


def searches(kind: str, row: dict) -> list[list[tuple[str, str]]]:
    """The query (or queries) that must find the resource owning ``row``."""
    param = row["param"]
    if kind == "token":
        if param.endswith(IDENTIFIER_SUFFIX):
            param = param.removesuffix(IDENTIFIER_SUFFIX) + ":identifier"
            if row["text"] == OF_TYPE:
                return []
        if row["text"] == OF_TYPE:
            type_code, value = row["code"].split("|", 1)
            return [[(f"{param}:of-type", f"{escape(row['system'] or '')}|{escape(type_code)}|{escape(value)}")]]
        found = []
        if row["code"] is not None:
            value = escape(row["code"]) if row["system"] is None else f"{escape(row['system'])}|{escape(row['code'])}"
            found.append([(param, value)])
        elif row["system"] is not None:
            found.append([(param, escape(row["system"]) + "|")])
        if row["text"] is not None and not param.endswith(":identifier"):
            found.append([(f"{param}:text", escape(row["text"]))])
        return found
    if kind == "string":
        return [[(param, escape(row["exact"]))], [(f"{param}:exact", escape(row["exact"]))]]
    if kind == "uri":
        return [[(param, escape(row["uri"]))], [(f"{param}:below", escape(row["uri"]))]]
    if kind == "reference":
        if row["url"] is not None:
            return [[(param, escape(row["url"]))]]
        return [[(param, f"{row['target_type']}/{escape(row['target_id'])}")], [(param, escape(row["target_id"]))]]
    query = []
    if row["low"] != UNBOUNDED_LOW:
        query.append((param, "ge" + instant(row["low"])))
    if row["high"] != UNBOUNDED_HIGH:
        query.append((param, "le" + instant(row["high"])))
    return [query]


def test_every_example_is_found_by_each_of_its_indexed_values(engine):
    registry = default_registry()
    repository = Repository(registry)
    stored = []
    with unit_of_work(engine) as conn:
        for example in inline_examples():
            example.pop("id", None)
            stored.append(repository.create(conn, example).version)  # validation is not what this tests
    assert len(stored) == 140
    failures, checked, types = [], 0, set()
    with unit_of_work(engine, write=False) as conn:
        for version in stored:
            resource = version.resource()
            for kind, rows in index_rows(registry, version.res_type, resource).items():
                if kind not in KINDS:
                    continue
                for row in rows:
                    if "$" in row["param"]:
                        continue  # composite components are searched through the composite
                    for query in searches(kind, row):
                        checked += 1
                        types.add(version.res_type)
                        params = [*query, ("_id", version.res_id)]
                        if find(conn, registry, version.res_type, params, limit=1) != [version.res_pk]:
                            failures.append((version.res_type, params))
    assert failures == []
    assert checked > 1800 and len(types) > 120
