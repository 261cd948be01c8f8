"""``hie mpi``: maintenance of the master patient index."""

from __future__ import annotations

import typer

mpi_app = typer.Typer(help="Master patient index: back-fill, golden rebuilds", no_args_is_help=True)


@mpi_app.command("backfill")
def backfill_command(
    batch: int = typer.Option(200, "--batch", min=1, help="Patients per unit of work."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="File at most this many Patients in this run."),
) -> None:
    """File the Patients stored before the MPI was turned on: match, link, ask for review (resumable, idempotent)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ehr_archive.mpi import require_mpi
    from ehr_archive.mpi.backfill import backfill
    from fhir_server.api.app import Context
    from fhir_server.config import load_settings
    from fhir_server.storage import create_db_engine

    settings = load_settings(mpi_enabled=True, mpi_golden_rebuild="queued")
    engine = create_db_engine(settings)
    mpi = require_mpi(Context(settings, engine).service)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as bar:
        task = bar.add_task("Filing Patients in the MPI", total=None)
        report = backfill(
            engine,
            mpi,
            batch=batch,
            limit=limit,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    typer.echo(report.summary())
    for patient_id, reason in report.errors:
        typer.echo(f"  Patient/{patient_id}: {reason}", err=True)
    if report.failed > len(report.errors):
        typer.echo(f"  … and {report.failed - len(report.errors)} more errors", err=True)
    if report.failed:
        raise typer.Exit(1)


@mpi_app.command("rebuild")
def rebuild_command() -> None:
    """Rebuild the golden Patients still queued after commit (left by a process that stopped before doing it)."""
    from ehr_archive.mpi import require_mpi
    from fhir_server.api.app import Context
    from fhir_server.config import load_settings
    from fhir_server.storage import create_db_engine

    settings = load_settings(mpi_enabled=True, mpi_golden_rebuild="queued")
    engine = create_db_engine(settings)
    count = require_mpi(Context(settings, engine).service).rebuild_pending(engine)
    typer.echo(f"Rebuilt {count} golden Patients.")


__all__ = ["mpi_app"]
