"""``hie audit …``: check the audit log's hash chain."""

from __future__ import annotations

import typer

from fhir_server.config import load_settings

audit_app = typer.Typer(help="The tamper-evident audit log", no_args_is_help=True)


@audit_app.command("verify")
def verify_command() -> None:
    """Walk the hash chain from the first event; name the first broken link and exit 1 if there is one."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from fhir_server.audit.chain import verify
    from fhir_server.storage import create_db_engine

    engine = create_db_engine(load_settings())
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
