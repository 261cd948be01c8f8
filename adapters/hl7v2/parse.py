"""Read one HL7 v2.3-v2.5.1 message: MSH-18 character set, MSH-1/MSH-2 delimiters, escapes (v2.5.1 §2.5-2.7).

Splitting is python-hl7's; this module adds decoding, delimiter and segment checks, and unescaping.
"""

from __future__ import annotations

import re
from typing import Any

import hl7

from adapters.hl7v2.errors import (
    DATA_TYPE_ERROR,
    UNSUPPORTED_VERSION_ID,
    Hl7v2Error,
    MalformedMessageError,
    MissingRequiredError,
    UndecodableMessageError,
    UnsupportedMessageError,
)
from adapters.hl7v2.message import Composite, EncodingCharacters, Hl7Message, MessageHeader, Segment

__all__ = ["charset_codec", "parse_message", "unescape"]

_BOM = b"\xef\xbb\xbf"
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_FORMATTING = re.compile(r"\.(br|sp|ce|sk|in|ti|fi|nf)([+-]?\d+)?")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_OLDEST_VERSION = (2, 3)

# HL7 table 0211 (alternate character sets) and the labels Chinese HIS systems actually send, keyed without
# spaces, hyphens or underscores. GB 2312 and GBK are subsets of GB 18030, so one codec reads all three.
_CHARSETS = {
    "ASCII": "latin-1",
    "USASCII": "latin-1",
    "8859/1": "latin-1",
    "ISO88591": "latin-1",
    "LATIN1": "latin-1",
    **{f"8859/{n}": f"iso8859-{n}" for n in (2, 3, 4, 5, 6, 7, 8, 9, 15)},
    "UNICODE": "utf-8",
    "UNICODEUTF8": "utf-8",
    "UTF8": "utf-8",
    "GB180302000": "gb18030",
    "GB180302005": "gb18030",
    "GB18030": "gb18030",
    "GBK": "gb18030",
    "GB2312": "gb18030",
    "ISOIR58": "gb18030",
    "CHINESE": "gb18030",
    "BIG5": "big5",
}


def charset_codec(label: str, default: str = "UTF-8") -> str:
    """The Python codec for an MSH-18 value (table 0211 and common Chinese labels); empty means `default`."""
    key = re.sub(r"[\s\-_]", "", (label or default).upper())
    codec = _CHARSETS.get(key)
    if codec is None:
        raise UndecodableMessageError(f"character set {label!r} is not supported", segment="MSH", field=18)
    return codec


def parse_message(data: bytes | str, *, default_charset: str = "UTF-8") -> Hl7Message:
    """Parse one message (bytes decoded per MSH-18, else `default_charset`); raise an Hl7v2Error subclass.

    Segments may end in CR (the standard), CRLF or, when the message has no CR at all, LF.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        text, codec = _decode(bytes(data), default_charset)
    else:
        text = data.lstrip("\ufeff \t\r\n")
        try:
            codec = charset_codec(_msh18(text, _encoding_characters(text)), default_charset)
        except UndecodableMessageError:
            codec = "utf-8"  # already text: the label only matters for \X..\ escapes
    lines = [line for line in _split_segments(text) if line.strip()]
    encoding = _encoding_characters(lines[0])
    header: MessageHeader | None = None
    try:
        _check_segment_ids(lines, encoding)
        parsed = hl7.parse("\r".join(lines))
        segments = _segments(parsed, encoding, codec)
        header = _header(segments[0], encoding, codec)
        _check_header(segments[0], header)
    except Hl7v2Error as error:
        error.header = error.header or header
        raise
    return Hl7Message(header=header, segments=segments)


def unescape(text: str, encoding: EncodingCharacters, codec: str = "utf-8") -> str:
    """Replace escape sequences (v2.5.1 §2.7): \\F\\ \\S\\ \\T\\ \\R\\ \\E\\, \\Xhh..\\, \\H\\ \\N\\ and \\.br\\-style
    formatting. Unknown or unterminated sequences are kept as written."""
    esc = encoding.escape
    if esc not in text:
        return text
    out: list[str] = []
    position = 0
    while position < len(text):
        start = text.find(esc, position)
        if start == -1:
            out.append(text[position:])
            break
        out.append(text[position:start])
        end = text.find(esc, start + 1)
        if end == -1:
            out.append(text[start:])
            break
        replacement = _escape_value(text[start + 1 : end], encoding, codec)
        out.append(text[start : end + 1] if replacement is None else replacement)
        position = end + 1
    return "".join(out)


def _escape_value(sequence: str, encoding: EncodingCharacters, codec: str) -> str | None:
    delimiters = {
        "F": encoding.field,
        "S": encoding.component,
        "T": encoding.subcomponent,
        "R": encoding.repetition,
        "E": encoding.escape,
        "H": "",
        "N": "",
    }
    if sequence in delimiters:
        return delimiters[sequence]
    if sequence[:1] == "X" and _HEX.fullmatch(sequence[1:]):
        try:
            return bytes.fromhex(sequence[1:]).decode(codec)
        except UnicodeDecodeError:
            return None
    formatting = _FORMATTING.fullmatch(sequence)
    if formatting:
        command, count = formatting.group(1), abs(int(formatting.group(2) or 1))
        return {"br": "\n", "ce": "\n", "sp": "\n" * max(count, 1), "sk": " " * count}.get(command, "")
    return None


def _require_msh(text: str) -> None:
    if not text.startswith("MSH"):
        raise MalformedMessageError("message does not start with an MSH segment", segment="MSH")


def _decode(data: bytes, default_charset: str) -> tuple[str, str]:
    data = data.removeprefix(_BOM).lstrip(b" \t\r\n")
    if not data.startswith(b"MSH"):
        raise MalformedMessageError("message does not start with an MSH segment", segment="MSH")
    first_line = re.split(rb"\r|\n", data, maxsplit=1)[0].decode("latin-1")
    encoding = _encoding_characters(first_line)
    fields = first_line.split(encoding.field)
    declared = _label(fields[17], encoding) if len(fields) > 17 else ""
    # A multi-byte name before MSH-18 may hold delimiter bytes (GBK trail byte 0x7C is '|'), which moves the
    # label to the right when split as bytes; the label read back from the decoded text must agree.
    shifted = [label for label in (_label(f, encoding) for f in fields[18:]) if _is_charset(label)]
    errors: list[UndecodableMessageError] = []
    for label in dict.fromkeys([declared, *shifted]):
        try:
            codec = charset_codec(label, default_charset)
            text = data.decode(codec)
        except UndecodableMessageError as error:
            errors.append(error)
            continue
        except UnicodeDecodeError as exc:
            errors.append(
                UndecodableMessageError(
                    f"bytes {exc.start}-{exc.end} are not valid {label or default_charset} text",
                    segment="MSH",
                    field=18,
                )
            )
            continue
        if charset_codec(_msh18(text, encoding) or label, default_charset) == codec:
            return text, codec
    if errors:
        raise errors[0]
    raise UndecodableMessageError(f"MSH-18 {declared!r} does not describe the message bytes", segment="MSH", field=18)


def _label(field: str, encoding: EncodingCharacters) -> str:
    return field.split(encoding.repetition)[0].split(encoding.component)[0].strip()


def _is_charset(label: str) -> bool:
    return bool(label) and re.sub(r"[\s\-_]", "", label.upper()) in _CHARSETS


def _split_segments(text: str) -> list[str]:
    text = text.rstrip("\r\n")
    if "\r" in text:
        return text.replace("\r\n", "\r").split("\r")
    return text.split("\n")


def _encoding_characters(msh: str) -> EncodingCharacters:
    _require_msh(msh)
    separator = msh[3:4]
    if not separator or separator.isalnum() or separator.isspace():
        raise MalformedMessageError(
            f"MSH-1 field separator {separator!r} is missing or not a delimiter",
            segment="MSH",
            field=1,
            code=DATA_TYPE_ERROR,
        )
    line_end = min((i for i in (msh.find("\r"), msh.find("\n")) if i != -1), default=len(msh))
    end = msh.find(separator, 4, line_end)
    chars = msh[4 : end if end != -1 else line_end]
    valid = (
        len(chars) in (4, 5)
        and len(set(chars)) == len(chars)
        and separator not in chars
        and not any(char.isalnum() or char.isspace() for char in chars)
    )
    if not valid:
        raise MalformedMessageError(
            f"MSH-2 encoding characters {chars!r} must be four distinct delimiters such as '^~\\&'",
            segment="MSH",
            field=2,
            code=DATA_TYPE_ERROR,
        )
    return EncodingCharacters(separator, chars[0], chars[1], chars[2], chars[3])


def _msh18(text: str, encoding: EncodingCharacters) -> str:
    fields = re.split(r"\r|\n", text, maxsplit=1)[0].split(encoding.field)
    return _label(fields[17], encoding) if len(fields) > 17 else ""


def _check_segment_ids(lines: list[str], encoding: EncodingCharacters) -> None:
    counts: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        segment_id = line[:3]
        counts[segment_id] = counts.get(segment_id, 0) + 1
        if not _SEGMENT_ID.fullmatch(segment_id) or line[3:4] not in ("", encoding.field):
            raise MalformedMessageError(
                f"segment {number} ({line[:12]!r}) does not start with a three-character segment ID "
                f"followed by {encoding.field!r}",
                segment=segment_id.strip(),
                sequence=counts[segment_id],
            )
        if segment_id == "MSH" and number > 1:
            raise MalformedMessageError(
                f"segment {number} is a second MSH; send one message per frame, not a batch",
                segment="MSH",
                sequence=counts[segment_id],
            )


def _segments(parsed: hl7.Message, encoding: EncodingCharacters, codec: str) -> tuple[Segment, ...]:
    counts: dict[str, int] = {}
    segments = []
    for raw_segment in parsed:
        segment_id = str(raw_segment[0])
        counts[segment_id] = counts.get(segment_id, 0) + 1
        raw_fields = tuple(str(field) for field in raw_segment[1:])
        fields = []
        for number, field in enumerate(raw_segment[1:], start=1):
            if segment_id == "MSH" and number <= 2:
                fields.append((Composite(((str(field),),)),))
            else:
                fields.append(_field(field, encoding, codec))
        segments.append(Segment(segment_id, counts[segment_id], tuple(fields), raw_fields, encoding))
    return tuple(segments)


def _field(field: Any, encoding: EncodingCharacters, codec: str) -> tuple[Composite, ...]:
    def text(value: Any) -> str:
        return unescape(str(value), encoding, codec)

    if all(isinstance(item, str) for item in field):
        return (Composite(((text("".join(field)),),)),)
    repetitions = []
    for repetition in field:
        if isinstance(repetition, str):
            repetitions.append(Composite(((text(repetition),),)))
            continue
        components = []
        for component in repetition:
            if isinstance(component, str):
                components.append((text(component),))
            else:
                components.append(tuple(text(sub) for sub in component))
        repetitions.append(Composite(tuple(components)))
    return tuple(repetitions)


def _header(msh: Segment, encoding: EncodingCharacters, codec: str) -> MessageHeader:
    message_type = msh.first(9)
    return MessageHeader(
        encoding=encoding,
        sending_application=msh.raw(3),
        sending_facility=msh.raw(4),
        receiving_application=msh.raw(5),
        receiving_facility=msh.raw(6),
        message_type=message_type.get(1).strip().upper(),
        trigger_event=message_type.get(2).strip().upper(),
        structure=message_type.get(3).strip().upper(),
        control_id=msh.value(10),
        processing_id=msh.raw(11),
        version=msh.value(12),
        character_set=msh.value(18),
        codec=codec,
    )


def _check_header(msh: Segment, header: MessageHeader) -> None:
    if not header.message_type:
        raise msh.error(MissingRequiredError, "MSH-9 message type is empty", 9, component=1, header=header)
    if not header.trigger_event and header.message_type != "ACK":
        raise msh.error(MissingRequiredError, "MSH-9 trigger event is empty", 9, component=2, header=header)
    if not header.control_id:
        raise msh.error(MissingRequiredError, "MSH-10 message control ID is empty", 10, header=header)
    if not header.version:
        raise msh.error(MissingRequiredError, "MSH-12 version ID is empty", 12, header=header)
    try:
        version = tuple(int(part) for part in header.version.split("."))
    except ValueError:
        version = ()
    if not version or version[0] != 2 or version < _OLDEST_VERSION:
        raise msh.error(
            UnsupportedMessageError,
            f"version {header.version!r} is not accepted; send HL7 v2.3 or later",
            12,
            code=UNSUPPORTED_VERSION_ID,
            header=header,
        )
