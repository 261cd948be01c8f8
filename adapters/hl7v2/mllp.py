"""MLLP framing (HL7 v2.5.1 Appendix C, MLLP release 1): <VT> message <FS><CR>, independent of parsing."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["END_BLOCK", "START_BLOCK", "MllpDecoder", "MllpFramingError", "frame", "unframe"]

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
_FS = 0x1C
_CR = 0x0D
_WHITESPACE = b" \t\r\n"


class MllpFramingError(Exception):
    """Bytes that are not a well-formed MLLP frame: truncated, garbled or oversized."""


def frame(payload: bytes) -> bytes:
    """Wrap one message in a start block and an end block."""
    if START_BLOCK in payload or b"\x1c" in payload:
        raise MllpFramingError("the payload contains an MLLP block character (0x0B or 0x1C)")
    return START_BLOCK + payload + END_BLOCK


def unframe(data: bytes) -> bytes:
    """The message inside exactly one complete frame (line breaks around the frame tolerated)."""
    data = data.lstrip(_WHITESPACE)
    if not data.startswith(START_BLOCK):
        raise MllpFramingError("frame does not begin with the start block 0x0B")
    end = data.rfind(b"\x1c")
    if end == -1 or data[end + 1 : end + 2] != b"\r" or data[end + 2 :].strip(_WHITESPACE):
        raise MllpFramingError("frame is truncated: no end block 0x1C 0x0D")
    payload = data[1:end]
    if START_BLOCK in payload or b"\x1c" in payload:
        raise MllpFramingError("frame holds more than one message or a stray block character")
    return payload


class MllpDecoder:
    """Incremental decoder: `feed()` chunks, iterate for completed messages; a bad frame raises MllpFramingError
    from the iteration, already skipped, so iterating again resumes at the next start block."""

    def __init__(self, *, max_message_bytes: int = 16 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self._max = max_message_bytes

    def feed(self, data: bytes) -> None:
        """Append a chunk of any size, split anywhere."""
        self._buffer += data

    def __iter__(self) -> Iterator[bytes]:
        while True:
            message = self._next()
            if message is None:
                return
            yield message

    @property
    def pending(self) -> bool:
        """True while part of a frame is buffered."""
        return bool(self._buffer.strip(_WHITESPACE))

    def close(self) -> None:
        """End of stream: raise MllpFramingError when a frame was cut off."""
        if self.pending:
            size = len(self._buffer)
            self._buffer.clear()
            raise MllpFramingError(f"stream ended inside a frame ({size} bytes without an end block)")

    def _next(self) -> bytes | None:
        buffer = self._buffer
        start = buffer.find(START_BLOCK)
        leading = buffer if start == -1 else buffer[:start]
        if leading.strip(_WHITESPACE):
            cut = len(buffer) if start == -1 else start
            del buffer[:cut]
            raise MllpFramingError(f"{cut} bytes outside a frame (no start block 0x0B before them)")
        if start == -1:
            buffer.clear()
            return None
        del buffer[:start]
        end = buffer.find(b"\x1c")
        restart = buffer.find(START_BLOCK, 1)
        if restart != -1 and (end == -1 or restart < end):
            del buffer[:restart]
            raise MllpFramingError("frame is truncated: a new start block arrived before the end block")
        if end == -1:
            if len(buffer) > self._max:
                buffer.clear()
                raise MllpFramingError(f"frame exceeds {self._max} bytes without an end block")
            return None
        if end - 1 > self._max:
            del buffer[: end + 1]
            raise MllpFramingError(f"frame exceeds {self._max} bytes")
        if end + 1 >= len(buffer):
            return None
        if buffer[end + 1] != _CR:
            del buffer[: end + 1]
            raise MllpFramingError("end block 0x1C is not followed by 0x0D")
        payload = bytes(buffer[1:end])
        del buffer[: end + 2]
        return payload
