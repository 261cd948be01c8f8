"""CPU time per W2 transaction in-process: the ASGI application called directly, background work included.

Run from the repository root (half a minute to a minute per run):

    .venv/bin/python -m bench.w2_cpu [--database-url URL] [--residents 150] [--transactions 150] [--trials 3]
        [--caller exchange|institution] [--split | --profile]

A fresh SQLite database in a temporary folder (or the PostgreSQL database of ``--database-url``, dropped and created
again: name a scratch database) is loaded with ``--residents`` residents' records as W1 sends them. Then W2's
transactions (one new Patient carrying only the resident ID card, one Observation about it: the Bundle of
``bench/regional/workloads.py``) are posted one at a time through the application with its production settings
(audit on, the benchmark client's token, goldens rebuilt by the background thread). The figure is the process's
CPU time from the first transaction until the golden rebuilds, the subscription dispatcher and the audit writer
have drained, per transaction; the fastest of ``--trials`` trials (each a fresh set of transactions).

``--split`` instead runs the unit of work inline and the golden rebuilds queued, drained after each transaction in
the same thread, and prints the thread CPU time of the request and of the golden rebuild per transaction (mean and
median); ``--profile`` does the same under cProfile and prints their top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import orjson

from bench.regional.generate import RegionalData, institutions_batch
from bench.regional.workloads import w2_transaction

HEADERS = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}
INSTITUTION_SCOPES = "system/*.cruds"


def bearer(url: str, caller: str) -> dict[str, str]:
    from fhir_server.auth.cli import create_client, issue_token
    from fhir_server.config import load_settings
    from fhir_server.storage import create_db_engine

    settings = load_settings(database_url=url, auth_token_lifetime_seconds=3600)
    engine = create_db_engine(settings)
    if caller == "exchange":
        client, _ = create_client(engine, name="w2 bench", scopes="system/*.cruds", organization=None, exchange=True)
    else:
        client, _ = create_client(
            engine, name="w2 bench hospital", scopes=INSTITUTION_SCOPES, organization="Organization/bench-hospital"
        )
    token, _ = issue_token(engine, settings, client.client_id, lifetime=3600)
    engine.dispose()
    return {"Authorization": f"Bearer {token}"}


def prepare(url: str | None, folder: Path) -> str:
    from fhir_server.config import Settings
    from fhir_server.migrations import upgrade
    from fhir_server.storage import create_db_engine

    if url is None:
        url = f"sqlite:///{folder / 'w2.db'}"
    else:
        from bench.scratch_db import check_loopback, recreate_postgres

        check_loopback(url)
        recreate_postgres(url)
    engine = create_db_engine(Settings(database_url=url))
    upgrade(engine)
    engine.dispose()
    return url


async def post_all(client: httpx.AsyncClient, bodies: list[bytes], headers: dict[str, str]) -> None:
    for body in bodies:
        answer = await client.post("", content=body, headers=headers)
        if answer.status_code != 200:
            raise SystemExit(f"transaction failed: {answer.status_code} {answer.text[:300]}")


def drain(app: Any) -> None:
    """Wait until the golden rebuilds and the dispatcher have done what the transactions left them."""
    from ehr_archive.mpi import mpi_of

    mpi = mpi_of(app.state.context.service) if hasattr(app.state, "context") else None
    for _ in range(3):
        if mpi is not None:
            mpi.wait_idle(60)
        time.sleep(0.3)  # the dispatcher's pass after the last commit
    app.state.audit.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="a scratch PostgreSQL database, dropped and created again")
    parser.add_argument("--residents", type=int, default=150)
    parser.add_argument("--transactions", type=int, default=150)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--caller", choices=("exchange", "institution"), default="exchange")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--split", action="store_true", help="thread CPU of the request and of the golden rebuild")
    args = parser.parse_args()

    from fhir_server.api.app import create_app
    from fhir_server.config import Settings

    folder = Path(tempfile.mkdtemp(prefix="w2-cpu-"))
    url = prepare(args.database_url, folder)
    headers = {**HEADERS, **bearer(url, args.caller)}
    data = RegionalData(args.residents + 1, seed=0)
    loads = [orjson.dumps(r.transaction()) for r in data.records(range(1, args.residents + 1))]
    rng = random.Random(2)
    trials = [
        [w2_transaction(data.record(rng.randrange(1, args.residents + 1))) for _ in range(args.transactions)]
        for _ in range(args.trials + 1)
    ]
    rebuild = "queued" if args.profile or args.split else "background"
    settings = Settings(database_url=url, export_dir=str(folder / "exports"), mpi_golden_rebuild=rebuild)

    async def run() -> None:
        app = create_app(settings)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://bench/fhir") as client,
        ):
            await client.post("", content=institutions_batch(), headers=headers)
            await post_all(client, loads, headers)
            if args.profile or args.split:
                await profile(app, client, trials, headers, cprofile=args.profile)
                return
            await post_all(client, trials[0], headers)  # warm-up
            drain(app)
            figures = []
            for bodies in trials[1:]:
                started = time.process_time()
                await post_all(client, bodies, headers)
                drain(app)
                figures.append((time.process_time() - started) * 1000 / len(bodies))
            backend = url.split(":", 1)[0]
            print(
                f"{backend} {args.caller}: CPU ms per W2 transaction (process, background drained): "
                f"min {min(figures):.2f}  all {' '.join(f'{f:.2f}' for f in figures)}"
            )

    try:
        asyncio.run(run())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def profile(
    app: Any, client: httpx.AsyncClient, trials: list[list[bytes]], headers: dict[str, str], *, cprofile: bool
) -> None:
    from ehr_archive.mpi import mpi_of

    mpi = mpi_of(app.state.context.service)
    engine = app.state.context.engine

    async def inline(func: Any, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    with mock.patch("fhir_server.api.app.run_in_threadpool", inline):
        await post_all(client, trials[0], headers)
        mpi.rebuild_pending(engine)
        bodies = [b for t in trials[1:] for b in t]
        request, rebuild = cProfile.Profile(time.thread_time), cProfile.Profile(time.thread_time)
        spent = [[], []]
        for body in bodies:  # one drain per transaction, as the background thread does at one client
            started = time.thread_time()
            if cprofile:
                request.enable()
            await post_all(client, [body], headers)
            if cprofile:
                request.disable()
            middle = time.thread_time()
            if cprofile:
                rebuild.enable()
            mpi.rebuild_pending(engine)
            if cprofile:
                rebuild.disable()
            spent[0].append(middle - started)
            spent[1].append(time.thread_time() - middle)
    for name, times in zip(("request", "golden rebuild"), spent, strict=True):
        times.sort()
        print(
            f"{name}: thread CPU ms per transaction{' (under cProfile)' if cprofile else ''}: "
            f"mean {sum(times) * 1000 / len(times):.2f}, median {times[len(times) // 2] * 1000:.2f}"
        )
    if not cprofile:
        return
    for name, profiler in (("request", request), ("golden rebuild", rebuild)):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(
            int(os.environ.get("W2_PROFILE_LINES", "60"))
        )
        print(f"== {name}\n{out.getvalue()}")


if __name__ == "__main__":
    main()
