"""Original-mode acknowledgments (v2.5.1 §2.9.2, MSA §2.15.8, ERR §2.15.5): AA, or AE/AR with an ERR segment."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from adapters.hl7v2.errors import (
    APPLICATION_INTERNAL_ERROR,
    ERROR_CODE_TEXT,
    MESSAGE_ACCEPTED,
    Hl7v2Error,
)
from adapters.hl7v2.message import EncodingCharacters, MessageHeader

__all__ = ["ack_for_error", "build_ack"]

_CHINA = timezone(timedelta(hours=8))
_DEFAULT_VERSION = "2.5.1"
_INTERNAL_ERROR_TEXT = "the message could not be processed now; send it again later"


def build_ack(
    header: MessageHeader | None,
    *,
    error: BaseException | None = None,
    ack_code: str | None = None,
    note: str | None = None,
    control_id: str | None = None,
    timestamp: datetime | None = None,
) -> bytes:
    """The ACK, encoded like the message: applications swapped, same version, new MSH-10, MSA-2 = its MSH-10;
    `error` makes it AE/AR with an ERR (other exceptions: AR 207, no detail); `header` is None if unreadable.
    `note` tells the sender something about an accepted message: MSA-3 before v2.5, else an ERR of severity I."""
    encoding = header.encoding if header else EncodingCharacters()
    version = (header.version if header else "") or _DEFAULT_VERSION
    code = ack_code or _ack_code(error)
    event = header.trigger_event if header else ""
    message_type = f"ACK^{event}^ACK" if _version(version) >= (2, 3, 1) else f"ACK^{event}"
    fields = [
        "MSH",
        encoding.msh2,
        header.receiving_application if header else "",
        header.receiving_facility if header else "",
        header.sending_application if header else "",
        header.sending_facility if header else "",
        (timestamp or datetime.now(_CHINA)).strftime("%Y%m%d%H%M%S%z"),
        "",
        _with_component_separator(message_type, encoding),
        encoding.escape_text(control_id or uuid.uuid4().hex[:20].upper()),
        (header.processing_id if header else "") or "P",
        encoding.escape_text(version),
    ]
    if header and header.character_set:
        fields += ["", "", "", "", "", encoding.escape_text(header.character_set)]
    segments = [encoding.field.join(fields)]
    msa = ["MSA", code, encoding.escape_text(header.control_id if header else "")]
    old_style = _version(version) < (2, 5)
    if error is not None and old_style:
        msa.append(encoding.escape_text(_user_text(error)))
    elif note and old_style:
        msa.append(encoding.escape_text(note))
    segments.append(encoding.field.join(msa))
    if error is not None:
        segments.append(_err_segment(error, encoding, version))
    elif note and not old_style:
        segments.append(_information_segment(note, encoding))
    text = "\r".join(segments) + "\r"
    return text.encode(header.codec if header else "utf-8", errors="replace")


def ack_for_error(error: Hl7v2Error, *, control_id: str | None = None, timestamp: datetime | None = None) -> bytes:
    """The AE/AR acknowledgment for a message that failed to parse or map, from the error alone."""
    return build_ack(error.header, error=error, control_id=control_id, timestamp=timestamp)


def _ack_code(error: BaseException | None) -> str:
    if error is None:
        return "AA"
    return error.ack_code if isinstance(error, Hl7v2Error) else "AR"


def _user_text(error: BaseException) -> str:
    return str(error) if isinstance(error, Hl7v2Error) else _INTERNAL_ERROR_TEXT


def _err_segment(error: BaseException, encoding: EncodingCharacters, version: str) -> str:
    """ERR: v2.5+ fills ERR-2 location, ERR-3 code (table 0357), ERR-4 severity, ERR-8 text; older versions
    have only ERR-1 (segment^sequence^field^code)."""
    if isinstance(error, Hl7v2Error):
        segment, sequence, field = error.segment, error.sequence, error.field
        repetition, component, code = error.repetition, error.component, error.code
    else:
        segment, sequence, field, repetition, component = "", 1, None, None, None
        code = APPLICATION_INTERNAL_ERROR
    esc, comp, sub = encoding.escape_text, encoding.component, encoding.subcomponent
    code_text = ERROR_CODE_TEXT.get(code, "")
    if _version(version) < (2, 5):
        error_code = sub.join((code, esc(code_text), "HL70357"))
        location = [esc(segment), str(sequence) if segment else "", str(field or ""), error_code]
        return encoding.field.join(["ERR", comp.join(location)])
    location = ""
    if segment:
        parts = [esc(segment), str(sequence)]
        if field is not None:
            parts += [str(field), str(repetition or 1), str(component or "")]
        location = comp.join(parts).rstrip(comp)
    hl7_error_code = comp.join((code, esc(code_text), "HL70357"))
    return encoding.field.join(["ERR", "", location, hl7_error_code, "E", "", "", "", esc(_user_text(error))])


def _information_segment(note: str, encoding: EncodingCharacters) -> str:
    """ERR with ERR-3 0 (message accepted), ERR-4 severity I (table 0516) and the note as ERR-8 user message."""
    code = encoding.component.join((MESSAGE_ACCEPTED, ERROR_CODE_TEXT[MESSAGE_ACCEPTED], "HL70357"))
    return encoding.field.join(["ERR", "", "", code, "I", "", "", "", encoding.escape_text(note)])


def _with_component_separator(text: str, encoding: EncodingCharacters) -> str:
    return text.replace("^", encoding.component)


def _version(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (2, 5)
