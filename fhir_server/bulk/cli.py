"""``hie import PATH``: a thin shell around :class:`fhir_server.bulk.importer.Importer` with a progress bar."""

from __future__ import annotations

from pathlib import Path

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from fhir_server.bulk.importer import Importer, ImportReport, import_files
from fhir_server.config import load_settings

SHOWN_REJECTS = 20


def import_command(
    path: Path = typer.Argument(..., exists=True, help="An NDJSON or JSON file, or a directory of them."),
    report: Path | None = typer.Option(None, help="Write every rejected record, with its reason, here (NDJSON)."),
    batch: int = typer.Option(500, min=1, help="Records validated and committed together."),
) -> None:
    """Import NDJSON (Bulk Data) or Bundle JSON files; an interrupted import resumes where it stopped."""
    from fhir_server.api.app import Context
    from fhir_server.storage import create_db_engine

    settings = load_settings()
    engine = create_db_engine(settings)
    files = import_files(path)
    importer = Importer(engine, Context(settings, engine).service, batch=batch)
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"importing {len(files)} file(s)", total=sum(f.stat().st_size for f in files))
        outcome = importer.run(files, lambda done: progress.advance(task, done))
    _print(outcome, Console())
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_bytes(b"".join(orjson.dumps(r.__dict__) + b"\n" for r in outcome.rejects))
        typer.echo(f"{len(outcome.rejects)} rejected record(s) written to {report}")


def _print(outcome: ImportReport, console: Console) -> None:
    table = Table("file", "records", "accepted", "rejected", "note")
    for item in outcome.files:
        note = "imported before" if item.skipped else (f"resumed after {item.resumed_at}" if item.resumed_at else "")
        table.add_row(Path(item.source).name, str(item.records), str(item.accepted), str(item.rejected), note)
    console.print(table)
    console.print(f"accepted {outcome.accepted}, rejected {outcome.rejected}")
    for reject in outcome.rejects[:SHOWN_REJECTS]:
        where = f"{Path(reject.source).name}:{reject.record}"
        console.print(f"rejected {where} {reject.res_type or ''}/{reject.res_id or ''}: {reject.reason}", markup=False)
    if len(outcome.rejects) > SHOWN_REJECTS:
        console.print(f"… and {len(outcome.rejects) - SHOWN_REJECTS} more (see --report)")


__all__ = ["import_command"]
