"""The error hierarchy: locations in ERR notation, table 0357 codes and MSA-1 codes."""

from __future__ import annotations

from adapters.hl7v2.errors import (
    Hl7v2Error,
    InvalidValueError,
    MalformedMessageError,
    MissingRequiredError,
    UndecodableMessageError,
    UnsupportedMessageError,
)


def test_location_names_segment_field_and_component() -> None:
    assert MissingRequiredError("x", segment="PID", field=3).location == "PID-3"
    assert InvalidValueError("x", segment="PV1", field=3, component=2).location == "PV1-3.2"
    assert MalformedMessageError("x", segment="MSH").location == "MSH"
    assert Hl7v2Error("x").location == ""


def test_message_starts_with_the_location() -> None:
    assert str(MissingRequiredError("visit number is empty", segment="PV1", field=19)) == (
        "PV1-19: visit number is empty"
    )


def test_default_codes_follow_table_0357_and_table_0008() -> None:
    cases = [
        (MalformedMessageError, "100", "AE"),
        (MissingRequiredError, "101", "AE"),
        (InvalidValueError, "102", "AE"),
        (UndecodableMessageError, "102", "AE"),
        (UnsupportedMessageError, "200", "AR"),
    ]
    for error_type, code, ack_code in cases:
        error = error_type("x")
        assert isinstance(error, Hl7v2Error)
        assert (error.code, error.ack_code) == (code, ack_code)


def test_code_can_be_narrowed() -> None:
    assert UnsupportedMessageError("x", code="201").code == "201"
