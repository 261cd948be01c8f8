"""Apply one HL7 v2 message to the archive and answer it (v2.5.1 §2.9.2 original-mode acknowledgment).

Parse → map → in ONE unit of work: the transaction Bundle and the message's idempotency row, so AA goes out only
after commit. A resend of an applied (MSH-4, MSH-10) gets AA again, with a note, and is not applied twice. A message
that cannot be applied is kept as a dead letter, in a unit of work of its own after the failed one rolled back.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta, timezone
from typing import Any, TypeVar

import orjson
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from adapters.hl7v2.ack import ack_for_error, build_ack
from adapters.hl7v2.errors import (
    APPLICATION_INTERNAL_ERROR,
    DUPLICATE_KEY_IDENTIFIER,
    UNKNOWN_KEY_IDENTIFIER,
    Hl7v2Error,
)
from adapters.hl7v2.identifier_systems import IdentifierSystems
from adapters.hl7v2.merge import apply_merges, take_merges
from adapters.hl7v2.message import Hl7Message, MessageHeader
from adapters.hl7v2.parse import parse_message
from adapters.hl7v2.store import (
    APPLIED,
    MessageKey,
    ReceivedMessage,
    StaleDeadLetterError,
    find_message,
    get_message,
    record_applied,
    record_dead,
)
from adapters.hl7v2.to_fhir import map_message
from fhir_server.access.inprocess import HL7V2_AGENT, audited_work, current_work
from fhir_server.errors import FhirError
from fhir_server.service import FhirService
from fhir_server.storage.engine import unit_of_work
from fhir_server.transactions import BundleProcessor

__all__ = ["ApplyOutcome", "ArchiveRefusedError", "apply_message", "receive_message", "replay_dead_letter"]

log = logging.getLogger("hie.hl7v2")

T = TypeVar("T")
_CHINA = timezone(timedelta(hours=8))
_ATTEMPTS = 3
_MAX_ISSUES = 5
_SEGMENT_END = re.compile(rb"\r\n|\r|\n")
_AUDIT_STATUS = {"AA": 200, "AE": 422, "AR": 500}
"""The acknowledgment code (table 0008) as the status the audit trail records (outcome 0, 4 or 8)."""
# FHIR issue codes whose cause has a table 0357 code of its own; everything else is 207.
_ERROR_CODES = {"multiple-matches": DUPLICATE_KEY_IDENTIFIER, "not-found": UNKNOWN_KEY_IDENTIFIER}


class ArchiveRefusedError(Hl7v2Error):
    """The message mapped, but the archive refused its transaction Bundle (a FHIR OperationOutcome)."""


@dataclass(frozen=True)
class ApplyOutcome:
    """The ACK sent for one message and what became of it; `message_id` is its `hl7_messages` row, if kept."""

    ack: bytes
    ack_code: str
    message_id: int | None
    duplicate: bool = False
    reason: str | None = None


def apply_message(
    engine: Engine,
    service: FhirService,
    raw: bytes,
    *,
    systems: IdentifierSystems | None = None,
    peer: str | None = None,
) -> bytes:
    """The ACK for one message (the bytes inside an MLLP frame), after applying it or keeping it as a dead letter.

    `peer` is the network address of the sender (the MLLP connection's), recorded in the message's audit event."""
    return receive_message(engine, service, raw, systems=systems, peer=peer).ack


def receive_message(
    engine: Engine,
    service: FhirService,
    raw: bytes,
    *,
    systems: IdentifierSystems | None = None,
    peer: str | None = None,
) -> ApplyOutcome:
    """Like `apply_message`, with the outcome; never raises (a failure of the database itself answers AR 207)."""
    return _apply(engine, service, raw, systems, dead_letter_id=None, peer=peer)


def replay_dead_letter(
    engine: Engine, service: FhirService, message_id: int, *, systems: IdentifierSystems | None = None
) -> ApplyOutcome:
    """Apply a dead letter again (after the mapping or the archive was fixed); raise LookupError if there is none."""
    with unit_of_work(engine, write=False) as conn:
        stored = get_message(conn, message_id)
    if stored is None:
        raise LookupError(f"There is no HL7 message {message_id}")
    if stored.status == APPLIED:
        raise LookupError(f"HL7 message {message_id} is not a dead letter: it was applied")
    return _apply(engine, service, stored.raw, systems, dead_letter_id=message_id)


def _apply(
    engine: Engine,
    service: FhirService,
    raw: bytes,
    systems: IdentifierSystems | None,
    *,
    dead_letter_id: int | None,
    peer: str | None = None,
) -> ApplyOutcome:
    """Apply and answer one message, recorded in the audit trail as the HL7 v2 adapter's work (one AuditEvent)."""
    path = "message" if dead_letter_id is None else f"dead letter {dead_letter_id}"
    with audited_work(
        HL7V2_AGENT,
        interaction="transaction",
        method="HL7",
        path=path,
        engine=engine,
        always=True,
        remote_address=peer,
    ) as work:
        outcome = _apply_and_answer(engine, service, raw, systems, dead_letter_id=dead_letter_id)
        work.status = _AUDIT_STATUS.get(outcome.ack_code, 500)
        return outcome


def _audit_sender(message: Hl7Message, systems: IdentifierSystems | None) -> None:
    """Name the message (MSH-9, MSH-10) and its sending facility (MSH-4, else MSH-3) in its audit event."""
    work = current_work()
    if work is None:
        return
    header = message.header
    work.path = f"{header.message_code} {header.control_id} ({work.path})"
    facility = message.msh.first(4) or message.msh.first(3)
    facility_id = (systems or IdentifierSystems()).facility_id(facility) if facility else None
    work.organization = f"Organization/{facility_id}" if facility_id else None


def _apply_and_answer(
    engine: Engine,
    service: FhirService,
    raw: bytes,
    systems: IdentifierSystems | None,
    *,
    dead_letter_id: int | None,
) -> ApplyOutcome:
    key = MessageKey.for_header(None, hashlib.sha256(raw).hexdigest())
    message: Hl7Message | None = None
    try:
        message = parse_message(raw)
        _audit_sender(message, systems)
        key = MessageKey.for_header(message.header, _message_digest(message))
        bundle = map_message(message, systems=systems)
    except Hl7v2Error as error:
        if message is None:
            error.header = error.header or _readable_header(raw)
            key = MessageKey.for_header(error.header, key.digest)
        return _keep_dead_letter(engine, raw, key, error, dead_letter_id)
    except Exception as exc:
        log.exception("HL7 message %s|%s could not be read", *_names(key))
        known = message.header if message is not None else _readable_header(raw)
        if message is None:
            key = MessageKey.for_header(known, key.digest)
        return _keep_dead_letter(engine, raw, key, exc, dead_letter_id, header=known)
    header, body = message.header, orjson.dumps(bundle)
    try:
        return _in_unit_of_work(
            engine, lambda conn: _apply_bundle(conn, service, header, key, raw, body, dead_letter_id)
        )
    except FhirError as error:
        return _keep_dead_letter(engine, raw, key, _refused(error, header), dead_letter_id)
    except Hl7v2Error as error:  # content the archive cannot apply, e.g. an A40 of an unknown prior patient
        return _keep_dead_letter(engine, raw, key, error, dead_letter_id)
    except Exception as exc:
        log.exception("HL7 message %s|%s could not be applied", *_names(key))
        return _keep_dead_letter(engine, raw, key, exc, dead_letter_id, header=header)


def _apply_bundle(
    conn: Connection,
    service: FhirService,
    header: MessageHeader,
    key: MessageKey,
    raw: bytes,
    body: bytes,
    dead_letter_id: int | None,
) -> ApplyOutcome:
    previous = _previous(conn, key, dead_letter_id)
    if previous is not None and previous.status == APPLIED:
        return _already_applied(header, key, previous)
    bundle = orjson.loads(body)
    merges = take_merges(bundle)
    result = BundleProcessor(service).transaction(conn, bundle, prefer="minimal")
    summary = [
        {"status": entry["response"]["status"], "location": entry["response"].get("location")}
        for entry in result["entry"]
    ]
    summary += apply_merges(conn, service, merges, header)
    message_id = record_applied(conn, key, raw, response=orjson.dumps(summary).decode(), previous=previous)
    return ApplyOutcome(build_ack(header), "AA", message_id)


def _already_applied(header: MessageHeader, key: MessageKey, previous: ReceivedMessage) -> ApplyOutcome:
    """AA with a note for a resend; AE 205 when the control ID was used before for a different message."""
    applied = previous.applied.astimezone(_CHINA).isoformat(timespec="seconds") if previous.applied else "earlier"
    if previous.digest == key.digest:
        note = f"duplicate of message {previous.id} applied at {applied}; not applied again"
        return ApplyOutcome(build_ack(header, note=note), "AA", previous.id, duplicate=True)
    error = Hl7v2Error(
        f"control ID {header.control_id!r} was used by a different message from this sender (applied at {applied}); "
        "send new content under a new control ID",
        segment="MSH",
        field=10,
        code=DUPLICATE_KEY_IDENTIFIER,
        header=header,
    )
    log.warning("HL7 message %s|%s reuses an applied control ID; refused", key.sending_facility, key.control_id)
    return ApplyOutcome(ack_for_error(error), error.ack_code, None, reason=str(error))


def _keep_dead_letter(
    engine: Engine,
    raw: bytes,
    key: MessageKey,
    error: BaseException,
    dead_letter_id: int | None,
    *,
    header: MessageHeader | None = None,
) -> ApplyOutcome:
    """Store (or update) the dead letter in its own unit of work, then answer AE/AR naming the failure."""
    header = error.header if isinstance(error, Hl7v2Error) else header
    reason = str(error) if isinstance(error, Hl7v2Error) else f"internal error: {type(error).__name__}: {error}"
    location = error.location if isinstance(error, Hl7v2Error) else ""
    ack = build_ack(header, error=error)
    ack_code = error.ack_code if isinstance(error, Hl7v2Error) else "AR"

    def keep(conn: Connection) -> ApplyOutcome:
        previous = _previous(conn, key, dead_letter_id)
        if previous is not None and previous.status == APPLIED:
            if header is not None and previous.digest == key.digest:
                return _already_applied(header, key, previous)
            log.warning("HL7 message %s|%s failed but its key is taken by message %s", *_names(key), previous.id)
            return ApplyOutcome(ack, ack_code, None, reason=reason)
        kept = record_dead(conn, key, raw, reason=reason, ack_code=ack_code, error_location=location, previous=previous)
        log.warning("HL7 message %s|%s kept as dead letter %s: %s", *_names(key), kept, reason)
        return ApplyOutcome(ack, ack_code, kept, reason=reason)

    try:
        return _in_unit_of_work(engine, keep)
    except Exception:
        log.exception("HL7 message %s|%s could not be kept as a dead letter", *_names(key))
        return ApplyOutcome(build_ack(header, error=RuntimeError(reason)), "AR", None, reason=reason)


def _previous(conn: Connection, key: MessageKey, dead_letter_id: int | None) -> ReceivedMessage | None:
    if dead_letter_id is not None:
        return get_message(conn, dead_letter_id)
    if key.sending_facility is None or key.control_id is None:
        return None
    return find_message(conn, sending_facility=key.sending_facility, control_id=key.control_id)


def _refused(error: FhirError, header: MessageHeader) -> ArchiveRefusedError:
    details = [issue.diagnostics for issue in error.extra[:_MAX_ISSUES]]
    text = "; ".join([f"the archive refused the message: {error.diagnostics}", *details])
    return ArchiveRefusedError(text, code=_ERROR_CODES.get(error.kind, APPLICATION_INTERNAL_ERROR), header=header)


def _message_digest(message: Hl7Message) -> str:
    """SHA-256 of a parsed message without MSH-7, so that a resend stamped with a new time is still the same."""
    separator = message.header.encoding.field
    lines = []
    for segment in message.segments:
        fields = list(segment.raw_fields)
        if segment.id == "MSH" and len(fields) >= 7:
            fields[6] = ""
        lines.append(separator.join([segment.id, *fields]))
    return hashlib.sha256("\r".join(lines).encode("utf-8", errors="surrogatepass")).hexdigest()


def _readable_header(raw: bytes) -> MessageHeader | None:
    """The header of a message whose body is broken, read from its MSH segment alone, so the ACK can answer it."""
    first = _SEGMENT_END.split(raw.lstrip(b"\xef\xbb\xbf \t\r\n"), maxsplit=1)[0]
    try:
        return parse_message(first).header
    except Hl7v2Error as error:
        return error.header
    except Exception:
        return None


def _in_unit_of_work(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run `work` in one transaction; retry when a concurrent writer won a race (the unique key, a deadlock)."""
    for attempt in range(_ATTEMPTS):
        try:
            with unit_of_work(engine) as conn:
                return work(conn)
        except (IntegrityError, OperationalError, StaleDeadLetterError) as exc:
            if attempt == _ATTEMPTS - 1 or not _retryable(exc):
                raise
            log.info("retrying an HL7 message after a concurrent write: %s", type(exc).__name__)
    raise AssertionError("unreachable")


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, IntegrityError | StaleDeadLetterError):
        return True
    orig: Any = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) in ("40001", "40P01") or "database is locked" in str(orig)


def _names(key: MessageKey) -> tuple[str, str]:
    return key.sending_facility or "?", key.control_id or "?"
