"""HL7 v2 throughput: messages per second through ``hie mllp`` into the database, and parse + map alone.

Run from the repository root (about 1–2 minutes with the defaults on a 2-core machine):

    .venv/bin/python bench/hl7_throughput.py [--backend sqlite|postgres|both] [--messages 150] [--senders 1,4,16]
    .venv/bin/python bench/hl7_throughput.py --smoke     # a few messages per cell; non-zero exit on any failure

For each backend it creates a fresh database (a SQLite file in a temporary folder, or the PostgreSQL scratch
database of ``--postgres-url``, dropped and created again, loopback hosts only), migrates it, starts ``hie mllp
--host 127.0.0.1 --port 0`` as a subprocess and drives it with asyncio MLLP senders in this process: each sender is
one hospital (its own MSH-4) on one connection, sending its share of the messages one at a time and waiting for each
ACK, as MLLP senders do. A message is counted when its ACK arrives; anything but AA is a failure. The mix is, per
patient, ADT^A01 (admission, 10 entries), ORU^R01 (blood count, 9 entries) and SIU^S12 (appointment, 5 entries),
built from the adapter's sample messages with each patient's own MRN, GB 11643 resident ID, visit, order and
appointment numbers. A final resend of a few messages checks that duplicates are answered AA and not applied again.

Parse + map alone times `parse_message` and `map_message` in this process on the same messages (one thread).
The Markdown report goes to stdout, progress to stderr. Every count is bounded and every cell has a time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from scratch_db import check_loopback, postgres_version, recreate_postgres
from sqlalchemy import func, select

from adapters.hl7v2.mllp import MllpDecoder, frame
from adapters.hl7v2.parse import parse_message
from adapters.hl7v2.to_fhir import map_message
from ehr_archive.identifiers import resident_id_check_char

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "adapters" / "hl7v2" / "messages"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/hie_bench_hl7"
MAX_MESSAGES = 5000
TEMPLATES = ("adt_a01.hl7", "oru_r01.hl7", "siu_s12.hl7")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------------------------------


def _template(name: str) -> str:
    return "\r".join((SAMPLES / name).read_text(encoding="utf-8").splitlines())


def resident_id(number: int) -> str:
    """A Changzhou district (450405) man born 1958-03-12, with a valid GB 11643 check character."""
    first17 = f"45040519580312{(2 * number + 1) % 1000:03d}"
    return first17 + resident_id_check_char(first17)


def patient_messages(facility: str, patient: int, run: str) -> list[bytes]:
    """Admission, blood count and appointment of one patient of one hospital, each with its own MSH-10."""
    numbers = {
        "450400-001": facility,
        "0012345678": f"{patient:010d}",
        "450403195803120012": resident_id(patient),
        "ZY20240315001": f"ZY{patient:011d}",
        "L2403150123": f"L{patient:010d}",
        "ORD20240315-77": f"ORD-{patient}",
        "SCH-778812": f"SCH-{patient}",
        "WZ-APT-20240401-015": f"APT-{patient}",
    }
    messages = []
    for index, name in enumerate(TEMPLATES):
        text = _template(name)
        for old, new in numbers.items():
            text = text.replace(old, new)
        msh, rest = text.split("\r", 1)
        fields = msh.split("|")
        fields[9] = f"{run}-{facility}-{patient}-{index}"
        messages.append(("|".join(fields) + "\r" + rest).encode("utf-8"))
    return messages


def sender_messages(senders: int, total: int, run: str) -> list[list[bytes]]:
    """`total` messages (rounded to whole patients) split among `senders` hospitals."""
    per_sender = max(1, total // senders // len(TEMPLATES))
    return [
        [m for patient in range(per_sender) for m in patient_messages(f"450400-{101 + s:03d}", patient, run)]
        for s in range(senders)
    ]


# --------------------------------------------------------------------------------------------------------------------
# Databases and the listener process
# --------------------------------------------------------------------------------------------------------------------


def migrate(url: str) -> None:
    from fhir_server.config import Settings
    from fhir_server.migrations import upgrade
    from fhir_server.storage import create_db_engine

    engine = create_db_engine(Settings(database_url=url))
    upgrade(engine)
    engine.dispose()


def stored_counts(url: str) -> tuple[int, int]:
    """(messages applied, resource versions) in the database."""
    from adapters.hl7v2.store import APPLIED, hl7_messages
    from fhir_server.config import Settings
    from fhir_server.storage import create_db_engine
    from fhir_server.storage.tables import resource_versions

    engine = create_db_engine(Settings(database_url=url))
    with engine.connect() as conn:
        applied = conn.execute(select(func.count()).where(hl7_messages.c.status == APPLIED)).scalar_one()
        versions = conn.execute(select(func.count()).select_from(resource_versions)).scalar_one()
    engine.dispose()
    return applied, versions


class Listener:
    """``hie mllp --port 0`` as a subprocess; `port` is read from the line it prints."""

    def __init__(self, url: str, timeout: float) -> None:
        hie = Path(sys.executable).parent / "hie"
        command = [str(hie)] if hie.exists() else [sys.executable, "-c", "from fhir_server.cli import app; app()"]
        env = {**os.environ, "HIE_DATABASE_URL": url}
        self.process = subprocess.Popen(
            [*command, "mllp", "--host", "127.0.0.1", "--port", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        match = re.search(r"127\.0\.0\.1:(\d+)", line[0] if line else "")
        if not match:
            self.stop()
            raise SystemExit(f"hie mllp did not report its port within {timeout:.0f} s: {line!r}")
        self.port = int(match.group(1))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --------------------------------------------------------------------------------------------------------------------
# Senders
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    label: str
    senders: int
    messages: int
    seconds: float
    latencies_ms: list[float]
    failures: int

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


async def send_all(port: int, messages: list[bytes], latencies: list[float]) -> list[str]:
    """One connection; each message framed, sent, and its ACK awaited; the MSA-1 codes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    decoder = MllpDecoder()
    codes = []
    try:
        for message in messages:
            started = time.perf_counter()
            writer.write(frame(message))
            await writer.drain()
            acks: list[bytes] = []
            while not acks:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("the listener closed the connection")
                decoder.feed(data)
                acks.extend(decoder)
            latencies.append((time.perf_counter() - started) * 1000)
            codes.append(_msa_code(acks[0]))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return codes


def _msa_code(ack: bytes) -> str:
    match = re.search(rb"\rMSA\|([A-Z]{2})\|", ack)
    return match.group(1).decode() if match else "??"


async def run_cell(port: int, batches: list[list[bytes]], timeout: float) -> tuple[float, list[float], list[str]]:
    latencies: list[float] = []
    started = time.perf_counter()
    results = await asyncio.wait_for(
        asyncio.gather(*(send_all(port, batch, latencies) for batch in batches)), timeout=timeout
    )
    return time.perf_counter() - started, latencies, [code for codes in results for code in codes]


def listener_cells(label: str, url: str, args: argparse.Namespace) -> list[Cell]:
    migrate(url)
    listener = Listener(url, args.phase_timeout)
    cells = []
    try:
        warm = sender_messages(1, len(TEMPLATES), "warm")
        asyncio.run(run_cell(listener.port, warm, args.phase_timeout))
        for senders in args.senders:
            batches = sender_messages(senders, args.messages, f"s{senders}")
            count = sum(len(batch) for batch in batches)
            log(f"{label}: {senders} sender(s), {count} messages")
            seconds, latencies, codes = asyncio.run(run_cell(listener.port, batches, args.phase_timeout))
            cells.append(Cell(label, senders, count, seconds, latencies, sum(code != "AA" for code in codes)))
        applied, versions = stored_counts(url)
        resend = [batches[0][:3]]
        _, _, codes = asyncio.run(run_cell(listener.port, resend, args.phase_timeout))
        if stored_counts(url) != (applied, versions) or set(codes) != {"AA"}:
            raise SystemExit(f"{label}: a resend was applied again or not answered AA ({codes})")
        log(f"{label}: resent {len(codes)} messages: AA, nothing applied twice ({applied} messages applied)")
    finally:
        listener.stop()
    return cells


def parse_and_map_cell(total: int) -> Cell:
    messages = [m for batch in sender_messages(1, total, "pm") for m in batch]
    for message in messages[:6]:
        map_message(parse_message(message))
    latencies = []
    started = time.perf_counter()
    for message in messages:
        begun = time.perf_counter()
        map_message(parse_message(message))
        latencies.append((time.perf_counter() - begun) * 1000)
    return Cell("parse + map only", 1, len(messages), time.perf_counter() - started, latencies, 0)


# --------------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def machine(postgres: str | None) -> list[str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    lines = [
        f"- nproc: {cores}, CPU: {model}, load average before the run: {load}",
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
        + (f", {postgres}" if postgres else ""),
    ]
    return lines


def report(cells: list[Cell], header: list[str], args: argparse.Namespace) -> str:
    lines = [
        "## HL7 v2 throughput",
        "",
        *header,
        f"- command: `python bench/hl7_throughput.py --messages {args.messages} "
        f"--senders {','.join(map(str, args.senders))} --backend {args.backend}`",
        "",
        "| path | senders | messages | msg/s | p50 ms | p99 ms | not AA |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cell in cells:
        lines.append(
            f"| {cell.label} | {cell.senders} | {cell.messages} | {cell.rate:.0f} | "
            f"{statistics.median(cell.latencies_ms):.1f} | {percentile(cell.latencies_ms, 0.99):.1f} | "
            f"{cell.failures} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--messages", type=int, default=150, help=f"per cell (at most {MAX_MESSAGES})")
    parser.add_argument("--senders", default="1,4,16", help="concurrent senders per cell, comma-separated")
    parser.add_argument("--postgres-url", default=os.environ.get("HIE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    parser.add_argument("--phase-timeout", type=float, default=180.0, help="seconds per cell")
    parser.add_argument("--smoke", action="store_true", help="a few messages per cell; exit 1 on any failure")
    args = parser.parse_args()
    args.senders = [int(value) for value in args.senders.split(",") if value.strip()]
    if args.smoke:
        args.messages, args.senders = 12, [1, 4]
    if not 1 <= args.messages <= MAX_MESSAGES or not args.senders or max(args.senders) > 64:
        raise SystemExit(f"--messages must be 1..{MAX_MESSAGES} and --senders 1..64")
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]

    postgres = None
    if "postgres" in backends:
        check_loopback(args.postgres_url)
        postgres = postgres_version(args.postgres_url)
    header = machine(postgres)
    cells = [parse_and_map_cell(args.messages)]
    for backend in backends:
        if backend == "sqlite":
            with tempfile.TemporaryDirectory(prefix="hie-hl7-bench-") as folder:
                cells += listener_cells("listener → SQLite", f"sqlite:///{Path(folder) / 'hie.db'}", args)
        else:
            recreate_postgres(args.postgres_url)
            try:
                cells += listener_cells("listener → PostgreSQL", args.postgres_url, args)
            finally:
                recreate_postgres(args.postgres_url, drop_only=True)
    print(report(cells, header, args))
    if args.smoke and any(cell.failures for cell in cells):
        sys.exit(1)


if __name__ == "__main__":
    main()
