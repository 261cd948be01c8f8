"""The dispatcher: every sample maps to a valid Bundle, other types and events are refused; the shared corpus."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

import adapters.hl7v2 as hl7v2
from adapters.hl7v2.ack import ack_for_error
from adapters.hl7v2.errors import Hl7v2Error, UnsupportedMessageError
from adapters.hl7v2.parse import parse_message
from adapters.hl7v2.to_fhir import SUPPORTED_EVENTS, map_message
from tests.adapters.hl7v2.samples import MESSAGES, assert_valid_bundle, message_bytes
from tests.conftest import corpus_dir

# Corpus messages of a supported type that are answered AE, each for a gap in the sample's own data.
CORPUS_CONTENT_ERRORS = {
    "ADT01-28.hl7": "PV1-19",  # an A01 without visit number, alternate visit ID or admit time
    "ADT04-23.hl7": "IN1-3",  # an A04 whose insurance segments name no insurer
}


@pytest.mark.parametrize("name", sorted(path.name for path in MESSAGES.glob("*.hl7")))
def test_every_sample_maps_to_a_valid_bundle(name: str) -> None:
    bundle = map_message(parse_message(message_bytes(name)))

    assert_valid_bundle(bundle)
    provenance = bundle["entry"][-1]["resource"]
    assert provenance["resourceType"] == "Provenance"
    assert all(full_url.startswith("urn:uuid:") for full_url in (e["fullUrl"] for e in bundle["entry"]))
    assert len(provenance["target"]) == sum(
        1 for entry in bundle["entry"][:-1] if entry["resource"]["resourceType"] != "Parameters"
    )


@pytest.mark.parametrize(
    ("message_code", "location", "code"),
    [("ORM^O01", "MSH-9.1", "200"), ("ADT^A06", "MSH-9.2", "201"), ("SIU^S26", "MSH-9.2", "201")],
)
def test_other_types_and_events_are_unsupported(message_code: str, location: str, code: str) -> None:
    text = message_bytes("adt_a01.hl7").decode().replace("ADT^A01^ADT_A01", message_code)

    with pytest.raises(UnsupportedMessageError) as caught:
        map_message(parse_message(text))

    assert caught.value.location == location
    assert caught.value.code == code
    assert caught.value.ack_code == "AR"
    assert caught.value.header is not None


def test_content_errors_carry_the_header_for_the_ack() -> None:
    text = message_bytes("adt_a01.hl7").decode().replace("|19580312|M|", "|19580312|X|")

    with pytest.raises(Hl7v2Error) as caught:
        map_message(parse_message(text))

    assert caught.value.header is not None
    assert caught.value.header.control_id == "A01-20240315-0001"


def test_supported_events() -> None:
    assert SUPPORTED_EVENTS["ADT"] == {"A01", "A02", "A03", "A04", "A05", "A08", "A11", "A13", "A28", "A31", "A40"}
    assert SUPPORTED_EVENTS["ORU"] == {"R01"}
    assert SUPPORTED_EVENTS["SIU"] == {"S12", "S13", "S14", "S15"}


@pytest.mark.corpus
def test_corpus_messages_map_or_are_refused_cleanly() -> None:
    files = sorted((corpus_dir() / "hl7v2").glob("*.hl7"))
    assert len(files) == 139

    outcomes: Counter[str] = Counter()
    problems = []
    for path in files:
        try:
            message = parse_message(path.read_bytes())
            bundle = map_message(message)
        except UnsupportedMessageError as error:
            header = error.header
            supported = header is not None and header.trigger_event in SUPPORTED_EVENTS.get(header.message_type, ())
            if supported:
                problems.append(f"{path.name}: supported type refused: {error}")
            outcomes["unsupported"] += 1
        except Hl7v2Error as error:
            if CORPUS_CONTENT_ERRORS.get(path.name) != error.location:
                problems.append(f"{path.name}: {type(error).__name__}: {error}")
            parse_message(ack_for_error(error)).require("ERR")
            outcomes["content error"] += 1
        else:
            try:
                assert_valid_bundle(bundle)
            except ValidationError as error:
                problems.append(f"{path.name}: invalid bundle: {error}")
            outcomes["mapped"] += 1

    assert not problems, "\n".join(problems)
    assert outcomes == {"mapped": 40, "content error": 2, "unsupported": 97}


def test_listener_flow_through_the_package_interface() -> None:
    decoder = hl7v2.MllpDecoder()
    decoder.feed(hl7v2.frame(message_bytes("adt_a04_gb18030.hl7")) + hl7v2.frame(b"PID|1||123"))
    answers = []
    for payload in decoder:
        try:
            message = hl7v2.parse_message(payload)
            assert_valid_bundle(hl7v2.map_message(message))
            answers.append(hl7v2.build_ack(message.header))
        except hl7v2.Hl7v2Error as error:
            answers.append(hl7v2.ack_for_error(error))

    codes = [parse_message(hl7v2.unframe(hl7v2.frame(answer))).require("MSA").value(1) for answer in answers]
    assert codes == ["AA", "AE"]
    assert set(hl7v2.__all__) >= {"parse_message", "map_message", "build_ack", "ack_for_error", "MllpDecoder"}
