"""The parsed message model: 1-based accessors, text fields, raw fields and escaping back."""

from __future__ import annotations

import pytest

from adapters.hl7v2.errors import MissingRequiredError
from adapters.hl7v2.message import Composite, EncodingCharacters
from adapters.hl7v2.parse import parse_message

MESSAGE = (
    "MSH|^~\\&|WZHIS|450400-001|HIE|WZHIE|20240315093000+0800||ADT^A01|MSG1|P|2.5.1\r"
    "PID|1||0012345678^^^450400-001&1.2.156.1&ISO^MR~450403195803120012^^^CHN^NI||陈^建国\r"
    "NTE|1||血压偏高^需复查~次日复诊"
)


def test_composite_reads_components_and_subcomponents() -> None:
    cx = parse_message(MESSAGE).require("PID").first(3)

    assert cx.get(1) == "0012345678"
    assert cx.get(4) == "450400-001"
    assert cx.get(4, 2) == "1.2.156.1"
    assert cx.sub(4).get(3) == "ISO"
    assert cx.get(9) == ""
    assert cx.get(0) == ""
    assert cx.subcomponents(4) == ("450400-001", "1.2.156.1", "ISO")


def test_empty_composite_is_falsy() -> None:
    assert not Composite()
    assert not Composite((("",), ("", "")))
    assert Composite((("",), ("x",)))


def test_segment_repetitions_and_values() -> None:
    pid = parse_message(MESSAGE).require("PID")

    assert [rep.get(5) for rep in pid.repetitions(3)] == ["MR", "NI"]
    assert pid.value(5, 2) == "建国"
    assert pid.repetitions(40) == ()
    assert not pid.first(40)


def test_text_restores_delimiters_and_joins_repetitions() -> None:
    nte = parse_message(MESSAGE).require("NTE")

    assert nte.text(3) == "血压偏高^需复查\n次日复诊"
    assert nte.raw(3) == "血压偏高^需复查~次日复诊"


def test_require_names_the_missing_segment() -> None:
    with pytest.raises(MissingRequiredError) as caught:
        parse_message(MESSAGE).require("PV1")

    assert caught.value.segment == "PV1"
    assert caught.value.header is not None


def test_escape_text_round_trips_through_the_parser() -> None:
    encoding = EncodingCharacters()
    text = "A|B^C&D~E\\F"

    escaped = encoding.escape_text(text)
    message = parse_message(MESSAGE + "\rNTE|2||" + escaped)

    assert message.all("NTE")[1].value(3) == text
    assert encoding.escape_text("一\r\n二") == "一\\.br\\二"
