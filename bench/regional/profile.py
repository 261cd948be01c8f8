"""Where W1's and W3's time goes: the ASGI app in-process under cProfile, on a scratch SQLite database.

Requests go through the whole application (routing, JSON, validation, SQL, response) with ``httpx.ASGITransport``;
the unit of work, which the server runs in a thread pool, runs inline here so that one profiler sees all of it.
The profiler's clock is the thread's CPU time, so other work on a shared machine does not show up as cost. The
report lists the share of time per package, the project's functions by cumulative time and the functions with the
most own time.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import orjson

from bench.regional.generate import RegionalData, institutions_batch

__all__ = ["profile_paths"]

_PACKAGES = (
    ("fhir_server/search", "fhir_server.search (index extraction, search)"),
    ("fhir_server/validation", "fhir_server.validation"),
    ("fhir_server", "fhir_server (other)"),
    ("ehr_archive", "ehr_archive"),
    ("fhir/resources", "fhir.resources models"),
    ("pydantic", "pydantic"),
    ("sqlalchemy", "SQLAlchemy"),
    ("psycopg", "psycopg"),
    ("starlette", "Starlette/FastAPI"),
    ("fastapi", "Starlette/FastAPI"),
    ("anyio", "anyio/asyncio"),
    ("asyncio", "anyio/asyncio"),
    ("httpx", "httpx (client side)"),
    ("httpcore", "httpx (client side)"),
)


_OWN = ("fhir_server/", "ehr_archive/")


def _package(filename: str) -> str:
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins (C: sqlite3, orjson, zlib, …)"
    path = filename.replace(os.sep, "/")
    for needle, label in _PACKAGES:
        if f"/{needle}/" in path or path.endswith(f"/{needle}.py"):
            return label
    return "other Python"


def _summarise(profiler: cProfile.Profile, units: int, top: int) -> dict[str, Any]:
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_cc, _nc, tt, _ct, _callers) in entries.values())
    shares: defaultdict[str, float] = defaultdict(float)
    functions = []
    for (filename, line, name), (_cc, calls, tt, ct, _callers) in entries.items():
        shares[_package(filename)] += tt
        short = filename.split("site-packages/")[-1].split("/main/")[-1] if not filename.startswith("~") else ""
        functions.append((tt, ct, calls, f"{short}:{line} {name}" if short else name))
    functions.sort(reverse=True)
    own_code = sorted(
        ((ct, calls, where) for _tt, ct, calls, where in functions if where.startswith(_OWN)), reverse=True
    )
    return {
        "cumulative": [(ct * 1000 / max(units, 1), calls, where) for ct, calls, where in own_code[:top]],
        "ms per unit": total * 1000 / max(units, 1),
        "packages": sorted(((s / total, label) for label, s in shares.items()), reverse=True),
        "functions": [
            (tt * 1000 / max(units, 1), ct * 1000 / max(units, 1), calls, where)
            for tt, ct, calls, where in functions[:top]
        ],
    }


async def _inline(func: Any, *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


def profile_paths(workdir: Path, *, residents: int = 60, reads: int = 600, seed: int = 0, top: int = 18) -> dict:
    """Profiles of W1 (transaction Bundles of ``residents`` residents) and W3 (``reads`` reads by id)."""
    from fhir_server.api.app import create_app
    from fhir_server.config import Settings
    from fhir_server.migrations import upgrade
    from fhir_server.storage import create_db_engine

    path = workdir / "profile.db"
    path.unlink(missing_ok=True)
    auth_off = {"auth_disabled": True} if "auth_disabled" in Settings.model_fields else {}
    settings = Settings(database_url=f"sqlite:///{path}", export_dir=str(workdir / "profile-exports"), **auth_off)
    engine = create_db_engine(settings)
    upgrade(engine)
    engine.dispose()
    data = RegionalData(residents + 4, seed=seed)
    warm_up = [orjson.dumps(r.transaction()) for r in data.records(range(residents + 1, residents + 4))]
    plain_records = list(RegionalData(2 * residents + 4, seed=seed).records(range(residents + 4, 2 * residents + 4)))
    plain = [orjson.dumps(r.transaction()) for r in plain_records]
    plain_resources = sum(len(r.resources) for r in plain_records)
    bundles = [orjson.dumps(r.transaction()) for r in data.records(range(1, residents + 1))]
    resources = sum(len(r.resources) for r in data.records(range(1, residents + 1)))
    headers = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}
    results: dict[str, Any] = {}

    async def run() -> None:
        app = create_app(settings)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://bench/fhir") as client,
        ):
            (await client.post("", content=institutions_batch(), headers=headers)).raise_for_status()
            locations = []
            for body in warm_up:
                (await client.post("", content=body, headers=headers)).raise_for_status()
            started = time.thread_time()
            for body in plain:
                (await client.post("", content=body, headers=headers)).raise_for_status()
            plain_ms = (time.thread_time() - started) * 1000 / plain_resources
            profiler = cProfile.Profile(time.thread_time)
            started = time.thread_time()
            profiler.enable()
            for body in bundles:
                answer = await client.post("", content=body, headers={**headers, "Prefer": "return=representation"})
                if answer.status_code != 200:
                    raise RuntimeError(f"profile ingest failed: {answer.status_code} {answer.text[:300]}")
                locations += [e["response"]["location"] for e in orjson.loads(answer.content)["entry"]]
            profiler.disable()
            wall = time.thread_time() - started
            results["W1"] = _summarise(profiler, resources, top) | {
                "wall ms per resource": wall * 1000 / resources,
                "plain ms": plain_ms,
                "units": f"{resources} resources in {len(bundles)} "
                "transaction Bundles (return=representation, to learn the ids)",
            }
            rng = random.Random(seed)
            paths = ["/".join(rng.choice(locations).split("/")[:2]) for _ in range(reads)]
            started = time.thread_time()
            for read_path in paths:
                (await client.get(read_path)).raise_for_status()
            plain_ms = (time.thread_time() - started) * 1000 / reads
            profiler = cProfile.Profile(time.thread_time)
            started = time.thread_time()
            profiler.enable()
            for read_path in paths:
                answer = await client.get(read_path)
                if answer.status_code != 200:
                    raise RuntimeError(f"profile read failed: {answer.status_code} {answer.text[:300]}")
            profiler.disable()
            wall = time.thread_time() - started
            results["W3"] = _summarise(profiler, reads, top) | {
                "wall ms per resource": wall * 1000 / reads,
                "plain ms": plain_ms,
                "units": f"{reads} reads by id",
            }

    with mock.patch("fhir_server.api.app.run_in_threadpool", _inline):
        asyncio.run(run())
    return results


def profile_lines(results: dict[str, Any]) -> list[str]:
    """The profiles as Markdown."""
    lines = []
    for workload, result in results.items():
        lines += [
            "",
            f"### Profile of {workload} in-process ({result['units']})",
            "",
            f"CPU time {result['plain ms']:.2f} ms per unit without the profiler (client included, in one thread); "
            f"{result['wall ms per resource']:.2f} ms under cProfile, which adds its own overhead to every call, "
            "so read the shares rather than the absolute figures below.",
            "",
            "| package | share of time |",
            "| --- | ---: |",
        ]
        lines += [f"| {label} | {share:.0%} |" for share, label in result["packages"] if share >= 0.005]
        lines += ["", "| project function | cumulative ms/unit | calls |", "| --- | ---: | ---: |"]
        lines += [f"| `{where}` | {cum:.3f} | {calls} |" for cum, calls, where in result["cumulative"]]
        lines += ["", "| function | own ms/unit | cumulative ms/unit | calls |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| `{where}` | {own:.3f} | {cum:.3f} | {calls} |" for own, cum, calls, where in result["functions"]]
    return lines
