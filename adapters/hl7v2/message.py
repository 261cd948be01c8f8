"""The parsed shape of an HL7 v2 message (v2.5.1 §2.5): delimiters, segments, fields, repetitions, components."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.hl7v2.errors import Hl7v2Error, MissingRequiredError

__all__ = ["Composite", "EncodingCharacters", "Hl7Message", "MessageHeader", "Segment"]


@dataclass(frozen=True)
class EncodingCharacters:
    """The delimiters of one message: MSH-1 and the four characters of MSH-2 (v2.5.1 §2.5.4)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def msh2(self) -> str:
        """MSH-2 as written: component, repetition, escape and subcomponent characters."""
        return self.component + self.repetition + self.escape + self.subcomponent

    def escape_text(self, text: str) -> str:
        """Escape delimiters in a text value (v2.5.1 §2.7.1); newlines become `\\.br\\`."""
        esc = self.escape
        replaced = {
            esc: f"{esc}E{esc}",
            self.field: f"{esc}F{esc}",
            self.component: f"{esc}S{esc}",
            self.subcomponent: f"{esc}T{esc}",
            self.repetition: f"{esc}R{esc}",
            "\r": f"{esc}.br{esc}",
            "\n": f"{esc}.br{esc}",
        }
        return "".join(replaced.get(char, char) for char in text.replace("\r\n", "\n"))


class Composite:
    """One repetition of a field, as components of subcomponents, already unescaped (v2.5.1 §2.5.3)."""

    __slots__ = ("parts",)

    def __init__(self, parts: tuple[tuple[str, ...], ...] = ()) -> None:
        self.parts = parts

    def get(self, component: int = 1, subcomponent: int = 1) -> str:
        """The value at a 1-based component and subcomponent, or '' when absent."""
        if component < 1 or component > len(self.parts):
            return ""
        subcomponents = self.parts[component - 1]
        return subcomponents[subcomponent - 1] if 0 < subcomponent <= len(subcomponents) else ""

    def subcomponents(self, component: int) -> tuple[str, ...]:
        """Every subcomponent of a 1-based component."""
        return self.parts[component - 1] if 0 < component <= len(self.parts) else ()

    def sub(self, component: int) -> Composite:
        """A component read as a composite of its subcomponents (e.g. CX-4 as an HD)."""
        if component < 1 or component > len(self.parts):
            return Composite()
        return Composite(tuple((value,) for value in self.parts[component - 1]))

    def __bool__(self) -> bool:
        return any(value for subcomponents in self.parts for value in subcomponents)

    def __repr__(self) -> str:
        return f"Composite({self.parts!r})"


@dataclass(frozen=True)
class Segment:
    """One segment; `sequence` is its occurrence among segments with the same ID (ERR-2.2)."""

    id: str
    sequence: int
    fields: tuple[tuple[Composite, ...], ...]
    raw_fields: tuple[str, ...]
    encoding: EncodingCharacters

    def repetitions(self, field: int) -> tuple[Composite, ...]:
        """Every non-empty repetition of a 1-based field."""
        if field < 1 or field > len(self.fields):
            return ()
        return tuple(rep for rep in self.fields[field - 1] if rep)

    def first(self, field: int) -> Composite:
        """The first repetition of a field (empty when absent)."""
        reps = self.repetitions(field)
        return reps[0] if reps else Composite()

    def value(self, field: int, component: int = 1, subcomponent: int = 1) -> str:
        """The unescaped, stripped value at field.component.subcomponent of the first repetition."""
        return self.first(field).get(component, subcomponent).strip()

    def text(self, field: int) -> str:
        """A text field (ST, TX, FT) whole: stray delimiters restored, repetitions on separate lines."""
        enc = self.encoding
        lines = [
            enc.component.join(enc.subcomponent.join(subs) for subs in rep.parts) for rep in self.repetitions(field)
        ]
        return "\n".join(lines).strip()

    def raw(self, field: int) -> str:
        """A field exactly as received, delimiters and escapes included (for echoing into an ACK)."""
        return self.raw_fields[field - 1] if 0 < field <= len(self.raw_fields) else ""

    def error(self, error_type: type[Hl7v2Error], text: str, field: int | None = None, **kwargs: Any) -> Hl7v2Error:
        """An error located at this segment occurrence (and field)."""
        return error_type(text, segment=self.id, sequence=self.sequence, field=field, **kwargs)


@dataclass(frozen=True)
class MessageHeader:
    """The MSH fields that route a message and answer it (v2.5.1 §2.15.9); raw ones keep their escapes."""

    encoding: EncodingCharacters
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_type: str
    trigger_event: str
    structure: str
    control_id: str
    processing_id: str
    version: str
    character_set: str
    codec: str

    @property
    def message_code(self) -> str:
        """MSH-9 as `TYPE^EVENT`, e.g. `ADT^A01`."""
        return f"{self.message_type}^{self.trigger_event}"


@dataclass(frozen=True)
class Hl7Message:
    """A parsed message: its header and its segments in order."""

    header: MessageHeader
    segments: tuple[Segment, ...]

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def segment(self, segment_id: str) -> Segment | None:
        """The first segment with this ID, or None."""
        return next((seg for seg in self.segments if seg.id == segment_id), None)

    def all(self, segment_id: str) -> list[Segment]:
        """Every segment with this ID, in order."""
        return [seg for seg in self.segments if seg.id == segment_id]

    def require(self, segment_id: str) -> Segment:
        """The first segment with this ID; raise MissingRequiredError when the message has none."""
        found = self.segment(segment_id)
        if found is None:
            raise MissingRequiredError(
                f"{self.header.message_code} message has no {segment_id} segment",
                segment=segment_id,
                code="100",
                header=self.header,
            )
        return found
