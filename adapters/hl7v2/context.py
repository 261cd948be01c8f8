"""What every message mapper shares: the message, the sending facility (MSH-4) and the Bundle under construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adapters.hl7v2.bundle import TransactionBuilder
from adapters.hl7v2.datatypes import instant, table_coding
from adapters.hl7v2.errors import InvalidValueError, MissingRequiredError
from adapters.hl7v2.identifier_systems import FACILITY_SYSTEM, IdentifierSystems
from adapters.hl7v2.message import Composite, Hl7Message

__all__ = ["MappingContext"]


@dataclass
class MappingContext:
    """One message being mapped; `facility` is MSH-4, or MSH-3 when a sender leaves MSH-4 empty."""

    message: Hl7Message
    systems: IdentifierSystems
    facility: Composite
    facility_id: str
    builder: TransactionBuilder = field(repr=False)

    @classmethod
    def for_message(cls, message: Hl7Message, systems: IdentifierSystems) -> MappingContext:
        """Read the sending facility; raise when MSH-3/MSH-4 give nothing to name the sender's records by."""
        msh = message.msh
        facility = msh.first(4) or msh.first(3)
        if not facility:
            raise msh.error(MissingRequiredError, "MSH-4 sending facility (and MSH-3) is empty", 4)
        facility_id = systems.facility_id(facility)
        if facility_id is None:
            raise msh.error(
                InvalidValueError,
                f"sending facility {facility.get(1)!r} has no code usable as an Organization id; "
                "configure it in IdentifierSystems.facility_ids",
                4,
            )
        key = f"{facility_id}|{message.header.control_id}"
        return cls(message, systems, facility, facility_id, TransactionBuilder(key))

    @property
    def facility_reference(self) -> dict[str, Any]:
        """A logical reference to the sending institution's Organization."""
        reference: dict[str, Any] = {"identifier": {"system": FACILITY_SYSTEM, "value": self.facility_id}}
        name = self.facility.get(1).strip()
        if name:
            reference["display"] = name
        return reference

    def finish(self) -> dict[str, Any]:
        """The transaction Bundle, closed by a Provenance naming the facility and MSH-10 (v2.5.1 §2.15.9.10)."""
        msh = self.message.msh
        recorded = instant(msh, 7)
        if recorded is None:
            raise msh.error(MissingRequiredError, "MSH-7 date/time of message is empty", 7)
        header = self.message.header
        source = {
            "identifier": {"system": self.systems.message_system(self.facility_id), "value": header.control_id},
            "display": f"HL7 v{header.version} {header.message_code} {header.control_id}",
        }
        activity = {"coding": [table_coding("0003", header.trigger_event)]}
        return self.builder.bundle(recorded=recorded, agent=self.facility_reference, source=source, activity=activity)
