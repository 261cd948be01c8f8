"""CPU time per ``Patient/$everything`` in-process (W5 of the regional suite): the ASGI application called directly.

Run from the repository root, against a migrated database holding the W5 resident (record 0 of
``bench.regional.generate`` with ``--heavy 1000``, loaded with ``hie import``):

    .venv/bin/python -m bench.everything_cpu --database-url URL --patient ID [--requests 10] [--trials 5]
        [--profile exch|inst]

Two callers, authentication and audit on: "exch" (an exchange client, no filter) and "inst" (an institution's
client reading the resident's record through their regional-sharing Consent, which the script records once).
Each request is W5's: every page of ``$everything?_count=1000``. The process's CPU time of the fastest trial is
reported per request (audit flush included); ``--profile`` prints a cProfile of one caller's requests with the
unit of work run inline.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import re
import time
from pathlib import Path
from typing import Any
from unittest import mock

import orjson

from bench.read_cpu import call
from fhir_server.access.codes import CONSENT_CATEGORY_SYSTEM, REGIONAL_SHARING

SORT = "tottime"
_NEXT = re.compile(rb'"relation":"next","url":"([^"]+)"')
INSTITUTION = "Organization/wz-org-001"


def bearer(url: str, name: str, organization: str | None) -> list[tuple[bytes, bytes]]:
    from fhir_server.auth.cli import create_client, issue_token
    from fhir_server.config import load_settings
    from fhir_server.storage import create_db_engine

    settings = load_settings(database_url=url, auth_token_lifetime_seconds=3600)
    engine = create_db_engine(settings)
    scopes = "system/*.rs system/Consent.cruds"
    client, _ = create_client(engine, name=name, scopes=scopes, organization=organization, exchange=not organization)
    token, _ = issue_token(engine, settings, client.client_id, lifetime=3600)
    engine.dispose()
    return [(b"authorization", f"Bearer {token}".encode())]


async def share(app: Any, headers: list, patient_id: str) -> None:
    """The resident's regional-sharing Consent, unless one is recorded already."""
    status, body = await call(app, "GET", "/fhir/Consent", f"patient={patient_id}".encode(), headers)
    if status == 200 and orjson.loads(body).get("total"):
        return
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"text": "privacy"},
        "category": [{"coding": [{"system": CONSENT_CATEGORY_SYSTEM, "code": REGIONAL_SHARING}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
    }
    posted = [*headers, (b"content-type", b"application/fhir+json")]
    status, body = await call(app, "POST", "/fhir/Consent", headers=posted, body=orjson.dumps(consent))
    if status != 201:
        raise SystemExit(f"recording the Consent failed: {status} {body[:200]!r}")


async def everything(app: Any, headers: list, patient_id: str) -> int:
    """Every page of W5's request; returns the number of entries."""
    path, query = f"/fhir/Patient/{patient_id}/$everything", b"_count=1000"
    entries = 0
    while path:
        status, body = await call(app, "GET", path, query, headers)
        if status != 200:
            raise SystemExit(f"{path}?{query.decode()}: {status} {body[:200]!r}")
        entries += body.count(b'"fullUrl":')  # not parsed: the client's work is not the server's CPU
        following = _NEXT.search(body)
        path, _, rest = following.group(1).decode().partition("?") if following else ("", "", "")
        path, query = path[path.index("/fhir/") :] if path else "", rest.encode()
    return entries


def server_cpu(url: str) -> float:
    """CPU seconds used so far by the PostgreSQL backends connected to the database of ``url`` (0 on SQLite):
    their ``/proc/{pid}/stat`` user and system time, so run on the database's own machine."""
    if not url.startswith("postgresql"):
        return 0.0
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    conninfo = f"host={parsed.host or '127.0.0.1'} port={parsed.port or 5432} user={parsed.username} dbname=postgres"
    with psycopg.connect(conninfo) as conn:
        pids = [
            pid for (pid,) in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [parsed.database])
        ]
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def cpu_per_request(app: Any, headers: list, patient_id: str, requests: int, trials: int, url: str) -> tuple:
    """(process CPU ms, database server CPU ms) per request, each the fastest of ``trials``."""
    best, best_server = float("inf"), float("inf")
    for _ in range(trials):
        app.state.audit.flush()
        server = server_cpu(url)
        started = time.process_time()
        for _ in range(requests):
            await everything(app, headers, patient_id)
        app.state.audit.flush()
        best = min(best, (time.process_time() - started) * 1000 / requests)
        best_server = min(best_server, (server_cpu(url) - server) * 1000 / requests)
    return best, best_server


async def profile(app: Any, headers: list, patient_id: str, requests: int) -> None:
    async def inline(func: Any, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    profiler = cProfile.Profile(time.thread_time)
    with mock.patch("fhir_server.api.app.run_in_threadpool", inline):
        profiler.enable()
        await cpu_per_request(app, headers, patient_id, requests, 1, "")
        profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats(SORT).print_stats(45)
    print(out.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="a migrated database holding the W5 resident")
    parser.add_argument("--patient", required=True, help="id of the W5 resident's Patient")
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--callers", default="exch,inst")
    parser.add_argument("--profile", choices=("exch", "inst"))
    args = parser.parse_args()

    from fhir_server.api.app import create_app
    from fhir_server.config import Settings

    app = create_app(Settings(database_url=args.database_url))
    callers = {
        "exch": bearer(args.database_url, "everything bench exchange", None),
        "inst": bearer(args.database_url, "everything bench institution", INSTITUTION),
    }

    async def measure() -> None:
        async with app.router.lifespan_context(app):
            await share(app, callers["exch"], args.patient)
            for name in args.callers.split(","):
                entries = await everything(app, callers[name], args.patient)
                if args.profile == name:
                    await profile(app, callers[name], args.patient, args.requests)
                cpu, server = await cpu_per_request(
                    app, callers[name], args.patient, args.requests, args.trials, args.database_url
                )
                print(f"{name}: {entries} entries, CPU ms per request {cpu:.1f} + database server {server:.1f}")

    asyncio.run(measure())


if __name__ == "__main__":
    main()
