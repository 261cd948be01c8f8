"""CPU time per read and per search in-process: the ASGI application called directly, no HTTP client or server.

Run from the repository root (about a minute on SQLite):

    .venv/bin/python bench/read_cpu.py [--database-url URL] [--requests 300] [--trials 7] [--profile on]

A fresh SQLite database in a temporary folder (or the database of ``--database-url``, which must be migrated and
empty) gets 50 residents with 3 readings each, written by an institution's client. Then the application is
created five ways, as ``bench/security_overhead.py`` serves it: "off" (authentication and audit off), "audit",
"auth" (the institution's token), "on" (both), "exch" (both, with an unrestricted exchange client's token) and
"other" (both, with the token of another institution, which reads by the residents' consent to sharing).
Each answers ``--requests`` reads of a Patient and half as many searches ``Observation?subject=…&_count=10``,
called as raw ASGI requests, one at a time, in ``--trials`` trials; the process's CPU time of the fastest trial is
reported per request (the audit writer's flush included; the request's unit of work runs where the server runs it:
a read by id on SQLite on the event loop, anything else in the thread pool). Because it is CPU time of one process,
other work on a shared machine changes it far less than wall-clock throughput. ``--profile SETTING`` prints a
cProfile of the reads of that setting (the unit of work run inline so that one profiler sees it).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import random
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import orjson

from fhir_server.access.codes import CONSENT_CATEGORY_SYSTEM, REGIONAL_SHARING

SCOPES = "system/Patient.cruds system/Observation.cruds system/Consent.cruds"
SETTINGS = {
    "off": (False, False),
    "audit": (False, True),
    "auth": (True, False),
    "on": (True, True),
    "exch": (True, True),
    "other": (True, True),
}


async def call(app: Any, method: str, path: str, query: bytes = b"", headers: Any = (), body: bytes = b"") -> tuple:
    """One HTTP request as an ASGI call: (status, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"bench"), *headers, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("bench", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    answer: dict[str, Any] = {"body": b""}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return answer["status"], answer["body"]


def token_headers(url: str, name: str, organization: str | None) -> list[tuple[bytes, bytes]]:
    from fhir_server.auth.cli import create_client, issue_token
    from fhir_server.config import load_settings
    from fhir_server.storage import create_db_engine

    settings = load_settings(database_url=url, auth_token_lifetime_seconds=3600)
    engine = create_db_engine(settings)
    scopes = SCOPES if organization else "system/*.*"
    client, _ = create_client(engine, name=name, scopes=scopes, organization=organization, exchange=not organization)
    token, _ = issue_token(engine, settings, client.client_id, lifetime=3600)
    engine.dispose()
    return [(b"authorization", f"Bearer {token}".encode())]


async def seed(app: Any, headers: list) -> list[str]:
    ids = []
    posted = [*headers, (b"content-type", b"application/fhir+json")]
    for n in range(50):
        patient = {"resourceType": "Patient", "name": [{"family": "陈", "given": ["建国"]}], "birthDate": f"19{40 + n}"}
        status, body = await call(app, "POST", "/fhir/Patient", headers=posted, body=orjson.dumps(patient))
        if status != 201:
            raise SystemExit(f"seeding failed: {status} {body[:200]!r}")
        ids.append(orjson.loads(body)["id"])
        for value in (128, 135, 142):
            reading = {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "subject": {"reference": f"Patient/{ids[-1]}"},
                "valueQuantity": {"value": value, "unit": "mm[Hg]"},
            }
            await call(app, "POST", "/fhir/Observation", headers=posted, body=orjson.dumps(reading))
        sharing = {
            "resourceType": "Consent",
            "status": "active",
            "scope": {"text": "privacy"},
            "category": [{"coding": [{"system": CONSENT_CATEGORY_SYSTEM, "code": REGIONAL_SHARING}]}],
            "patient": {"reference": f"Patient/{ids[-1]}"},
        }
        await call(app, "POST", "/fhir/Consent", headers=posted, body=orjson.dumps(sharing))
    return ids


async def cpu_per_request(app: Any, requests: list, headers: list, trials: int) -> float:
    """CPU ms per request of the fastest trial (the audit queue flushed inside the timing)."""
    best = float("inf")
    for _ in range(trials):
        app.state.audit.flush()
        started = time.process_time()
        for path, query in requests:
            status, body = await call(app, "GET", path, query, headers)
            if status != 200:
                raise SystemExit(f"{path}?{query.decode()}: {status} {body[:200]!r}")
        app.state.audit.flush()
        best = min(best, (time.process_time() - started) * 1000 / len(requests))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="a migrated, empty database (default: a temporary SQLite file)")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--settings", default=",".join(SETTINGS), help="which of off,audit,auth,on,exch,other")
    parser.add_argument("--profile", choices=tuple(SETTINGS), help="profile the reads of this setting")
    args = parser.parse_args()

    from fhir_server.api.app import create_app
    from fhir_server.config import Settings
    from fhir_server.migrations import upgrade
    from fhir_server.storage import create_db_engine

    folder = Path(tempfile.mkdtemp(prefix="read-cpu-"))
    url = args.database_url or f"sqlite:///{folder / 'bench.db'}"
    if not args.database_url:
        engine = create_db_engine(Settings(database_url=url))
        upgrade(engine)
        engine.dispose()
    hospital = token_headers(url, "bench hospital", "Organization/bench-hospital")
    exchange = token_headers(url, "bench exchange", None)
    clinic = token_headers(url, "bench clinic", "Organization/bench-clinic")
    callers = {"off": [], "audit": [], "auth": hospital, "on": hospital, "exch": exchange, "other": clinic}

    def application(auth: bool, audit: bool) -> Any:
        settings = Settings(database_url=url, auth_disabled=not auth, audit_enabled=audit, export_dir=folder)
        return create_app(settings)

    async def seeded() -> list[str]:
        app = application(True, True)
        async with app.router.lifespan_context(app):
            return await seed(app, hospital)

    ids = asyncio.run(seeded())
    rng = random.Random(1)
    reads = [(f"/fhir/Patient/{rng.choice(ids)}", b"") for _ in range(args.requests)]
    searches = [
        ("/fhir/Observation", f"subject=Patient/{rng.choice(ids)}&_count=10".encode())
        for _ in range(args.requests // 2)
    ]
    figures: dict[str, tuple[float, float]] = {}

    async def measure(name: str) -> None:
        app = application(*SETTINGS[name])
        headers = callers[name]
        async with app.router.lifespan_context(app):
            await cpu_per_request(app, reads[:50], headers, 1)
            if args.profile == name:
                await profile(app, reads, headers)
            figures[name] = (
                await cpu_per_request(app, reads, headers, args.trials),
                await cpu_per_request(app, searches, headers, args.trials),
            )

    for name in args.settings.split(","):
        asyncio.run(measure(name))
    print(
        f"CPU ms per request, in-process, fastest of {args.trials} trials ({args.requests} reads, "
        f"{args.requests // 2} searches); overhead = 1 - off / setting"
    )
    print(f"{'setting':8} {'read':>8} {'search':>8} {'read +':>8} {'search +':>9}")
    base = figures.get("off")
    for name, (read, search) in figures.items():
        extra = f"{1 - base[0] / read:8.1%} {1 - base[1] / search:9.1%}" if base else ""
        print(f"{name:8} {read:8.3f} {search:8.3f} {extra}")


async def profile(app: Any, reads: list, headers: list) -> None:
    async def inline(func: Any, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    profiler = cProfile.Profile(time.thread_time)
    with mock.patch("fhir_server.api.app.run_in_threadpool", inline):
        profiler.enable()
        await cpu_per_request(app, reads, headers, 1)
        profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(45)
    print(out.getvalue())


if __name__ == "__main__":
    main()
