"""ORU^R01 unsolicited results (v2.5.1 §7.3.1: OBR §4.5.3, OBX §7.4.2) as DiagnosticReport and Observations.

A report is keyed by OBR-3 filler order number (else OBR-2 placer); each Observation by that number and OBX-1.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

from adapters.hl7v2.context import MappingContext
from adapters.hl7v2.datatypes import codeable_concept, date_time, instant, number, table_coding
from adapters.hl7v2.errors import TABLE_VALUE_NOT_FOUND, InvalidValueError, MissingRequiredError
from adapters.hl7v2.message import Composite, Segment
from adapters.hl7v2.patient import PatientRef, add_patient

__all__ = ["map_oru"]

_UCUM = "http://unitsofmeasure.org"
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
# Table 0123 result status -> DiagnosticReport.status; table 0085 -> Observation.status.
_REPORT_STATUS = {
    "O": "registered",
    "I": "registered",
    "S": "registered",
    "A": "partial",
    "P": "preliminary",
    "R": "preliminary",
    "C": "corrected",
    "F": "final",
    "X": "cancelled",
    "Y": "unknown",
    "Z": "unknown",
}
_OBSERVATION_STATUS = {
    "C": "corrected",
    "D": "entered-in-error",
    "W": "entered-in-error",
    "F": "final",
    "U": "final",
    "I": "registered",
    "O": "registered",
    "P": "preliminary",
    "R": "preliminary",
    "S": "preliminary",
    "N": "cancelled",
    "X": "cancelled",
}
# Table 0078 abnormal flags that are also v3 ObservationInterpretation codes.
_INTERPRETATIONS = frozenset(
    {"L", "H", "LL", "HH", "N", "A", "AA", "<", ">", "U", "D", "B", "W", "S", "R", "I", "NEG", "POS", "IND"}
    | {"ND", "E", "EX", "HX", "LX", "HU", "LU", "NR", "RR", "NS", "VS", "MS", "TOX", "QCF"}
)
# Unit spellings seen in Chinese and international lab feeds -> UCUM codes.
_UCUM_ALIASES = {
    "%": "%",
    "mmol/l": "mmol/L",
    "umol/l": "umol/L",
    "μmol/l": "umol/L",
    "µmol/l": "umol/L",
    "pmol/l": "pmol/L",
    "nmol/l": "nmol/L",
    "mg/dl": "mg/dL",
    "mg/l": "mg/L",
    "g/l": "g/L",
    "g/dl": "g/dL",
    "ng/ml": "ng/mL",
    "pg/ml": "pg/mL",
    "u/l": "U/L",
    "iu/l": "[IU]/L",
    "miu/l": "m[IU]/L",
    "miu/ml": "m[IU]/mL",
    "fl": "fL",
    "pg": "pg",
    "mm/h": "mm/h",
    "mmhg": "mm[Hg]",
    "/min": "/min",
    "beats/min": "/min",
    "bpm": "/min",
    "kg": "kg",
    "cm": "cm",
    "cel": "Cel",
    "℃": "Cel",
    "10^9/l": "10*9/L",
    "10*9/l": "10*9/L",
    "x10^9/l": "10*9/L",
    "×10^9/l": "10*9/L",
    "giga.l-1": "10*9/L",
    "10^12/l": "10*12/L",
    "10*12/l": "10*12/L",
    "x10^12/l": "10*12/L",
    "×10^12/l": "10*12/L",
    "tera.l-1": "10*12/L",
}
# Table 0291 data subtypes of ED values -> media types.
_MEDIA_TYPES = {
    "PDF": "application/pdf",
    "RTF": "application/rtf",
    "HTML": "text/html",
    "XML": "application/xml",
    "TEXT": "text/plain",
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "TIFF": "image/tiff",
    "GIF": "image/gif",
}
_COMPARATOR = re.compile(r"\s*(<=|>=|<|>)\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*")
_RANGE = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*(?:--|-|–|~|～|_|to)\s*(-?\d+(?:\.\d+)?)\s*")


@dataclass
class _Order:
    obr: Segment
    orc: Segment | None
    patient: PatientRef
    visit: Segment | None
    notes: list[str] = field(default_factory=list)
    results: list[tuple[Segment, list[str]]] = field(default_factory=list)


def map_oru(ctx: MappingContext) -> dict[str, Any]:
    """Map every PID/OBR group; OBX under SPM (specimen observations) and before any OBR are not results."""
    ctx.message.require("PID")
    for order in _orders(ctx):
        _add_report(ctx, order)
    return ctx.finish()


def _orders(ctx: MappingContext) -> list[_Order]:
    orders: list[_Order] = []
    patient: PatientRef | None = None
    visit: Segment | None = None
    orc: Segment | None = None
    notes: list[str] | None = None
    in_specimen = False
    for segment in ctx.message.segments[1:]:
        if segment.id == "PID":
            patient, visit, notes = add_patient(ctx, segment, owner=False), None, None
        elif segment.id == "PV1":
            visit = segment
        elif segment.id == "ORC":
            orc = segment
        elif segment.id == "OBR":
            if patient is None:
                raise MissingRequiredError("OBR comes before any PID", segment="PID", code="100")
            orders.append(_Order(segment, orc, patient, visit))
            orc, in_specimen = None, False
            notes = orders[-1].notes
        elif segment.id == "SPM":
            in_specimen, notes = True, None
        elif segment.id == "OBX" and orders and not in_specimen:
            notes = []
            orders[-1].results.append((segment, notes))
        elif segment.id == "OBX":
            notes = None
        elif segment.id == "NTE" and notes is not None and segment.text(3):
            notes.append(segment.text(3))
    return orders


def _report_key(ctx: MappingContext, order: _Order) -> tuple[str, Composite, dict[str, Any] | None]:
    """The report's system and order number (EI), and the placer order identifier for basedOn."""
    placer_ei = order.obr.first(2) or (order.orc.first(2) if order.orc else Composite())
    placer = None
    if placer_ei.get(1).strip():
        system = ctx.systems.entity_system("placer-order", placer_ei, ctx.facility_id)
        placer = {"system": system, "value": placer_ei.get(1).strip()}
    filler_ei = order.obr.first(3) or (order.orc.first(3) if order.orc else Composite())
    if filler_ei.get(1).strip():
        return ctx.systems.entity_system("filler-order", filler_ei, ctx.facility_id), filler_ei, placer
    if placer:
        return placer["system"], placer_ei, placer
    raise order.obr.error(MissingRequiredError, "OBR-3 filler order number (and OBR-2 placer number) is empty", 3)


def _add_report(ctx: MappingContext, order: _Order) -> None:
    obr = order.obr
    system, number, placer = _report_key(ctx, order)
    value = number.get(1).strip()
    code = codeable_concept(obr.first(4))
    if code is None:
        raise obr.error(MissingRequiredError, "OBR-4 universal service identifier is empty", 4)
    identifier_type = "PLAC" if placer and placer["value"] == value and placer["system"] == system else "FILL"
    identifiers = [{"type": {"coding": [table_coding("0203", identifier_type)]}, "system": system, "value": value}]
    if placer and identifier_type == "FILL":
        identifiers.append({"type": {"coding": [table_coding("0203", "PLAC")]}, **placer})
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": identifiers,
        "status": _status(obr, 25, _REPORT_STATUS, "0123"),
        "code": code,
        "subject": order.patient.as_reference(),
    }
    context = _common(ctx, order, placer)
    report.update({key: context[key] for key in ("basedOn", "encounter") if key in context})
    if obr.value(24):
        report["category"] = [{"coding": [table_coding("0074", obr.value(24).upper())]}]
    effective = date_time(obr, 7)
    if effective:
        report["effectiveDateTime"] = effective
    issued = instant(obr, 22)
    if issued:
        report["issued"] = issued
    observation_system = ctx.systems.record_system(ctx.facility_id, "observation")
    namespace = number.get(2).strip()
    prefix = f"{namespace}/{value}" if namespace else value
    results, attachments = [], []
    for index, (obx, notes) in enumerate(order.results, start=1):
        attachment = _attachment(obx)
        if attachment is not None:
            attachments.append(attachment)
            continue
        key = f"{prefix}/{obx.value(1) or index}" + (f"/{obx.value(4)}" if obx.value(4) else "")
        if ctx.builder.full_url("Observation", observation_system, key):
            key = f"{key}#{index}"  # a set ID the sender repeated: keep both results, in message order
        observation = _observation(obx, notes, order, context)
        observation["identifier"] = [{"system": observation_system, "value": key}]
        results.append({"reference": ctx.builder.upsert(observation, observation_system, key)})
    if results:
        report["result"] = results
    if attachments:
        report["presentedForm"] = attachments
    if order.notes:
        report["conclusion"] = "\n".join(order.notes)
    ctx.builder.upsert(report, system, value)


def _common(ctx: MappingContext, order: _Order, placer: dict[str, Any] | None) -> dict[str, Any]:
    common: dict[str, Any] = {}
    if placer:
        common["basedOn"] = [{"type": "ServiceRequest", "identifier": placer}]
    if order.visit is not None and order.visit.value(19):
        visit = {"system": ctx.systems.visit_system(ctx.facility_id), "value": order.visit.value(19)}
        common["encounter"] = {"type": "Encounter", "identifier": visit}
    return common


def _observation(obx: Segment, notes: list[str], order: _Order, common: dict[str, Any]) -> dict[str, Any]:
    code = codeable_concept(obx.first(3))
    if code is None:
        raise obx.error(MissingRequiredError, "OBX-3 observation identifier is empty", 3)
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "status": _status(obx, 11, _OBSERVATION_STATUS, "0085"),
        "code": code,
        "subject": order.patient.as_reference(),
        **common,
    }
    effective = date_time(obx, 14) or date_time(order.obr, 7)
    if effective:
        observation["effectiveDateTime"] = effective
    unit = _unit(obx.first(6))
    observation.update(_value(obx, unit))
    interpretation = [_interpretation(flag) for flag in obx.repetitions(8) if flag.get(1).strip()]
    if interpretation:
        observation["interpretation"] = interpretation
    reference_range = _reference_range(obx.text(7), unit)
    if reference_range:
        observation["referenceRange"] = [reference_range]
    method = codeable_concept(obx.first(17))
    if method:
        observation["method"] = method
    if notes:
        observation["note"] = [{"text": note} for note in notes]
    return observation


def _status(segment: Segment, field: int, table: dict[str, str], table_id: str) -> str:
    code = segment.value(field).upper()
    if not code:
        return "unknown"
    if code not in table:
        raise segment.error(
            InvalidValueError, f"result status {code!r} is not in table {table_id}", field, code=TABLE_VALUE_NOT_FOUND
        )
    return table[code]


def _unit(ce: Composite) -> dict[str, Any]:
    """OBX-6 units: UCUM when coded so (CE-3 `UCUM`) or a known spelling; otherwise the unit text only."""
    code, text, system = ce.get(1).strip(), ce.get(2).strip(), ce.get(3).strip().upper()
    if not code and not text:
        return {}
    ucum = code if system == "UCUM" else _UCUM_ALIASES.get(code.lower())
    unit: dict[str, Any] = {"unit": text or code}
    if ucum:
        unit.update({"system": _UCUM, "code": ucum})
    return unit


def _value(obx: Segment, unit: dict[str, Any]) -> dict[str, Any]:
    """OBX-5 by OBX-2 value type: NM, SN, CE/CWE/CNE, ST/TX/FT, DT/TS/DTM, TM; others as text."""
    value_type = obx.value(2).upper()
    text = obx.text(5)
    if not text:
        return {}
    if value_type == "NM":
        return _quantity(obx.value(5), unit) or {"valueString": text}
    if value_type == "SN":
        return _structured_numeric(obx.first(5), unit) or {"valueString": text}
    if value_type in ("CE", "CWE", "CNE", "CF"):
        concept = codeable_concept(obx.first(5))
        return {"valueCodeableConcept": concept} if concept else {}
    if value_type in ("DT", "TS", "DTM"):
        return {"valueDateTime": date_time(obx, 5)}
    if value_type == "TM" and re.fullmatch(r"\d{4}(\d{2})?", obx.value(5)):
        raw = obx.value(5)
        return {"valueTime": f"{raw[:2]}:{raw[2:4]}:{raw[4:6] or '00'}"}
    return {"valueString": text}


def _quantity(text: str, unit: dict[str, Any], comparator: str = "") -> dict[str, Any] | None:
    found = _COMPARATOR.fullmatch(text)
    if found and not comparator:
        comparator, text = found.group(1), found.group(2)
    value = number(text)
    if value is None:
        return None
    quantity: dict[str, Any] = {"value": value}
    if comparator:
        quantity["comparator"] = comparator
    return {"valueQuantity": {**quantity, **unit}}


def _structured_numeric(sn: Composite, unit: dict[str, Any]) -> dict[str, Any] | None:
    """SN (§2.A.70): comparator^num1^separator^num2 as a Quantity, a Range (`-`) or a Ratio (`:` or `/`)."""
    comparator, first, separator, second = (sn.get(i).strip() for i in (1, 2, 3, 4))
    low, high = number(first), number(second)
    if separator == "-" and low is not None and high is not None:
        return {"valueRange": {"low": {"value": low, **unit}, "high": {"value": high, **unit}}}
    if separator in (":", "/") and low is not None and high is not None:
        return {"valueRatio": {"numerator": {"value": low}, "denominator": {"value": high}}}
    if separator or second:
        return None
    if comparator in ("<", ">", "<=", ">=", "=", ""):
        return _quantity(first, unit, "" if comparator == "=" else comparator)
    return None


def _attachment(obx: Segment) -> dict[str, Any] | None:
    """ED (§2.A.24) data and RP (§2.A.65) URLs: the report's presentedForm rather than Observations."""
    value_type, ed = obx.value(2).upper(), obx.first(5)
    if value_type == "RP" and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://\S+$", ed.get(1).strip()):
        return {"url": ed.get(1).strip(), "title": obx.value(3, 2) or obx.value(3)}
    if value_type != "ED" or not ed.get(5).strip():
        return None
    encoding, data = ed.get(4).strip().upper(), ed.get(5).strip()
    try:
        if encoding == "BASE64":
            raw = base64.b64decode(re.sub(r"\s+", "", data), validate=True)
        elif encoding == "HEX":
            raw = bytes.fromhex(data)
        else:
            raw = data.encode("utf-8")
    except ValueError:
        raise obx.error(InvalidValueError, f"ED data is not valid {encoding.lower() or 'text'}", 5) from None
    content_type = _MEDIA_TYPES.get(ed.get(3).strip().upper(), "application/octet-stream")
    attachment = {"contentType": content_type, "data": base64.b64encode(raw).decode("ascii")}
    if obx.value(3, 2) or obx.value(3):
        attachment["title"] = obx.value(3, 2) or obx.value(3)
    return attachment


def _interpretation(flag: Composite) -> dict[str, Any]:
    code = flag.get(1).strip()
    if code.upper() in _INTERPRETATIONS:
        return {"coding": [{"system": _INTERPRETATION, "code": code.upper()}]}
    return {"text": flag.get(2).strip() or code}


def _reference_range(text: str, unit: dict[str, Any]) -> dict[str, Any] | None:
    """OBX-7 (`3.5-5.5`, `3.5--5.5`, `4.3 to 6.2`, `<5`, `>=10`) as low/high, always keeping the text."""
    if not text:
        return None
    reference: dict[str, Any] = {}
    bounded = _RANGE.fullmatch(text)
    if bounded:
        reference["low"] = {"value": number(bounded.group(1)), **unit}
        reference["high"] = {"value": number(bounded.group(2)), **unit}
    else:
        one_sided = _COMPARATOR.fullmatch(text)
        if one_sided:
            side = "high" if one_sided.group(1).startswith("<") else "low"
            reference[side] = {"value": number(one_sided.group(2)), **unit}
    reference["text"] = text
    return reference
