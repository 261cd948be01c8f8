"""MLLP framing: frame/unframe and the incremental decoder over arbitrary chunks."""

from __future__ import annotations

import pytest

from adapters.hl7v2.mllp import MllpDecoder, MllpFramingError, frame, unframe
from tests.adapters.hl7v2.samples import message_bytes

A01 = message_bytes("adt_a01.hl7")
A04 = message_bytes("adt_a04_gb18030.hl7")


def test_frame_and_unframe_round_trip() -> None:
    framed = frame(A01)

    assert framed[:1] == b"\x0b"
    assert framed[-2:] == b"\x1c\r"
    assert unframe(framed) == A01


def test_frame_refuses_block_characters_in_the_payload() -> None:
    with pytest.raises(MllpFramingError):
        frame(b"MSH|\x1c|")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"MSH|^~\\&|\x1c\r", "start block"),
        (b"\x0bMSH|^~\\&|", "truncated"),
        (b"\x0bMSH|^~\\&|\x1c", "truncated"),
        (b"\x0bMSH|\x0bMSH|\x1c\r", "more than one"),
    ],
)
def test_unframe_rejects_broken_frames(data: bytes, reason: str) -> None:
    with pytest.raises(MllpFramingError, match=reason):
        unframe(data)


def test_decoder_reassembles_byte_by_byte_chunks() -> None:
    stream = frame(A01) + frame(A04)
    decoder = MllpDecoder()
    messages = []
    for index in range(len(stream)):
        decoder.feed(stream[index : index + 1])
        messages.extend(decoder)

    assert messages == [A01, A04]
    assert not decoder.pending
    decoder.close()


def test_decoder_returns_every_message_of_one_chunk() -> None:
    decoder = MllpDecoder()
    decoder.feed(frame(A01) + b"\r\n" + frame(A04) + frame(A01)[:10])

    assert list(decoder) == [A01, A04]
    assert decoder.pending


def test_truncated_frame_at_end_of_stream() -> None:
    decoder = MllpDecoder()
    decoder.feed(frame(A01)[:-5])
    assert list(decoder) == []

    with pytest.raises(MllpFramingError, match="stream ended inside a frame"):
        decoder.close()


def test_new_start_block_before_end_block_reports_truncation_and_resumes() -> None:
    decoder = MllpDecoder()
    decoder.feed(frame(A01)[:-2][:200] + frame(A04))

    with pytest.raises(MllpFramingError, match="truncated"):
        list(decoder)
    assert list(decoder) == [A04]


def test_bytes_outside_a_frame_are_garbled_and_skipped() -> None:
    decoder = MllpDecoder()
    decoder.feed(b"GET / HTTP/1.1\r\n" + frame(A01))

    with pytest.raises(MllpFramingError, match="outside a frame"):
        next(iter(decoder))
    assert list(decoder) == [A01]


def test_end_block_without_carriage_return_is_garbled() -> None:
    decoder = MllpDecoder()
    decoder.feed(b"\x0bMSH|^~\\&|\x1cX" + frame(A04))

    with pytest.raises(MllpFramingError, match="0x0D"):
        list(decoder)
    with pytest.raises(MllpFramingError, match="outside a frame"):
        list(decoder)
    assert list(decoder) == [A04]


def test_oversized_frame_is_refused() -> None:
    decoder = MllpDecoder(max_message_bytes=100)
    decoder.feed(b"\x0b" + b"x" * 200)

    with pytest.raises(MllpFramingError, match="exceeds"):
        list(decoder)
    assert not decoder.pending
