"""``hie audit …``: check the audit log's hash chain (after replaying the audit spool of killed processes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from fhir_server.config import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

audit_app = typer.Typer(help="The tamper-evident audit log", no_args_is_help=True)


@audit_app.command("verify")
def verify_command(
    replay: bool = typer.Option(True, help="First write the events killed processes left in the audit spool."),
) -> None:
    """Walk the hash chain from the first event; name the first broken link and exit 1 if there is one."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from fhir_server.audit.chain import verify
    from fhir_server.storage import create_db_engine

    settings = load_settings()
    engine = create_db_engine(settings)
    if replay and settings.audit_spool:
        _replay_spool(engine, settings)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("Verifying the audit chain", total=None)
        checked, head, broken = verify(
            engine, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    engine.dispose()
    if broken is not None:
        typer.echo(
            f"BROKEN at seq {broken.seq}: {broken.problem}\n  expected: {broken.expected}\n  found:    {broken.found}\n"
            f"{checked} event(s) before it verified.",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"OK: {checked} audit event(s) verified; head hash {head}")


def _replay_spool(engine: Engine, settings: Settings) -> None:
    """Append what processes killed before their flush left in the spool folder (its live spools are left to
    their processes); a failure (a read-only database role) is reported and the chain is verified as it is."""
    from fhir_server.audit.spool import spool_directory
    from fhir_server.audit.trail import AuditTrail

    folder = spool_directory(settings.database_url, settings.audit_spool_dir)
    try:
        replayed = AuditTrail(engine, spool_dir=folder).recover()
    except Exception as error:
        typer.echo(f"The audit spool in {folder} could not be replayed ({error}); it is left as it is.", err=True)
        return
    if replayed:
        typer.echo(f"Replayed {replayed} audit event(s) that killed processes left in the audit spool.")
