"""Original-mode ACKs: AA, AE and AR with an ERR segment, read back with the parser."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from adapters.hl7v2.ack import ack_for_error, build_ack
from adapters.hl7v2.errors import Hl7v2Error, MissingRequiredError
from adapters.hl7v2.message import Hl7Message
from adapters.hl7v2.parse import parse_message
from adapters.hl7v2.to_fhir import map_message
from tests.adapters.hl7v2.samples import message_bytes

WHEN = datetime(2024, 3, 15, 9, 30, 5, tzinfo=timezone(timedelta(hours=8)))
MINIMAL = "MSH|^~\\&|WZHIS|450400-001|HIE|WZHIE|20240315093000+0800||ADT^A01^ADT_A01|MSG1|P|2.3\rPID|1||123^^^^MR"


def _error(data: bytes | str) -> Hl7v2Error:
    with pytest.raises(Hl7v2Error) as caught:
        map_message(parse_message(data))
    return caught.value


def test_accept_swaps_applications_and_echoes_the_control_id() -> None:
    original = parse_message(message_bytes("adt_a01.hl7"))

    ack = parse_message(build_ack(original.header, control_id="ACK0001", timestamp=WHEN))

    msh = ack.msh
    assert (msh.value(3), msh.value(4), msh.value(5), msh.value(6)) == ("HIE", "WZHIE", "WZHIS", "450400-001")
    assert msh.value(7) == "20240315093005+0800"
    assert ack.header.message_code == "ACK^A01"
    assert ack.header.structure == "ACK"
    assert ack.header.control_id == "ACK0001"
    assert ack.header.version == "2.5.1"
    assert ack.header.character_set == "UNICODE UTF-8"
    assert ack.require("MSA").value(1) == "AA"
    assert ack.require("MSA").value(2) == "A01-20240315-0001"
    assert ack.segment("ERR") is None


def test_each_ack_gets_a_new_control_id() -> None:
    header = parse_message(message_bytes("adt_a01.hl7")).header

    first, second = (parse_message(build_ack(header)).header.control_id for _ in range(2))

    assert first != second
    assert first != header.control_id


def test_application_error_names_the_field_in_err() -> None:
    text = message_bytes("adt_a01.hl7").decode().replace("|19580312|M|", "|19580312|X|")
    error = _error(text)

    ack = parse_message(ack_for_error(error, control_id="ACK0002"))

    assert ack.require("MSA").value(1) == "AE"
    assert ack.require("MSA").value(2) == "A01-20240315-0001"
    err = ack.require("ERR")
    assert err.value(1) == ""
    assert [err.value(2, i) for i in (1, 2, 3, 4)] == ["PID", "1", "8", "1"]
    assert [err.value(3, i) for i in (1, 2, 3)] == ["103", "Table value not found", "HL70357"]
    assert err.value(4) == "E"
    assert "PID-8" in err.value(8)


def test_unsupported_event_is_rejected_with_ar() -> None:
    error = _error(message_bytes("adt_a01.hl7").decode().replace("ADT^A01^ADT_A01", "ADT^A06^ADT_A06"))

    ack = parse_message(ack_for_error(error))

    assert ack.require("MSA").value(1) == "AR"
    err = ack.require("ERR")
    assert [err.value(2, i) for i in (1, 2, 3, 4, 5)] == ["MSH", "1", "9", "1", "2"]
    assert err.value(3) == "201"


def test_version_2_3_gets_err_1_and_msa_3() -> None:
    error = MissingRequiredError("PID-3 is empty", segment="PID", field=3, header=parse_message(MINIMAL).header)

    ack = parse_message(ack_for_error(error))

    assert ack.header.version == "2.3"
    assert ack.header.message_code == "ACK^A01"
    assert ack.header.structure == ""
    assert "PID-3" in ack.require("MSA").value(3)
    err = ack.require("ERR")
    assert [err.value(1, 1), err.value(1, 2), err.value(1, 3)] == ["PID", "1", "3"]
    assert [err.value(1, 4, i) for i in (1, 2, 3)] == ["101", "Required field missing", "HL70357"]
    assert err.value(2) == ""


def test_unreadable_message_is_still_answered() -> None:
    error = _error(b"PID|1||123^^^^MR")

    ack = parse_message(ack_for_error(error))

    assert ack.require("MSA").value(1) == "AE"
    assert ack.require("MSA").value(2) == ""
    assert ack.require("ERR").value(2, 1) == "MSH"
    assert ack.require("ERR").value(3) == "100"


def test_internal_failure_is_ar_207_without_internal_detail() -> None:
    header = parse_message(message_bytes("adt_a01.hl7")).header

    ack = parse_message(build_ack(header, error=RuntimeError("connection to 10.0.0.5 refused")))

    assert ack.require("MSA").value(1) == "AR"
    assert ack.require("ERR").value(3) == "207"
    assert "10.0.0.5" not in ack.require("ERR").value(8)


def test_ack_is_encoded_like_the_message_and_escapes_delimiters() -> None:
    original: Hl7Message = parse_message(message_bytes("adt_a04_gb18030.hl7"))
    text = "梁桂芳 的 PID-3 缺少 ^ 与 | 分隔的编号"
    error = MissingRequiredError(text, segment="PID", field=3, header=original.header)

    data = ack_for_error(error)

    assert b"\xc1\xba" in data  # 梁 in GB 18030
    ack = parse_message(data)
    assert ack.header.codec == "gb18030"
    assert ack.require("ERR").value(8) == "PID-3: 梁桂芳 的 PID-3 缺少 ^ 与 | 分隔的编号"


def test_explicit_ack_code_overrides() -> None:
    header = parse_message(message_bytes("adt_a01.hl7")).header

    assert parse_message(build_ack(header, ack_code="CA")).require("MSA").value(1) == "CA"


def test_note_on_an_accept_is_an_information_err_from_v2_5() -> None:
    header = parse_message(message_bytes("adt_a01.hl7")).header

    ack = parse_message(build_ack(header, note="duplicate of message 7; not applied again"))

    assert ack.require("MSA").value(1) == "AA"
    assert ack.require("MSA").value(3) == ""
    err = ack.require("ERR")
    assert (err.value(3), err.value(4), err.value(8)) == ("0", "I", "duplicate of message 7; not applied again")


def test_note_on_an_accept_is_msa_3_before_v2_5() -> None:
    ack = parse_message(build_ack(parse_message(MINIMAL).header, note="duplicate; not applied again"))

    assert ack.require("MSA").value(1) == "AA"
    assert ack.require("MSA").value(3) == "duplicate; not applied again"
    assert ack.segment("ERR") is None
