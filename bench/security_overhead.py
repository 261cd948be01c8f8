"""What authentication and the audit trail cost: read and search throughput with each on and off.

Run from the repository root (two to three minutes with the defaults):

    .venv/bin/python bench/security_overhead.py [--backend sqlite|postgres] [--requests N] [--clients C]

It creates a fresh database (``hie db upgrade``) and registers two institutions' clients, a hospital and a
clinic, and takes a token for each. Through a server with authentication on, the hospital creates half of the
residents (with blood-pressure readings) and the clinic the other half, each of the clinic's residents with a
regional-sharing Consent permitting the hospital. The measured caller is the hospital's client: a restricted
principal, so every read and search carries the institution and consent conditions, half of them answered by
ownership and half by a resident's consent (the realistic case of an exchange). It gathers planner statistics
(``ANALYZE``; a running database has them through autovacuum). Then it serves the database with ``hie serve``
on 127.0.0.1 five ways: "off" (``HIE_AUTH_DISABLED=true``, ``HIE_AUDIT_ENABLED=false``), "audit" only, "auth"
only (bearer tokens checked, scopes and institution filters applied), "on" (both), and "exch" (both, with the
token of an unrestricted exchange client, for comparison); each answers ``--requests`` reads of a Patient and
``--requests`` searches ``Observation?subject=…`` from ``--clients`` concurrent connections, in ``--rounds``
rounds of alternating order; the best round of each is kept (the machine may be shared). It prints req/s, p50
and p99 and the throughput lost against "off", the audit trail's batches (from the servers' log lines at
shutdown), and checks the audit chain the audited rounds wrote.

PostgreSQL: ``--postgres-url`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/hie_security_bench``, a
database of its own so that other benchmarks can run meanwhile) names a scratch database that is dropped and
created again, and dropped at the end. Only loopback addresses are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import random
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from scratch_db import check_loopback, postgres_version, recreate_postgres
from serve import HieServe, hie_command

FHIR_JSON = "application/fhir+json"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/hie_security_bench"
ORGANIZATION = "Organization/bench-hospital"
CLINIC = "Organization/bench-clinic"
SCOPES = "system/Patient.cruds system/Observation.cruds system/Consent.cruds"
SHARING = {
    "coding": [{"system": "https://hie.wuzhou.gov.cn/fhir/CodeSystem/consent-category", "code": "regional-sharing"}]
}
RECIPIENT = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]}


class Server(HieServe):
    """``hie serve`` on the bench database with extra environment, as a context manager."""

    def __init__(self, database_url: str, env: dict[str, str], workers: int, log_path: Path) -> None:
        super().__init__({**os.environ, "HIE_DATABASE_URL": database_url, **env}, workers, log_path)

    def __enter__(self) -> Server:
        try:
            self.start(timeout=60)
        except RuntimeError as failed:
            raise SystemExit(f"{failed}\n(full log: {self.log_path})") from failed
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def group_cpu_seconds(group: int) -> float:
    """User + system CPU time of the live processes of a process group (Linux ``/proc``; NaN elsewhere)."""
    total, ticks = 0.0, os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        entries = os.listdir("/proc")
    except OSError:
        return float("nan")
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == group:  # pgrp
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return total


@dataclass
class Figures:
    label: str
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    failures: int = 0
    cpu_seconds: float = float("nan")
    """CPU time the server's processes spent on the requests (not the database server's)."""

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_seconds / len(self.latencies) if self.latencies else float("nan")

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000 if ordered else float("nan")


async def drive(base: str, headers: dict[str, str], paths: list[str], clients: int, label: str) -> Figures:
    """GET every path from ``clients`` concurrent connections; time each from send to full response."""
    figures = Figures(label)
    queue = iter(paths)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as client:

        async def worker() -> None:
            for path in queue:
                started = time.perf_counter()
                response = await client.get(path)
                if response.status_code != 200:
                    figures.failures += 1
                    continue
                figures.latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        figures.seconds = time.perf_counter() - started
    return figures


async def seed(base: str, headers: dict[str, str], residents: int, *, shared_with: str | None = None) -> list[str]:
    """Residents with three blood-pressure readings each, created by one institution's client; with
    ``shared_with``, each resident also consents to regional sharing with that institution."""
    ids: list[str] = []
    rng = random.Random(5 if shared_with is None else 6)
    async with httpx.AsyncClient(base_url=base, headers={**headers, "Content-Type": FHIR_JSON}, timeout=60) as client:
        for n in range(residents):
            patient = {
                "resourceType": "Patient",
                "name": [{"family": rng.choice("陈李黄莫韦覃蒙梁"), "given": ["建国"]}],
                "gender": rng.choice(["male", "female"]),
                "birthDate": f"19{40 + n % 50}-0{1 + n % 9}-1{n % 9}",
            }
            response = await client.post("/Patient", content=orjson.dumps(patient))
            if response.status_code != 201:
                raise SystemExit(f"seeding failed: HTTP {response.status_code} {response.text[:300]}")
            pid = response.json()["id"]
            ids.append(pid)
            for _ in range(3):
                reading = {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                    "subject": {"reference": f"Patient/{pid}"},
                    "valueQuantity": {"value": rng.randint(105, 175), "unit": "mm[Hg]"},
                }
                await client.post("/Observation", content=orjson.dumps(reading))
            if shared_with is not None:
                consent = {
                    "resourceType": "Consent",
                    "status": "active",
                    "scope": {"text": "privacy"},
                    "category": [SHARING],
                    "patient": {"reference": f"Patient/{pid}"},
                    "provision": {
                        "type": "permit",
                        "actor": [{"role": RECIPIENT, "reference": {"reference": shared_with}}],
                    },
                }
                response = await client.post("/Consent", content=orjson.dumps(consent))
                if response.status_code != 201:
                    raise SystemExit(f"seeding failed: HTTP {response.status_code} {response.text[:300]}")
    return ids


def register(database_url: str, name: str, organization: str | None, scopes: str = SCOPES) -> dict[str, str]:
    """A client and a bearer token for it (as ``hie auth client create`` / ``hie auth token``); no organization:
    a client acting for the exchange itself (unrestricted)."""
    from fhir_server.auth.cli import create_client, issue_token
    from fhir_server.config import load_settings
    from fhir_server.storage import create_db_engine

    settings = load_settings(database_url=database_url, auth_token_lifetime_seconds=3600)
    engine = create_db_engine(settings)
    exchange = organization is None
    client, _ = create_client(engine, name=name, scopes=scopes, organization=organization, exchange=exchange)
    token, _ = issue_token(engine, settings, client.client_id, lifetime=3600)
    engine.dispose()
    return {"Authorization": f"Bearer {token}"}


def gather_statistics(database_url: str) -> None:
    """Planner statistics of the seeded tables, as a running database has them (autovacuum); without them
    PostgreSQL plans the consent conditions blind (row estimates of 1) and tests them on every row of a type."""
    from fhir_server.config import load_settings
    from fhir_server.storage import create_db_engine

    engine = create_db_engine(load_settings(database_url=database_url))
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
        else:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def audit_chain(database_url: str) -> str:
    from fhir_server.audit import verify
    from fhir_server.config import load_settings
    from fhir_server.storage import create_db_engine

    engine = create_db_engine(load_settings(database_url=database_url))
    checked, _, broken = verify(engine)
    engine.dispose()
    return f"{checked} audit events, chain {'OK' if broken is None else f'BROKEN at seq {broken.seq}'}"


_BATCHES = re.compile(rb"wrote (\d+) audit events in (\d+) batches \(largest (\d+)\)")


def audit_batches(log: Path, offset: int) -> list[tuple[int, int, int]]:
    """(events, batches, largest batch) of each audit trail that stopped since ``offset`` of the server log."""
    with log.open("rb") as file:
        file.seek(offset)
        return [(int(a), int(b), int(c)) for a, b, c in _BATCHES.findall(file.read())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--requests", type=int, default=600, help="reads, and searches, per round and setting")
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections")
    parser.add_argument("--residents", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None, help="uvicorn workers (default 1 SQLite, 2 PostgreSQL)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="a scratch database (dropped and created)")
    args = parser.parse_args()
    workers = args.workers or (1 if args.backend == "sqlite" else 2)
    workdir = Path(tempfile.mkdtemp(prefix="hie-security-bench-"))
    if args.backend == "sqlite":
        database_url, engine_note = f"sqlite:///{workdir / 'bench.db'}", "SQLite (WAL)"
    else:
        check_loopback(args.postgres_url)
        recreate_postgres(args.postgres_url)
        database_url, engine_note = args.postgres_url, postgres_version(args.postgres_url)
    env = {**os.environ, "HIE_DATABASE_URL": database_url}
    done = subprocess.run([hie_command(), "db", "upgrade"], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"`hie db upgrade` failed:\n{done.stdout}\n{done.stderr}")
    headers = register(database_url, "bench HIS", ORGANIZATION)
    clinic = register(database_url, "bench clinic", CLINIC)
    exchange = register(database_url, "bench exchange", None, "system/*.*")
    settings = {
        "off": ({"HIE_AUTH_DISABLED": "true", "HIE_AUDIT_ENABLED": "false"}, {}),
        "audit": ({"HIE_AUTH_DISABLED": "true", "HIE_AUDIT_ENABLED": "true"}, {}),
        "auth": ({"HIE_AUTH_DISABLED": "false", "HIE_AUDIT_ENABLED": "false"}, headers),
        "on": ({"HIE_AUTH_DISABLED": "false", "HIE_AUDIT_ENABLED": "true"}, headers),
        "exch": ({"HIE_AUTH_DISABLED": "false", "HIE_AUDIT_ENABLED": "true"}, exchange),
    }
    common = {"HIE_BACKGROUND": "off", "HIE_RATE_LIMIT_PER_SECOND": "0"}
    log = workdir / "server.log"
    print(
        f"{platform.node()} · {os.cpu_count()} cores · load {os.getloadavg()[0]:.2f} · {engine_note} · "
        f"{workers} worker(s) · {args.clients} clients · {args.requests} requests per cell · "
        f"caller: an institution's client ({ORGANIZATION}), half of the records shared with it by consent"
    )
    try:
        with Server(database_url, {**common, **settings["on"][0]}, workers, log) as server:
            ids = asyncio.run(seed(server.base, headers, args.residents - args.residents // 2))
            ids += asyncio.run(seed(server.base, clinic, args.residents // 2, shared_with=ORGANIZATION))
        gather_statistics(database_url)
        rng = random.Random(7)
        reads = [f"/Patient/{rng.choice(ids)}" for _ in range(args.requests)]
        searches = [f"/Observation?subject=Patient/{rng.choice(ids)}&_count=10" for _ in range(args.requests)]
        best: dict[tuple[str, str], Figures] = {}
        cpu_ms: dict[tuple[str, str], float] = {}
        batches: dict[str, list[tuple[int, int, int]]] = {}
        for round_number in range(args.rounds):
            order = list(settings) if round_number % 2 == 0 else list(reversed(settings))
            for name in order:
                env_extra, auth = settings[name]
                logged = log.stat().st_size if log.exists() else 0
                with Server(database_url, {**common, **env_extra}, workers, log) as server:
                    asyncio.run(drive(server.base, auth, reads[:50], args.clients, "warm-up"))
                    for kind, paths in (("read", reads), ("search", searches)):
                        cpu = group_cpu_seconds(server.group)
                        figures = asyncio.run(drive(server.base, auth, paths, args.clients, f"{kind} {name}"))
                        time.sleep(0.5)  # the audit trail's writer thread flushes every 0.2 s
                        figures.cpu_seconds = group_cpu_seconds(server.group) - cpu
                        if figures.failures:
                            raise SystemExit(f"{figures.failures} failed requests in {figures.label}; see {log}")
                        key = (kind, name)
                        if key not in best or figures.throughput > best[key].throughput:
                            best[key] = figures
                        cpu_ms[key] = min(cpu_ms.get(key, math.inf), figures.cpu_ms)
                batches.setdefault(name, []).extend(audit_batches(log, logged))
        print(
            f"\n{'workload':<10}{'setting':<8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'overhead':>10}"
            f"{'CPU ms/req':>12}{'CPU overhead':>14}"
        )
        for kind in ("read", "search"):
            off, off_cpu = best[(kind, "off")].throughput, cpu_ms[(kind, "off")]
            for name in settings:
                f, cpu = best[(kind, name)], cpu_ms[(kind, name)]
                cost = f"{100 * (off - f.throughput) / off:.1f}%" if name != "off" else ""
                cpu_cost = f"{100 * (1 - off_cpu / cpu):.1f}%" if name != "off" else ""
                print(
                    f"{kind:<10}{name:<8}{f.throughput:>9.0f}{f.percentile(50):>9.1f}{f.percentile(99):>9.1f}{cost:>10}"
                    f"{cpu:>12.2f}{cpu_cost:>14}"
                )
        print(
            "\nreq/s, p50, p99: the best round; CPU ms/req: the least CPU time of the server's processes per request"
            "\nover the rounds (the database server's not counted); CPU overhead: the throughput a CPU-bound server"
            "\nloses against 'off' (1 - cpu_off / cpu)."
        )
        for name, counts in batches.items():
            if counts:
                events, written = sum(c[0] for c in counts), sum(c[1] for c in counts)
                largest = max(c[2] for c in counts)
                print(
                    f"audit batches ({name}): {written}, of {events / written:.0f} events on average, largest {largest}"
                )
        print("\n" + audit_chain(database_url))
    finally:
        if args.backend == "postgres":
            recreate_postgres(args.postgres_url, drop_only=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
