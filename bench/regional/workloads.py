"""The workloads of the suite (W1–W8) against a running ``hie serve``, and the bulk load through ``hie import``.

Each function takes the server's base URL and the generated data and returns :class:`Cell` rows. Counts are
bounded by the :class:`Plan`; every request has a time limit, so a run always ends.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from bench.regional.generate import RegionalData, ResidentRecord, institutions_batch, write_ndjson
from bench.regional.load import (
    FHIR_JSON,
    Cell,
    Client,
    LatencyRecorder,
    auth_headers,
    expect,
    open_client,
    progress,
    run_clients,
)
from bench.regional.server import Database, Server, hie_command, server_env
from ehr_archive.identifiers import RESIDENT_ID_SYSTEM

__all__ = [
    "Plan",
    "SyntheaBundle",
    "bulk_import",
    "load_institutions",
    "synthea_bundles",
    "w1_ingest",
    "w1s_synthea",
    "w2_small_transactions",
    "w3_read",
    "w4_search",
    "w5_everything",
    "w7_export",
    "w8_footprint",
]

_HEADERS = {"Content-Type": FHIR_JSON, "Prefer": "return=minimal"}
W4_QUERIES = ("token + patient", "token + date range", "string prefix", "chained", "_include")


@dataclass
class Plan:
    """How much work each workload does (the smoke size keeps every count tiny)."""

    w1_residents: int = 200
    w1_clients: int = 4
    synthea_bundles: int = 0  # W1s: how many of the corpus's Synthea Bundles (0: all), the smallest when limited
    synthea_clients: int = 4
    w2_transactions: int = 200
    w2_clients: tuple[int, ...] = (1, 8, 32)
    w3_reads: int = 1000
    w3_clients: tuple[int, ...] = (1, 8)
    w4_requests: int = 100
    w4_clients: int = 4
    w4_time_limit: float = 90.0
    w4_request_timeout: float = 60.0
    w5_requests: int = 20
    w7_exports: int = 1
    time_limit: float = 300.0
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _cell(workload: str, db: Database, label: str, clients: int, recorder: LatencyRecorder, **kw: Any) -> Cell:
    return Cell(workload, db.backend, label, clients, recorder, **kw)


def load_institutions(base: str) -> None:
    """The region's Organizations with their fixed ids (PUT in one batch); not measured."""
    answer = httpx.post(base, content=institutions_batch(), headers={**_HEADERS, **auth_headers()}, timeout=120)
    answer.raise_for_status()


def w2_transaction(record: ResidentRecord) -> bytes:
    """W2's transaction for one resident's record: a new registration (the Patient with its resident ID card
    only) and one of its Observations, referring to it by ``urn:uuid``."""
    patient = {k: v for k, v in record.patient.items() if k != "id"}
    patient["identifier"] = patient["identifier"][:1]
    observation = next(r for r in record.resources if r["resourceType"] == "Observation")
    observation = {k: v for k, v in observation.items() if k not in ("id", "encounter")}
    observation["subject"] = {"reference": "urn:uuid:7a1d6c8e-0000-4000-8000-000000000001"}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:7a1d6c8e-0000-4000-8000-000000000001",
                "resource": patient,
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": observation, "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    return orjson.dumps(bundle)


async def w1_ingest(base: str, db: Database, records: list[ResidentRecord], plan: Plan) -> Cell:
    """W1: one transaction Bundle per resident, ``w1_clients`` uploaders; resources/s and bundle p50/p99."""
    bodies = [orjson.dumps(r.transaction()) for r in records]
    sizes = [len(r.resources) for r in records]

    async def send(client: Client, i: int) -> tuple[bool, int, str]:
        return expect(200, await client.post("", content=bodies[i], headers=_HEADERS), sizes[i])

    recorder = await run_clients(
        base, send, total=len(bodies), clients=plan.w1_clients, label="W1 ingest", time_limit=plan.time_limit
    )
    return _cell("W1", db, "ingest transaction Bundles", plan.w1_clients, recorder, resources=sum(sizes), unit="res/s")


@dataclass(frozen=True)
class SyntheaBundle:
    """One Synthea transaction Bundle of the shared corpus, sent byte for byte as it is on disk."""

    name: str
    body: bytes
    entries: int


def synthea_bundles(limit: int = 0) -> list[SyntheaBundle]:
    """The Bundles of ``$HIE_CORPUS_DIR/synthea/*.json`` in name order (``limit``: only the smallest ``limit``).

    Raises FileNotFoundError with the reason when the corpus is not there.
    """
    value = os.environ.get("HIE_CORPUS_DIR")
    if not value:
        raise FileNotFoundError("W1s needs the shared corpus: HIE_CORPUS_DIR is not set")
    folder = Path(value) / "synthea"
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not paths:
        raise FileNotFoundError(f"W1s needs Synthea Bundles: no *.json in $HIE_CORPUS_DIR/{folder.name}")
    if limit:
        paths = sorted(sorted(paths, key=lambda p: p.stat().st_size)[:limit])
    bundles = []
    for path in paths:
        body = path.read_bytes()
        bundles.append(SyntheaBundle(path.name, body, len(orjson.loads(body).get("entry") or [])))
    return bundles


async def w1s_synthea(base: str, db: Database, bundles: list[SyntheaBundle], plan: Plan) -> Cell:
    """W1s: the corpus's Synthea transaction Bundles as they are, ``synthea_clients`` uploaders; resources/s,
    Bundle p50/p99, the Bundle sizes and every distinct failure reason."""
    reasons: Counter[str] = Counter()

    async def send(client: Client, i: int) -> tuple[bool, int, str]:
        bundle = bundles[i]
        good, units, reason = expect(200, await client.post("", content=bundle.body, headers=_HEADERS), bundle.entries)
        if not good:
            reasons[reason[:120].replace("|", "/").replace("\n", " ")] += 1
            reason = f"{bundle.name}: {reason}"
        return good, units, reason

    recorder = await run_clients(
        base,
        send,
        total=len(bundles),
        clients=plan.synthea_clients,
        label="W1s Synthea ingest",
        time_limit=plan.time_limit,
    )
    sizes = [b.entries for b in bundles]
    extra: dict[str, Any] = {
        "bundles": len(bundles),
        "entries min/median/max": f"{min(sizes)}/{statistics.median(sizes):.0f}/{max(sizes)}",
    }
    if reasons:
        extra["failure reasons"] = "; ".join(f"{n}× {reason}" for reason, n in reasons.most_common(3))
    return _cell(
        "W1s",
        db,
        "ingest Synthea transaction Bundles (as is)",
        plan.synthea_clients,
        recorder,
        resources=sum(sizes),
        unit="res/s",
        extra=extra,
    )


async def w2_small_transactions(base: str, db: Database, data: RegionalData, plan: Plan) -> list[Cell]:
    """W2: transactions of one new Patient and one Observation about them, at each concurrency."""
    cells = []
    rng = random.Random(plan.seed + 2)
    for clients in plan.w2_clients:
        bodies = []
        for _ in range(plan.w2_transactions):
            bodies.append(w2_transaction(data.record(rng.randrange(1, len(data)))))

        async def send(client: Client, i: int, bodies: list[bytes] = bodies) -> tuple[bool, int, str]:
            return expect(200, await client.post("", content=bodies[i], headers=_HEADERS))

        recorder = await run_clients(
            base, send, total=len(bodies), clients=clients, label=f"W2 ×{clients}", time_limit=plan.time_limit
        )
        cells.append(_cell("W2", db, "transaction Patient + Observation", clients, recorder, unit="tx/s"))
    return cells


def bulk_import(db: Database, data: RegionalData, indexes: list[int], workdir: Path, export_dir: Path) -> Cell:
    """The bulk path: NDJSON of these residents written, then loaded with ``hie import`` (timed, with startup)."""
    folder = workdir / f"ndjson-{indexes[0]}-{indexes[-1]}"
    progress(f"writing NDJSON of {len(indexes)} residents")
    counts = write_ndjson(data.records(indexes), folder, with_institutions=False)
    total = sum(counts.values())
    progress(f"hie import of {total} resources ({db.backend})")
    recorder = LatencyRecorder()
    recorder.started = time.perf_counter()
    done = subprocess.run(
        [hie_command(), "import", str(folder), "--batch", "500"],
        env=server_env(db.url, export_dir),
        capture_output=True,
        text=True,
        check=False,
    )
    recorder.ended = time.perf_counter()
    if done.returncode != 0:
        recorder.fail(f"hie import exited with {done.returncode}: {done.stderr[-300:]}")
    else:
        recorder.ok(recorder.ended - recorder.started, total)
    rejected = [line for line in done.stdout.splitlines() if line.startswith("accepted ")]
    return Cell(
        "load",
        db.backend,
        "bulk import (hie import, NDJSON)",
        1,
        recorder,
        resources=total,
        unit="res/s",
        extra={"report": rejected[-1] if rejected else "", "files": len(counts)},
    )


def _targets(data: RegionalData, indexes: list[int], count: int, seed: int) -> list[ResidentRecord]:
    rng = random.Random(seed)
    return [data.record(rng.choice(indexes)) for _ in range(count)]


async def w3_read(base: str, db: Database, data: RegionalData, indexes: list[int], plan: Plan) -> list[Cell]:
    """W3: read by id of random resources of the bulk-loaded residents, at each concurrency."""
    rng = random.Random(plan.seed + 3)
    cells = []
    for clients in plan.w3_clients:
        paths = [
            "{resourceType}/{id}".format(**rng.choice(record.resources))
            for record in _targets(data, indexes, plan.w3_reads, plan.seed + clients)
        ]

        async def send(client: Client, i: int, paths: list[str] = paths) -> tuple[bool, int, str]:
            return expect(200, await client.get(paths[i]))

        recorder = await run_clients(
            base, send, total=len(paths), clients=clients, label=f"W3 ×{clients}", time_limit=plan.time_limit
        )
        cells.append(_cell("W3", db, "read by id", clients, recorder))
    return cells


def search_queries(record: ResidentRecord, rng: random.Random) -> dict[str, str]:
    """One query of each W4 kind about this resident (first page, the server's default page size)."""
    patient = record.patient
    name = patient["name"][0]
    day = 1 + rng.randrange(900)
    week = time.strftime("%Y-%m-%d", time.gmtime((19358 + day) * 86400))
    week_end = time.strftime("%Y-%m-%d", time.gmtime((19365 + day) * 86400))
    resident_id = patient["identifier"][0]["value"]
    return {
        "token + patient": f"Observation?patient={patient['id']}&code=http://loinc.org|85354-9",
        "token + date range": f"Observation?code=http://loinc.org|8867-4&date=ge{week}&date=lt{week_end}",
        "string prefix": f"Patient?name={quote(name['family'] + name['given'][0][:1])}",
        "chained": f"Observation?subject:Patient.identifier={quote(RESIDENT_ID_SYSTEM)}|{resident_id}"
        "&category=vital-signs",
        "_include": f"Encounter?patient={patient['id']}&_include=Encounter:service-provider",
    }


async def w4_search(base: str, db: Database, data: RegionalData, indexes: list[int], plan: Plan) -> list[Cell]:
    """W4: each kind of search, first page, ``w4_clients`` clients; the number of matches is kept as a check."""
    rng = random.Random(plan.seed + 4)
    targets = _targets(data, indexes, plan.w4_requests, plan.seed + 40)
    queries = [search_queries(record, rng) for record in targets]
    cells = []
    for kind in W4_QUERIES:
        urls = [q[kind] for q in queries]
        matched = [0]

        async def send(client: Client, i: int, urls: list[str] = urls, matched: list[int] = matched):
            response = await client.get(urls[i])
            if response.status_code == 200:
                entries = orjson.loads(response.content).get("entry") or []
                matched[0] += sum(1 for e in entries if (e.get("search") or {}).get("mode", "match") == "match")
            return expect(200, response)

        recorder = await run_clients(
            base,
            send,
            total=len(urls),
            clients=plan.w4_clients,
            label=f"W4 {kind}",
            time_limit=min(plan.time_limit, plan.w4_time_limit),
            request_timeout=plan.w4_request_timeout,
        )
        cells.append(_cell("W4", db, f"search: {kind}", plan.w4_clients, recorder, extra={"matches": matched[0]}))
    return cells


async def w5_everything(base: str, db: Database, patient_id: str, plan: Plan) -> Cell:
    """W5: ``Patient/$everything`` of the heavy resident, every page (1,000 a page), one client."""
    resources = [0]

    async def send(client: Client, i: int) -> tuple[bool, int, str]:
        url: str | None = f"Patient/{patient_id}/$everything?_count=1000"
        count = 0
        while url:
            response = await client.get(url)
            if response.status_code != 200:
                return expect(200, response)
            page = orjson.loads(response.content)
            count += len(page.get("entry") or [])
            url = next((link["url"] for link in page.get("link") or [] if link.get("relation") == "next"), None)
        resources[0] = count
        return True, count, ""

    recorder = await run_clients(
        base, send, total=plan.w5_requests, clients=1, label="W5 $everything", time_limit=plan.time_limit
    )
    return _cell(
        "W5", db, "Patient/$everything", 1, recorder, resources=resources[0], extra={"resources": resources[0]}
    )


async def w7_export(base: str, db: Database, plan: Plan) -> Cell:
    """W7: system-level ``$export``: kick-off, poll, download every file; resources/s from kick-off to last byte."""
    recorder = LatencyRecorder()
    async with open_client(base, 4) as client:
        recorder.started = time.perf_counter()
        for _ in range(plan.w7_exports):
            start = time.perf_counter()
            kickoff = await client.get("$export", headers={"Prefer": "respond-async"})
            if kickoff.status_code != 202:
                recorder.fail(f"kick-off HTTP {kickoff.status_code}: {kickoff.text[:160]}")
                continue
            status_url = kickoff.headers["Content-Location"]
            deadline = start + plan.time_limit
            while time.perf_counter() < deadline:
                status = await client.get(status_url)
                if status.status_code != 202:
                    break
                await asyncio.sleep(0.2)
            if status.status_code != 200:
                recorder.fail(f"status HTTP {status.status_code}: {status.text[:160]}")
                continue
            manifest = orjson.loads(status.content)
            lines = 0
            for output in manifest.get("output") or []:
                async for chunk in client.download(output["url"]):
                    lines += chunk.count(b"\n")
            recorder.ok(time.perf_counter() - start, lines)
            await client.delete(status_url)
        recorder.ended = time.perf_counter()
    return _cell(
        "W7", db, "system $export (kick-off to last file)", 1, recorder, resources=recorder.units, unit="res/s"
    )


def w8_footprint(db: Database, server: Server) -> Cell:
    """W8: bytes on disk per current resource (with and without indexes where separable), server RSS."""
    counts = db.count()
    resources = sum(counts.values())
    sizes = db.footprint()
    rss, processes = server.rss()
    recorder = LatencyRecorder()
    recorder.ok(0.0, resources)
    extra = {
        "bytes/resource": sizes.get("data", sizes["total"]) / max(resources, 1),
        "total bytes": sizes["total"],
        "rss bytes": rss,
        "processes": processes,
    }
    if "tables" in sizes:
        extra["table bytes/resource"] = sizes["tables"] / max(resources, 1)
        extra["index bytes/resource"] = sizes["indexes"] / max(resources, 1)
        extra["body bytes/resource"] = sizes["bodies"] / max(resources, 1)
        extra["search index bytes/resource"] = sizes["search"] / max(resources, 1)
    return Cell("W8", db.backend, "footprint", 0, recorder, resources=resources, unit="", extra=extra)
