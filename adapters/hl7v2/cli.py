"""``hie mllp`` (the HL7 v2 listener) and ``hie hl7`` (dead letters: list, show, replay)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import typer

from fhir_server.config import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from adapters.hl7v2.store import ReceivedMessage
    from fhir_server.repository import Version
    from fhir_server.service import FhirService

__all__ = ["hl7_app", "mllp"]

hl7_app = typer.Typer(help="HL7 v2 messages received over MLLP: dead letters and replay", no_args_is_help=True)
_SHANGHAI = timezone(timedelta(hours=8))
_REASON_WIDTH = 90


def mllp(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(2575, help="TCP port (2575 is the port registered for HL7)."),
) -> None:
    """Receive HL7 v2 ADT/ORU/SIU messages over MLLP at HOST:PORT into the archive, answering each with an ACK."""
    from sqlalchemy import inspect

    from adapters.hl7v2.listener import MllpListener
    from fhir_server.access.inprocess import recover_in_process_audit
    from fhir_server.storage import create_db_engine

    settings = load_settings()
    engine = create_db_engine(settings)
    if not inspect(engine).has_table("hl7_messages"):
        typer.echo("The database has no hl7_messages table; run `hie db upgrade` first.", err=True)
        raise typer.Exit(1)
    recover_in_process_audit(engine)  # the audit events a killed listener left in the spool
    listener = MllpListener(engine, _service(settings, engine), host=host, port=port)

    async def serve() -> None:
        await listener.start()
        typer.echo(f"MLLP listener: {host}:{listener.port}  (database: {_safe_url(settings.database_url)})")
        try:
            await listener.serve_forever()
        finally:
            await listener.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


@hl7_app.command("dead-letters")
def dead_letters(limit: int = typer.Option(100, help="Show at most this many, oldest first.")) -> None:
    """Messages that could not be applied: id, received, facility, control id, type, reason."""
    from rich.console import Console
    from rich.table import Table

    from adapters.hl7v2 import store
    from fhir_server.access.inprocess import note_command
    from fhir_server.storage import create_db_engine, unit_of_work

    engine = create_db_engine(load_settings())
    with unit_of_work(engine, write=False) as conn:
        letters = store.dead_letters(conn, limit=limit)
    if not letters:
        typer.echo("No dead letters.")
        return
    note_command(engine, "dead-letters", "messages=" + ",".join(str(letter.id) for letter in letters))
    table = Table("id", "received", "facility", "control id", "type", "reason")
    for letter in letters:
        reason = letter.reason or ""
        table.add_row(
            str(letter.id),
            _local(letter.received),
            letter.sending_facility or "?",
            letter.control_id or "?",
            letter.message_type or "?",
            reason if len(reason) <= _REASON_WIDTH else reason[: _REASON_WIDTH - 1] + "…",
        )
    Console().print(table)


@hl7_app.command("show")
def show(message_id: int = typer.Argument(..., help="The id from `hie hl7 dead-letters`.")) -> None:
    """One received message: its record and its text (segments on separate lines)."""
    from adapters.hl7v2 import store
    from fhir_server.access.inprocess import note_command, note_in_process_reads
    from fhir_server.storage import create_db_engine, unit_of_work

    engine = create_db_engine(load_settings())
    with unit_of_work(engine, write=False) as conn:
        message = store.get_message(conn, message_id)
        written = _written_by(conn, message) if message is not None else []
    if message is None:
        typer.echo(f"There is no HL7 message {message_id}.", err=True)
        raise typer.Exit(1)
    note_command(engine, "show", f"message={message_id}")  # a resident's message read at the console: audited
    note_in_process_reads(written, engine)
    typer.echo(f"id {message.id}: {message.status}, ACK {message.ack_code}, {message.attempts} attempt(s)")
    typer.echo(f"received {_local(message.received)} from {message.sending_facility}, control id {message.control_id}")
    if message.applied:
        typer.echo(f"applied {_local(message.applied)}")
    if message.reason:
        typer.echo(f"reason: {message.reason}")
    typer.echo(message.text().replace("\r\n", "\n").replace("\r", "\n").rstrip("\n"))


@hl7_app.command("replay")
def replay(message_id: int = typer.Argument(..., help="The id from `hie hl7 dead-letters`.")) -> None:
    """Apply a dead letter again, after its mapping or the archive was fixed; print the ACK code."""
    from adapters.hl7v2.apply import replay_dead_letter
    from fhir_server.storage import create_db_engine

    settings = load_settings()
    engine = create_db_engine(settings)
    try:
        outcome = replay_dead_letter(engine, _service(settings, engine), message_id)
    except LookupError as error:
        typer.echo(f"{error}.", err=True)
        raise typer.Exit(1) from None
    if outcome.ack_code == "AA":
        typer.echo(f"AA: message {message_id} applied.")
        return
    typer.echo(f"{outcome.ack_code}: message {message_id} is still a dead letter: {outcome.reason}")
    raise typer.Exit(1)


def _written_by(conn: Connection, message: ReceivedMessage) -> list[Version]:
    """The versions an applied message wrote (its response summary), still stored: the records its text is about."""
    import orjson

    from fhir_server.errors import FhirError
    from fhir_server.repository import Repository
    from fhir_server.search.parameters import default_registry

    repository = Repository(default_registry())
    found = []
    for entry in orjson.loads(message.response or "[]"):
        parts = (entry.get("location") or "").split("/")
        if len(parts) == 4 and parts[2] == "_history" and parts[3].isdigit():
            try:
                found.append(repository.vread(conn, parts[0], parts[1], int(parts[3])))
            except FhirError:  # expunged or deleted since
                continue
    return found


def _service(settings: Settings, engine: Engine) -> FhirService:
    """The FHIR service of the REST API (same validation, regional checks and outbox), not a look-alike."""
    from fhir_server.api.app import Context

    return Context(settings, engine).service


def _local(moment: datetime) -> str:
    return moment.astimezone(_SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
