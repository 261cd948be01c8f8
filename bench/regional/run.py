"""The benchmark suite of issue 6: generated Wuzhou data, W1–W8 and the database-alone limits, on each backend.

    python -m bench.regional.run [--size 1000[,10000]] [--backend sqlite|postgres|both] [--workloads W1,W3]
    python -m bench.regional.run --smoke       # 20 residents, every workload, seconds per backend

Per backend: a fresh database (``hie db upgrade``), ``hie serve`` with several workers, the institutions, then
W1 (transaction Bundles of residents 1..k over HTTP) and W2; then for each size in turn the other residents are
bulk-loaded with ``hie import`` and W3, W4, W5, W7 and W8 run on the data set of that size (so W4 shows growth);
last, the W1 documents go into scratch tables with the driver alone. Progress goes to stderr; the Markdown
report (machine, load average, every figure, target vs measured) to stdout and, with ``--out``, to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.regional import physical, report, workloads
from bench.regional.generate import RegionalData
from bench.regional.load import Cell, progress, use_token
from bench.regional.server import DEFAULT_POSTGRES_URL, Database, Server, load_average, machine_lines

__all__ = ["ALL_WORKLOADS", "EXTRA_WORKLOADS", "SuiteResult", "main", "run_suite"]

ALL_WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W7", "W8", "limit")
EXTRA_WORKLOADS = ("W1s",)
"""Run only when named: W1s needs the shared corpus (``$HIE_CORPUS_DIR/synthea``)."""


@dataclass
class SuiteResult:
    cells: list[Cell] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    profile: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _tag(cells: list[Cell], residents: int, db_resources: int) -> list[Cell]:
    for cell in cells:
        cell.extra = {"residents": residents, "db resources": db_resources, **cell.extra}
    return cells


def run_backend(
    db: Database,
    data: RegionalData,
    sizes: list[int],
    plan: workloads.Plan,
    selected: set[str],
    workers: int,
    workdir: Path,
) -> tuple[list[Cell], dict[str, int], tuple[str, str, str]]:
    """Every selected workload on one backend; returns the cells, the final counts and the load averages."""
    load_start = load_average()
    export_dir = workdir / "exports"
    export_dir.mkdir(parents=True, exist_ok=True)
    progress(f"{db.backend}: preparing the database")
    db.prepare(export_dir)
    token = db.bench_token(export_dir)
    use_token(token)
    progress(f"{db.backend}: " + ("a registered client's bearer token" if token else "no `hie auth`: auth off"))
    server = Server(db, workers, workdir / "server.log", export_dir, auth=token is not None)
    cells: list[Cell] = []
    w1_count = min(plan.w1_residents, max(1, sizes[0] // 2))
    w1_indexes = list(range(1, 1 + w1_count))
    w1_records = list(data.records(w1_indexes))
    try:
        server.start()
        progress(f"{db.backend}: server up at {server.base} ({workers} workers); loading institutions")
        workloads.load_institutions(server.base)
        if "W1" in selected:
            progress(f"{db.backend}: W1 ingest of {w1_count} residents' transaction Bundles")
            cell = asyncio.run(workloads.w1_ingest(server.base, db, w1_records, plan))
            cells += _tag([cell], w1_count, sum(db.count().values()))
        if "W2" in selected:
            progress(f"{db.backend}: W2 small transactions")
            w2 = asyncio.run(workloads.w2_small_transactions(server.base, db, data, plan))
            cells += _tag(w2, w1_count, sum(db.count().values()))
        if "W1s" in selected:
            bundles = workloads.synthea_bundles(plan.synthea_bundles)
            progress(f"{db.backend}: W1s ingest of {len(bundles)} Synthea transaction Bundles")
            cell = asyncio.run(workloads.w1s_synthea(server.base, db, bundles, plan))
            cells += _tag([cell], len(bundles), sum(db.count().values()))
        loaded: list[int] = []
        previous = 0
        for size in sizes:
            batch = [i for i in range(previous, size) if i not in set(w1_indexes)]
            previous = size
            loaded += batch
            imported = [workloads.bulk_import(db, data, batch, workdir, export_dir)] if batch else []
            counts = db.count()
            total = sum(counts.values())
            cells += _tag(imported, size, total)
            progress(f"{db.backend}: {size} residents, {total} resources in the database")
            step: list[Cell] = []
            if "W3" in selected:
                step += asyncio.run(workloads.w3_read(server.base, db, data, loaded, plan))
            if "W4" in selected:
                step += asyncio.run(workloads.w4_search(server.base, db, data, [i for i in loaded if i], plan))
            if "W5" in selected and 0 in loaded:
                patient_id = data.record(0).patient["id"]
                step.append(asyncio.run(workloads.w5_everything(server.base, db, patient_id, plan)))
            if "W7" in selected:
                progress(f"{db.backend}: W7 $export of {total} resources")
                step.append(asyncio.run(workloads.w7_export(server.base, db, plan)))
            if "W8" in selected:
                step.append(workloads.w8_footprint(db, server))
            cells += _tag(step, size, total)
        if "limit" in selected:
            progress(f"{db.backend}: the database alone with the W1 documents")
            documents = [r for record in w1_records for r in record.resources]
            cells += _tag(physical.physical_limits(db, documents, workdir), w1_count, len(documents))
        counts = db.count()
    finally:
        server.stop()
        use_token(None)
        with contextlib.suppress(Exception):
            db.drop()
    return cells, counts, (load_start, load_average(), "bearer token" if token else "auth disabled")


def _commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "fhir_server"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}{' with uncommitted changes in fhir_server/' if dirty else ''}"


def run_suite(
    *,
    sizes: list[int],
    databases: list[Database],
    plan: workloads.Plan,
    selected: set[str],
    workers: int = 2,
    heavy: int = 1000,
    profile: bool = False,
    workdir: Path | None = None,
    partial: Callable[[list[str]], None] | None = None,
) -> SuiteResult:
    """The whole suite; the Markdown report is in ``lines``."""
    result = SuiteResult()
    started, load_start = time.perf_counter(), load_average()
    progress(f"generating {max(sizes)} residents (seed {plan.seed})")
    data = RegionalData(max(sizes), seed=plan.seed, heavy=heavy)
    own_dir = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="hie-bench-"))
    loads = {}
    try:
        for db in databases:
            folder = workdir / db.backend
            folder.mkdir(parents=True, exist_ok=True)
            try:
                cells, counts, loads[db.backend] = run_backend(db, data, sizes, plan, selected, workers, folder)
            except Exception as exc:  # one backend's crash must not lose the other's figures
                progress(f"{db.backend}: the run stopped: {type(exc).__name__}: {exc}")
                result.errors.append(f"{db.backend}: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            result.cells += cells
            result.counts[db.backend] = counts
            if partial is not None:
                partial(report.figures_table(result.cells))
        if profile:
            progress("profiling W1 and W3 in-process (cProfile)")
            from bench.regional.profile import profile_paths

            result.profile = profile_paths(workdir, seed=plan.seed)
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    lines = [
        f"## Benchmark suite, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"`python -m bench.regional.run --size {','.join(map(str, sizes))} "
        f"--backend {'both' if len(databases) > 1 else databases[0].backend.replace('postgresql', 'postgres')}"
        + ("" if selected == set(ALL_WORKLOADS) else f" --workloads {','.join(sorted(selected))}")
        + f"` — "
        f"{elapsed:.0f} s, "
        f"code {_commit()}, seed {plan.seed}, W5 record of {heavy} resources, `hie serve --workers {workers}`.",
        "",
        *machine_lines(),
        f"- databases: {'; '.join(db.describe() for db in databases)}",
        f"- load average at start {load_start}, at end {load_average()}; per backend "
        + "; ".join(f"{b} {s} → {e}" for b, (s, e, _) in loads.items()),
        "- requests authenticated with: " + "; ".join(f"{b} {a}" for b, (_, _, a) in loads.items()),
        *[f"- **a backend's run stopped**: {error}" for error in result.errors],
        "",
        *report.figures_table(result.cells),
        "",
        *report.footprint_table(result.cells),
        "",
        *report.limits_table(result.cells),
        "",
        "Target vs measured (issue 6):",
        "",
        *report.targets_table(result.cells),
    ]
    if result.profile:
        from bench.regional.profile import profile_lines

        lines += profile_lines(result.profile)
    result.lines = lines
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1000", help="residents; several (1000,10000) load step by step")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument(
        "--workloads",
        default=",".join(ALL_WORKLOADS),
        help="W1,W2,W3,W4,W5,W7,W8,limit (the default); W1s (Synthea Bundles of $HIE_CORPUS_DIR) only when named",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of hie serve")
    parser.add_argument(
        "--everything-size", "--heavy", dest="heavy", type=int, default=1000, help="resources of the W5 resident"
    )
    parser.add_argument("--synthea-bundles", type=int, default=0, help="W1s: the smallest N Bundles (0: all)")
    parser.add_argument("--postgres-url", default=os.environ.get("HIE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    parser.add_argument("--w1-residents", type=int, default=200)
    parser.add_argument("--requests", type=int, default=0, help="scale W2/W3/W4/W5 request counts (0: defaults)")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--smoke", action="store_true", help="20 residents, a few requests per workload")
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    return parser.parse_args(argv)


def smoke_plan(seed: int = 0) -> workloads.Plan:
    return workloads.Plan(
        w1_residents=8,
        w2_transactions=6,
        w2_clients=(1, 4),
        w3_reads=20,
        w4_requests=6,
        w5_requests=2,
        time_limit=120.0,
        seed=seed,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [20] if args.smoke else sorted({int(s) for s in args.size.split(",") if s.strip()})
    if min(sizes) < 4:
        raise SystemExit("--size must be at least 4 residents")
    plan = smoke_plan(args.seed) if args.smoke else workloads.Plan(w1_residents=args.w1_residents, seed=args.seed)
    if args.requests:
        plan.w2_transactions = plan.w3_reads = plan.w4_requests = args.requests
        plan.w5_requests = max(2, args.requests // 10)
    selected = {w.strip() for w in args.workloads.split(",") if w.strip()}
    known = (*ALL_WORKLOADS, *EXTRA_WORKLOADS)
    unknown = selected - set(known)
    if unknown:
        raise SystemExit(f"unknown workloads: {', '.join(sorted(unknown))} (known: {', '.join(known)})")
    if "W1s" in selected:
        plan.synthea_bundles = 2 if args.smoke and not args.synthea_bundles else args.synthea_bundles
        try:
            workloads.synthea_bundles(plan.synthea_bundles)
        except FileNotFoundError as exc:
            raise SystemExit(str(exc)) from None
    workdir = Path(tempfile.mkdtemp(prefix="hie-bench-"))
    databases = []
    if args.backend in ("sqlite", "both"):
        (workdir / "sqlite").mkdir()
        databases.append(Database.sqlite(workdir / "sqlite"))
    if args.backend in ("postgres", "both"):
        databases.append(Database.postgres(args.postgres_url))
    try:
        result = run_suite(
            sizes=sizes,
            databases=databases,
            plan=plan,
            selected=selected,
            workers=args.workers,
            heavy=60 if args.smoke else args.heavy,
            profile=args.profile and not args.smoke,
            workdir=workdir,
            partial=(lambda lines: args.out.write_text("\n".join(["(partial)", *lines]) + "\n")) if args.out else None,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = "\n".join(result.lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        args.out.write_text(text)
    failed = sum(len(c.recorder.failures) for c in result.cells) + len(result.errors)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
