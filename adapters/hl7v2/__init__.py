"""HL7 v2 without a database: parsing (v2.5.1 ch. 2), MLLP (Appendix C), ACKs (§2.9.2), ADT/ORU/SIU to FHIR R4B.

A listener: `parse_message` -> `map_message` -> store the Bundle -> `build_ack`; on an Hl7v2Error, `ack_for_error`.
That side needs the database and is imported by module path: `store` (received messages and dead letters), `apply`
(`apply_message`), `listener` (MLLP over asyncio) and `cli` (`hie mllp`, `hie hl7`).
"""

from adapters.hl7v2.ack import ack_for_error, build_ack
from adapters.hl7v2.errors import (
    Hl7v2Error,
    InvalidValueError,
    MalformedMessageError,
    MissingRequiredError,
    UndecodableMessageError,
    UnsupportedMessageError,
)
from adapters.hl7v2.identifier_systems import IdentifierSystems
from adapters.hl7v2.message import Hl7Message, MessageHeader
from adapters.hl7v2.mllp import MllpDecoder, MllpFramingError, frame, unframe
from adapters.hl7v2.parse import parse_message
from adapters.hl7v2.to_fhir import SUPPORTED_EVENTS, map_message

__all__ = [
    "SUPPORTED_EVENTS",
    "Hl7Message",
    "Hl7v2Error",
    "IdentifierSystems",
    "InvalidValueError",
    "MalformedMessageError",
    "MessageHeader",
    "MissingRequiredError",
    "MllpDecoder",
    "MllpFramingError",
    "UndecodableMessageError",
    "UnsupportedMessageError",
    "ack_for_error",
    "build_ack",
    "frame",
    "map_message",
    "parse_message",
    "unframe",
]
