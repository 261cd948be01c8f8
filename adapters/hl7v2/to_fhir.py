"""Dispatch a parsed HL7 v2 message by MSH-9 (v2.5.1 §2.15.9.9) to its pure mapper; the result is a FHIR R4B
transaction Bundle as a plain JSON dict."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adapters.hl7v2.adt import ADT_EVENTS, map_adt
from adapters.hl7v2.context import MappingContext
from adapters.hl7v2.errors import UNSUPPORTED_EVENT_CODE, Hl7v2Error, UnsupportedMessageError
from adapters.hl7v2.identifier_systems import IdentifierSystems
from adapters.hl7v2.message import Hl7Message
from adapters.hl7v2.oru import map_oru
from adapters.hl7v2.siu import SIU_EVENTS, map_siu

__all__ = ["SUPPORTED_EVENTS", "map_message"]

SUPPORTED_EVENTS: dict[str, frozenset[str]] = {
    "ADT": ADT_EVENTS,
    "ORU": frozenset({"R01"}),
    "SIU": SIU_EVENTS,
}
_MAPPERS: dict[str, Callable[[MappingContext], dict[str, Any]]] = {
    "ADT": map_adt,
    "ORU": map_oru,
    "SIU": map_siu,
}


def map_message(message: Hl7Message, *, systems: IdentifierSystems | None = None) -> dict[str, Any]:
    """The transaction Bundle for one message; raise UnsupportedMessageError for other types and events,
    or another Hl7v2Error (carrying the header, for the ACK) when content is missing or invalid."""
    header = message.header
    try:
        if header.message_type not in _MAPPERS:
            supported = ", ".join(sorted(_MAPPERS))
            raise message.msh.error(
                UnsupportedMessageError,
                f"message type {header.message_type!r} is not accepted here (accepted: {supported})",
                9,
                component=1,
            )
        if header.trigger_event not in SUPPORTED_EVENTS[header.message_type]:
            supported = ", ".join(sorted(SUPPORTED_EVENTS[header.message_type]))
            raise message.msh.error(
                UnsupportedMessageError,
                f"{header.message_type} event {header.trigger_event!r} is not accepted here (accepted: {supported})",
                9,
                component=2,
                code=UNSUPPORTED_EVENT_CODE,
            )
        context = MappingContext.for_message(message, systems or IdentifierSystems())
        return _MAPPERS[header.message_type](context)
    except Hl7v2Error as error:
        error.header = error.header or header
        raise
