"""Sample messages for the HL7 v2 adapter tests (written for them, zh-CN content) and Bundle helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from adapters.hl7v2.parse import parse_message
from adapters.hl7v2.to_fhir import map_message

MESSAGES = Path(__file__).parent / "messages"


def message_text(name: str) -> str:
    """A sample message as text, segments separated by CR as on the wire."""
    return "\r".join((MESSAGES / name).read_text(encoding="utf-8").splitlines())


def message_bytes(name: str) -> bytes:
    """A sample message encoded in the character set its MSH-18 names (GB 18030 for GB*/GBK labels)."""
    return wire_bytes(message_text(name))


def wire_bytes(text: str) -> bytes:
    """A message's text encoded as its MSH-18 says: GB 18030 for GB*/GBK labels, else UTF-8."""
    msh = text.split("\r", 1)[0].split("|")
    label = msh[17] if len(msh) > 17 else ""
    return text.encode("gb18030" if label.upper().startswith("GB") else "utf-8")


def assert_valid_bundle(bundle: dict[str, Any]) -> None:
    """Every entry validates as its R4B resource type, and the Bundle as a whole."""
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "transaction"
    for entry in bundle["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    get_fhir_model_class("Bundle").model_validate(bundle)


def resources(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    """The resources of one type in a Bundle, in entry order."""
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def entry_for(bundle: dict[str, Any], resource_type: str) -> dict[str, Any]:
    """The single entry of a resource type."""
    found = [e for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]
    assert len(found) == 1, f"expected one {resource_type}, found {len(found)}"
    return found[0]


def map_sample(name: str, *replacements: tuple[str, str]) -> dict[str, Any]:
    """Parse and map a sample message, after replacing pieces of its text (each must be present)."""
    text = message_text(name)
    for old, new in replacements:
        assert old in text, f"{old!r} is not in {name}"
        text = text.replace(old, new)
    return map_message(parse_message(wire_bytes(text)))


def wire_variant(name: str, control_id: str, *replacements: tuple[str, str]) -> bytes:
    """A sample as sent under another MSH-10, after replacing pieces of its text (each must be present)."""
    text = message_text(name)
    for old, new in replacements:
        assert old in text, f"{old!r} is not in {name}"
        text = text.replace(old, new)
    msh, rest = text.split("\r", 1)
    fields = msh.split("|")
    fields[9] = control_id
    return wire_bytes("|".join(fields) + "\r" + rest)
