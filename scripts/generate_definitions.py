"""Derive the server's compact R4B definition tables from the official packages.

Reads the npm package ``hl7.fhir.r4b.core@4.3.0`` (StructureDefinitions, ValueSets, CodeSystems,
SearchParameters, CompartmentDefinitions; CC0) and writes ``fhir_server/definitions/r4b.json``.
Also copies the one-example-per-type ``examples.zip`` from the ``fhirstarter`` wheel into
``tests/fixtures``. Both sources are fetched with the ordinary package clients (``npm pack``,
``pip download``) unless ``--core-tgz`` / ``--fhirstarter-wheel`` point at local copies.

    python scripts/generate_definitions.py
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fhir_server" / "definitions" / "r4b.json"
EXAMPLES_OUT = ROOT / "tests" / "fixtures" / "r4b-examples.zip"
CORE_PACKAGE = "hl7.fhir.r4b.core@4.3.0"
FHIRSTARTER = "fhirstarter==4.2.0"
EXAMPLES_IN_WHEEL = "fhirstarter/fhir_specification/sequences/R4B/examples.zip"
FHIRPATH_SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."


def fetch_core(workdir: Path) -> Path:
    subprocess.run(["npm", "pack", CORE_PACKAGE, "--silent"], cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    return next(workdir.glob("hl7.fhir.r4b.core-*.tgz"))


def fetch_fhirstarter(workdir: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(workdir), FHIRSTARTER],
        check=True,
    )
    return next(workdir.glob("fhirstarter-*.whl"))


def read_package(tgz: Path) -> dict[str, list[dict]]:
    """Group the package's JSON resources by resourceType."""
    by_type: dict[str, list[dict]] = {}
    with tarfile.open(tgz) as tar:
        for member in tar.getmembers():
            if not member.name.endswith(".json") or "/" in member.name[len("package/") :]:
                continue
            data = json.load(tar.extractfile(member))
            if isinstance(data, dict) and "resourceType" in data:
                by_type.setdefault(data["resourceType"], []).append(data)
    return by_type


def expand_value_sets(value_sets: list[dict], code_systems: list[dict]) -> dict[str, dict[str, list[str]]]:
    """Expand each value set that is enumerable from the package into {system: [codes]}."""
    cs_by_url = {cs["url"]: cs for cs in code_systems if cs.get("content") == "complete"}
    vs_by_url = {vs["url"]: vs for vs in value_sets}

    def all_codes(concepts: list[dict]) -> list[str]:
        codes: list[str] = []
        for concept in concepts:
            codes.append(concept["code"])
            codes.extend(all_codes(concept.get("concept", [])))
        return codes

    def expand(url: str, seen: frozenset[str]) -> dict[str, set[str]] | None:
        vs = vs_by_url.get(url)
        if vs is None or url in seen:
            return None
        result: dict[str, set[str]] = {}
        compose = vs.get("compose", {})
        for include in compose.get("include", []):
            if "filter" in include:
                return None
            for nested in include.get("valueSet", []):
                sub = expand(nested.split("|")[0], seen | {url})
                if sub is None:
                    return None
                for system, codes in sub.items():
                    result.setdefault(system, set()).update(codes)
            system = include.get("system")
            if system is None:
                continue
            if "concept" in include:
                result.setdefault(system, set()).update(c["code"] for c in include["concept"])
            elif system in cs_by_url:
                result.setdefault(system, set()).update(all_codes(cs_by_url[system].get("concept", [])))
            else:
                return None
        for exclude in compose.get("exclude", []):
            if "concept" in exclude and exclude.get("system") in result:
                result[exclude["system"]] -= {c["code"] for c in exclude["concept"]}
        return result

    expanded = {}
    for url in vs_by_url:
        codes = expand(url, frozenset())
        if codes:
            expanded[url] = {system: sorted(values) for system, values in sorted(codes.items())}
    return expanded


def element_types(structure_definitions: list[dict]) -> tuple[dict, set[str], list[str]]:
    """Map every resource, complex type and backbone element to its children.

    Each child is ``[type, repeats, required_value_set_or_null, min, is_summary]``; choice elements are expanded
    (``value[x]`` → ``valueQuantity`` …) and backbone elements get their path as type name.
    """
    types: dict[str, dict[str, list]] = {}
    bindings: set[str] = set()
    resources: list[str] = []
    for sd in structure_definitions:
        if sd.get("derivation") != "specialization" or sd["kind"] not in ("resource", "complex-type"):
            continue
        if sd["kind"] == "resource" and not sd.get("abstract"):
            resources.append(sd["type"])
        for element in sd["snapshot"]["element"]:
            path: str = element["path"]
            if "." not in path:
                continue
            parent, name = path.rsplit(".", 1)
            binding = element.get("binding", {})
            value_set = None
            if binding.get("strength") == "required" and binding.get("valueSet"):
                value_set = binding["valueSet"].split("|")[0]
                bindings.add(value_set)
            repeats = element.get("max") != "1"
            minimum = element.get("min", 0)
            summary = bool(element.get("isSummary"))
            children = types.setdefault(parent, {})
            if "contentReference" in element:
                target = element["contentReference"].lstrip("#").split("#")[-1]
                children[name] = [target, repeats, value_set, minimum, summary]
                continue
            codes = [t["code"] for t in element.get("type", [])]
            for code in codes:
                code = code.removeprefix(FHIRPATH_SYSTEM_PREFIX)
                child_type = path if code in ("BackboneElement", "Element") and len(codes) == 1 else code
                child_name = name[:-3] + code[0].upper() + code[1:] if name.endswith("[x]") else name
                children[child_name] = [child_type, repeats, value_set, minimum if len(codes) == 1 else 0, summary]
    return types, bindings, sorted(resources)


def search_parameters(params: list[dict]) -> list[dict]:
    out = []
    for sp in params:
        if "base" not in sp or not sp.get("expression"):
            continue
        entry = {
            "url": sp["url"],
            "code": sp["code"],
            "base": sp["base"],
            "type": sp["type"],
            "expression": sp.get("expression"),
        }
        for key in ("target", "modifier", "comparator", "multipleOr", "multipleAnd", "chain"):
            if key in sp:
                entry[key] = sp[key]
        if "component" in sp:
            entry["component"] = [
                {"definition": c["definition"], "expression": c["expression"]} for c in sp["component"]
            ]
        out.append(entry)
    return sorted(out, key=lambda e: e["url"])


def compartments(definitions: list[dict]) -> dict[str, dict[str, list[str]]]:
    out = {}
    for cd in definitions:
        out[cd["code"]] = {r["code"]: r["param"] for r in cd.get("resource", []) if r.get("param")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core-tgz", type=Path)
    parser.add_argument("--fhirstarter-wheel", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        core = args.core_tgz or fetch_core(workdir)
        wheel = args.fhirstarter_wheel or fetch_fhirstarter(workdir)
        package = read_package(core)
        with zipfile.ZipFile(wheel) as whl:
            examples = whl.read(EXAMPLES_IN_WHEEL)

    types, bindings, resources = element_types(package["StructureDefinition"])
    value_sets = expand_value_sets(package["ValueSet"], package["CodeSystem"])
    table = {
        "fhirVersion": "4.3.0",
        "source": CORE_PACKAGE,
        "resourceTypes": resources,
        "types": types,
        "valueSets": {url: value_sets[url] for url in sorted(bindings) if url in value_sets},
        "searchParameters": search_parameters(package["SearchParameter"]),
        "compartments": compartments(package.get("CompartmentDefinition", [])),
    }
    OUT.write_text(json.dumps(table, ensure_ascii=False, separators=(",", ":"), sort_keys=True) + "\n")
    EXAMPLES_OUT.write_bytes(examples)
    with zipfile.ZipFile(io.BytesIO(examples)) as z:
        count = len(z.namelist())
    print(
        f"wrote {OUT.relative_to(ROOT)}: {len(resources)} resource types, {len(types)} element maps, "
        f"{len(table['valueSets'])} of {len(bindings)} required value sets expanded, "
        f"{len(table['searchParameters'])} search parameters; {count} examples to {EXAMPLES_OUT.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
