"""Errors raised while reading an HL7 v2 message; each names where it failed (v2.5.1 §2.15.5 ERR, table 0357)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.hl7v2.message import MessageHeader

__all__ = [
    "Hl7v2Error",
    "InvalidValueError",
    "MalformedMessageError",
    "MissingRequiredError",
    "UndecodableMessageError",
    "UnsupportedMessageError",
]

# HL7 table 0357 (message error condition codes) used by this package.
MESSAGE_ACCEPTED = "0"
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_VERSION_ID = "203"
UNKNOWN_KEY_IDENTIFIER = "204"
DUPLICATE_KEY_IDENTIFIER = "205"
APPLICATION_INTERNAL_ERROR = "207"

ERROR_CODE_TEXT = {
    MESSAGE_ACCEPTED: "Message accepted",
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT_CODE: "Unsupported event code",
    UNSUPPORTED_VERSION_ID: "Unsupported version id",
    UNKNOWN_KEY_IDENTIFIER: "Unknown key identifier",
    DUPLICATE_KEY_IDENTIFIER: "Duplicate key identifier",
    APPLICATION_INTERNAL_ERROR: "Application internal error",
}


class Hl7v2Error(Exception):
    """A message that cannot be accepted, located as ERR-2 (segment^sequence^field^repetition^component).

    `header` is the message header when it could be read, so that an ACK can answer the sender.
    """

    default_code = APPLICATION_INTERNAL_ERROR
    default_ack_code = "AE"

    def __init__(
        self,
        text: str,
        *,
        segment: str = "",
        sequence: int = 1,
        field: int | None = None,
        repetition: int | None = None,
        component: int | None = None,
        code: str | None = None,
        header: MessageHeader | None = None,
    ) -> None:
        super().__init__(text)
        self.text = text
        self.segment = segment
        self.sequence = sequence
        self.field = field
        self.repetition = repetition
        self.component = component
        self.code = code or self.default_code
        self.header = header

    @property
    def location(self) -> str:
        """The failing element in the usual notation: `MSH`, `PID-3`, `PV1-3.2`."""
        if not self.segment:
            return ""
        if self.field is None:
            return self.segment
        where = f"{self.segment}-{self.field}"
        return f"{where}.{self.component}" if self.component else where

    @property
    def ack_code(self) -> str:
        """MSA-1 for this error (table 0008): AR for what the receiver cannot handle, AE for bad content."""
        return self.default_ack_code

    def __str__(self) -> str:
        return f"{self.location}: {self.text}" if self.location else self.text


class UndecodableMessageError(Hl7v2Error):
    """The bytes cannot be decoded in the character set MSH-18 names (v2.5.1 §2.15.9.18)."""

    default_code = DATA_TYPE_ERROR


class MalformedMessageError(Hl7v2Error):
    """No MSH, bad encoding characters (MSH-1, MSH-2) or a segment that cannot be split (v2.5.1 §2.5-2.7)."""

    default_code = SEGMENT_SEQUENCE_ERROR


class MissingRequiredError(Hl7v2Error):
    """A segment or field the message type requires is absent (v2.5.1 §2.5.3, segment definitions per chapter)."""

    default_code = REQUIRED_FIELD_MISSING


class InvalidValueError(Hl7v2Error):
    """A field whose value breaks its data type or table (v2.5.1 §2.A data types, table 0357 codes 102/103)."""

    default_code = DATA_TYPE_ERROR


class UnsupportedMessageError(Hl7v2Error):
    """A message type, trigger event or version this interface does not accept (MSH-9, MSH-12)."""

    default_code = UNSUPPORTED_MESSAGE_TYPE
    default_ack_code = "AR"
