"""Parsing: MSH-18 character sets, MSH-1/MSH-2 delimiters, escapes, and every kind of broken message."""

from __future__ import annotations

import pytest

from adapters.hl7v2.errors import (
    MalformedMessageError,
    MissingRequiredError,
    UndecodableMessageError,
    UnsupportedMessageError,
)
from adapters.hl7v2.message import EncodingCharacters
from adapters.hl7v2.parse import charset_codec, parse_message, unescape
from tests.adapters.hl7v2.samples import message_bytes, message_text

MINIMAL = "MSH|^~\\&|WZHIS|450400-001|HIE|WZHIE|20240315093000+0800||ADT^A01^ADT_A01|MSG1|P|2.5.1\rPID|1||123^^^^MR"


def test_utf8_message_reads_header_and_chinese_fields() -> None:
    message = parse_message(message_bytes("adt_a01.hl7"))

    header = message.header
    assert (header.message_type, header.trigger_event, header.structure) == ("ADT", "A01", "ADT_A01")
    assert header.control_id == "A01-20240315-0001"
    assert header.version == "2.5.1"
    assert header.codec == "utf-8"
    assert header.sending_facility == "450400-001"
    pid = message.require("PID")
    assert pid.value(5, 1) == "陈"
    assert pid.value(5, 2) == "建国"
    assert pid.repetitions(5)[1].get(8) == "P"
    assert pid.value(11, 9) == "长洲区"


def test_gb18030_message_is_decoded_by_its_msh18() -> None:
    data = message_bytes("adt_a04_gb18030.hl7")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")

    message = parse_message(data)

    assert message.header.character_set == "GB 18030-2000"
    assert message.header.codec == "gb18030"
    assert message.require("PID").value(5, 1) == "梁"
    assert message.require("PV1").value(3, 9) == "内科门诊"


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("GB 18030-2000", "gb18030"),
        ("GB18030", "gb18030"),
        ("GBK", "gb18030"),
        ("gb2312", "gb18030"),
        ("CHINESE", "gb18030"),
        ("UNICODE UTF-8", "utf-8"),
        ("", "utf-8"),
        ("ASCII", "latin-1"),
        ("8859/1", "latin-1"),
    ],
)
def test_charset_labels(label: str, codec: str) -> None:
    assert charset_codec(label) == codec


def test_gbk_label_is_found_when_a_trail_byte_looks_like_a_delimiter() -> None:
    # 億 is 83 7C in GBK: read as bytes, MSH-4 seems to hold a '|' and MSH-18 moves one field to the right.
    text = MINIMAL.replace("|450400-001|", "|億达医院|").replace("|2.5.1", "|2.5.1||||||GBK")
    data = text.encode("gb18030")
    assert b"\x83|" in data

    message = parse_message(data)

    assert message.header.codec == "gb18030"
    assert message.msh.value(4) == "億达医院"


def test_latin1_message_and_bom_and_lf_terminators() -> None:
    text = MINIMAL.replace("|2.5.1", "|2.5.1||||||8859/1").replace("123^^^^MR", "123^^^^MR||Müller^Jörg")
    data = b"\xef\xbb\xbf" + text.replace("\r", "\n").encode("latin-1")

    message = parse_message(data)

    assert message.header.codec == "latin-1"
    assert message.require("PID").value(5, 1) == "Müller"


def test_default_charset_applies_when_msh18_is_empty() -> None:
    data = MINIMAL.replace("123^^^^MR", "123^^^^MR||陈^建国").encode("gb18030")

    message = parse_message(data, default_charset="GB18030")

    assert message.require("PID").value(5) == "陈"


def test_undecodable_bytes_name_msh18() -> None:
    data = MINIMAL.replace("123^^^^MR", "123^^^^MR||陈^建国").encode("gb18030")

    with pytest.raises(UndecodableMessageError) as caught:
        parse_message(data)

    assert caught.value.location == "MSH-18"
    assert caught.value.code == "102"


def test_unknown_charset_is_reported() -> None:
    with pytest.raises(UndecodableMessageError, match="KLINGON"):
        parse_message(MINIMAL.replace("|2.5.1", "|2.5.1||||||KLINGON").encode())


def test_crlf_terminators_are_accepted() -> None:
    message = parse_message(MINIMAL.replace("\r", "\r\n").encode())

    assert [segment.id for segment in message.segments] == ["MSH", "PID"]


def test_lf_inside_a_cr_terminated_message_stays_data() -> None:
    text = MINIMAL + "\rNTE|1||第一行\n第二行"

    message = parse_message(text)

    assert message.require("NTE").text(3) == "第一行\n第二行"


def test_custom_encoding_characters() -> None:
    text = "MSH#*!$%#APP#FAC#HIE#WZHIE#20240315093000##ADT*A01#MSG1#P#2.5\rPID#1##123****MR!456##陈*建国$F$先生"
    message = parse_message(text)

    assert message.header.encoding == EncodingCharacters("#", "*", "!", "$", "%")
    assert message.require("PID").value(3, 5) == "MR"
    assert message.require("PID").repetitions(3)[1].get(1) == "456"
    assert message.require("PID").value(5, 2) == "建国#先生"


def test_escape_sequences() -> None:
    escaped = r"A\F\B\S\C\T\D\R\E\E\x\.br\F\H\bold\N\ \X41\ \XE6A2A7\ \Zlocal\ end"

    note = parse_message(MINIMAL + "\rNTE|1||" + escaped).require("NTE").value(3)

    assert note == "A|B^C&D~E\\x\nFbold A 梧 \\Zlocal\\ end"


def test_hex_escape_uses_the_message_character_set() -> None:
    encoding = EncodingCharacters()
    assert unescape("\\XCEE0D6DD\\", encoding, "gb18030") == "梧州"
    assert unescape("\\XE6A2A7E5B79E\\", encoding, "utf-8") == "梧州"


def test_unterminated_escape_is_kept_literally() -> None:
    assert unescape("C:\\temp", EncodingCharacters()) == "C:\\temp"


def test_components_keep_escaped_delimiters_apart() -> None:
    message = parse_message(MINIMAL + "\rOBX|1|NM|6690-2^白细胞^LN||11.2|10\\S\\9/L")

    obx = message.require("OBX")
    assert obx.value(6) == "10^9/L"
    assert obx.raw(6) == "10\\S\\9/L"


def test_no_msh_is_malformed() -> None:
    with pytest.raises(MalformedMessageError) as caught:
        parse_message(b"PID|1||123^^^^MR\rPV1|1|I")

    assert caught.value.segment == "MSH"
    assert caught.value.header is None


def test_empty_input_is_malformed() -> None:
    with pytest.raises(MalformedMessageError):
        parse_message(b"   \r\n")


@pytest.mark.parametrize(
    ("first_segment", "location"),
    [
        ("MSH", "MSH-1"),
        ("MSHA^~\\&|APP", "MSH-1"),
        ("MSH|^~|APP|FAC", "MSH-2"),
        ("MSH|^^\\&|APP|FAC", "MSH-2"),
        ("MSH|^~\\|&|APP", "MSH-2"),
        ("MSH|^~A&|APP|FAC", "MSH-2"),
    ],
)
def test_bad_encoding_characters(first_segment: str, location: str) -> None:
    with pytest.raises(MalformedMessageError) as caught:
        parse_message(first_segment + "\rPID|1")

    assert caught.value.location == location
    assert caught.value.code == "102"


@pytest.mark.parametrize(
    ("segment", "named"),
    [("P|D|1", "P|D"), ("pid|1||123", "pid"), ("PI|1", "PI|"), ("    |1", "")],
)
def test_broken_segment_is_named_with_its_position(segment: str, named: str) -> None:
    with pytest.raises(MalformedMessageError) as caught:
        parse_message(MINIMAL + "\r" + segment)

    assert caught.value.segment == named.strip()
    assert "segment 3" in caught.value.text
    assert caught.value.header is None


def test_second_msh_is_rejected_as_a_batch() -> None:
    with pytest.raises(MalformedMessageError) as caught:
        parse_message(MINIMAL + "\r" + MINIMAL)

    assert caught.value.segment == "MSH"
    assert caught.value.sequence == 2


@pytest.mark.parametrize(
    ("change", "location"),
    [
        (("ADT^A01^ADT_A01", ""), "MSH-9.1"),
        (("ADT^A01^ADT_A01", "ADT"), "MSH-9.2"),
        (("|MSG1|", "||"), "MSH-10"),
        (("|2.5.1", "|"), "MSH-12"),
    ],
)
def test_missing_header_fields(change: tuple[str, str], location: str) -> None:
    with pytest.raises(MissingRequiredError) as caught:
        parse_message(MINIMAL.replace(*change))

    assert caught.value.location == location
    assert caught.value.header is not None


@pytest.mark.parametrize("version", ["2.2", "2.1", "3.0", "V25"])
def test_versions_before_2_3_are_unsupported(version: str) -> None:
    with pytest.raises(UnsupportedMessageError) as caught:
        parse_message(MINIMAL.replace("|2.5.1", f"|{version}"))

    assert caught.value.location == "MSH-12"
    assert caught.value.code == "203"
    assert caught.value.header.control_id == "MSG1"


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.8"])
def test_versions_from_2_3_are_read(version: str) -> None:
    assert parse_message(MINIMAL.replace("|2.5.1", f"|{version}")).header.version == version


def test_segment_sequence_counts_repeats() -> None:
    message = parse_message(message_text("oru_r01.hl7"))

    observations = message.all("OBX")
    assert [obx.sequence for obx in observations] == list(range(1, len(observations) + 1))
    assert message.require("OBR").sequence == 1
