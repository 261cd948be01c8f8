"""The ``hie`` command: run the exchange, manage its database, load demo data."""

from __future__ import annotations

import logging
from typing import Any

import typer
import uvicorn
from typer.core import TyperGroup

from adapters.hl7v2.cli import hl7_app, mllp
from ehr_archive.mpi.cli import mpi_app
from fhir_server.access.inprocess import audit_command, remember_arguments
from fhir_server.api.hardening import install_log_masking
from fhir_server.audit.cli import audit_app
from fhir_server.auth.cli import auth_app
from fhir_server.bulk.cli import import_command
from fhir_server.config import load_settings


class _Hie(TyperGroup):
    """The root group, remembering the arguments that name the command so its audit names the whole path."""

    def resolve_command(self, ctx: typer.Context, args: list[str]) -> Any:
        remember_arguments(ctx, args)
        return super().resolve_command(ctx, args)


app = typer.Typer(cls=_Hie, help="Wuzhou Health Information Exchange", no_args_is_help=True)
db_app = typer.Typer(help="Database schema and maintenance", no_args_is_help=True)
demo_app = typer.Typer(help="Demo data for the embedded default", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(demo_app, name="demo")
app.add_typer(hl7_app, name="hl7")
app.add_typer(auth_app, name="auth")
app.add_typer(audit_app, name="audit")
app.add_typer(mpi_app, name="mpi")
app.command("mllp")(mllp)
app.command("import")(import_command)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8080, help="TCP port."),
    workers: int = typer.Option(1, help="Worker processes (use several on PostgreSQL)."),
    access_log: bool = typer.Option(
        False, help="Also log a line per request (each FHIR request is in the audit trail already)."
    ),
) -> None:
    """Serve the FHIR API at http://HOST:PORT/fhir."""
    settings = load_settings()
    typer.echo(f"FHIR base URL: http://{host}:{port}/fhir  (database: {_safe_url(settings.database_url)})")
    uvicorn.run(
        "fhir_server.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=access_log,
    )


@app.command()
def worker(
    beat: bool = typer.Option(True, help="Also run the periodic sweep (Celery beat) in this worker."),
    concurrency: int = typer.Option(4, help="Tasks run at once."),
) -> None:
    """Run a Celery worker for notifications and bulk export (HIE_BACKGROUND=celery on the API side)."""
    from fhir_server.worker import run_worker

    run_worker(load_settings(), beat=beat, concurrency=concurrency)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Create or migrate the database schema (Alembic)."""
    from fhir_server.migrations import upgrade
    from fhir_server.storage import create_db_engine

    settings = load_settings()
    upgrade(create_db_engine(settings), revision)
    typer.echo(f"Database at {_safe_url(settings.database_url)} is at revision {revision}.")


@db_app.command("reindex")
def db_reindex(res_type: str | None = typer.Option(None, "--type", help="Only resources of this type.")) -> None:
    """Rebuild the search index rows (after a SearchParameter became active, or a change of extraction)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from fhir_server.search.parameters import default_registry
    from fhir_server.search.reindex import reindex_database
    from fhir_server.storage import create_db_engine

    settings = load_settings()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as bar:
        task = bar.add_task(f"Reindexing {res_type or 'every type'}", total=None)
        count = reindex_database(
            create_db_engine(settings),
            default_registry(),
            res_type,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    typer.echo(f"Reindexed {count} resources.")


@demo_app.command("load")
def demo_load() -> None:
    """Load a small demo data set (idempotent), through the service of the REST API: regional checks and the MPI."""
    from fhir_server.api.app import Context
    from fhir_server.demo import load_demo
    from fhir_server.storage import create_db_engine

    settings = load_settings()
    engine = create_db_engine(settings)
    created = load_demo(engine, Context(settings, engine).service)
    typer.echo(f"Demo data loaded: {created} resources created.")


@app.command("bench")
def bench(
    size: str = typer.Option("1000", help="Residents; several (1000,10000) are loaded one after the other."),
    backend: str = typer.Option("both", help="sqlite, postgres or both."),
    workloads: str = typer.Option("W1,W2,W3,W4,W5,W7,W8,limit", help="Workloads to run, comma-separated."),
    seed: int = typer.Option(0, help="Seed of the generated residents."),
    workers: int = typer.Option(2, help="uvicorn workers of the hie serve under test."),
    everything_size: int = typer.Option(1000, help="Resources in the record of the W5 ($everything) resident."),
    synthea_bundles: int = typer.Option(0, help="W1s: post only the smallest N Synthea Bundles (0: all)."),
    smoke: bool = typer.Option(False, help="20 residents and a few requests per workload (CI)."),
    profile: bool = typer.Option(True, help="Profile W1 and W3 in-process at the end."),
    out: str | None = typer.Option(None, help="Also write the Markdown report to this file."),
) -> None:
    """Run the benchmark suite (bench/regional, source tree only) and print its Markdown report."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / "bench" / "regional").is_dir():
        raise typer.BadParameter("the benchmark suite ships with the source tree, not with the installed package")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from bench.regional.run import main as run_bench

    argv = ["--size", size, "--backend", backend, "--workloads", workloads, "--seed", str(seed)]
    argv += ["--workers", str(workers), "--everything-size", str(everything_size)]
    argv += ["--synthea-bundles", str(synthea_bundles)]
    argv += ["--smoke"] if smoke else []
    argv += [] if profile else ["--no-profile"]
    argv += ["--out", out] if out else []
    raise typer.Exit(run_bench(argv))


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.callback()
def _configure_logging(ctx: typer.Context) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_masking()
    audit_command(ctx)  # what the command writes is recorded in the audit trail, as the CLI
