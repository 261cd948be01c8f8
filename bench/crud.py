"""Create, read and update throughput and latency of the FHIR server over HTTP, and where a create's time goes.

Run from the repository root (3–4 minutes with the defaults on a quiet 2-core machine, 5–6 on a busy one):

    .venv/bin/python bench/crud.py [--backend sqlite|postgres|both] [--requests N] [--clients 1,8,32]
    .venv/bin/python bench/crud.py --smoke      # a few requests per cell, for CI; non-zero exit on any failure

For each backend it starts ``hie serve`` as a subprocess on 127.0.0.1 with production settings (several uvicorn
workers on PostgreSQL; one and two workers on SQLite), on a fresh database created with ``hie db upgrade``, and
drives it with ``httpx.AsyncClient`` at each level of concurrency: create Patient, create Observation, read Patient,
update Patient. Resources are realistic Wuzhou residents (Chinese names, GB 11643 resident ID numbers, Wuzhou
addresses) and their vital signs. It then times creates in-process (``FhirService`` inside ``unit_of_work``) phase by
phase, and with pyinstrument when it is installed (cProfile otherwise) lists the hottest functions.

PostgreSQL: ``--postgres-url`` (default ``$HIE_BENCH_POSTGRES_URL`` or ``postgresql+psycopg://postgres@127.0.0.1:5432/
hie_bench``) names a scratch database that is dropped and created again for every server and dropped at the end.
Only loopback addresses are accepted. Every request count is bounded, and every phase has a time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import importlib.util
import itertools
import math
import os
import platform
import pstats
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import orjson
from scratch_db import check_loopback, postgres_version, recreate_postgres
from serve import HieServe, hie_command
from sqlalchemy.engine import make_url

from ehr_archive.identifiers import resident_id_check_char

if importlib.util.find_spec("sniffio") is None:
    # httpcore 1.0 runs `import sniffio` for every request; when sniffio is not installed each attempt searches
    # sys.path again, which cost about 2 ms of client CPU per request on the reference machine. Fail it at once.
    sys.modules["sniffio"] = None  # type: ignore[assignment]

FHIR_JSON = "application/fhir+json"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/hie_bench"
DEFAULT_REQUESTS = 250
DEFAULT_CLIENTS = (1, 8, 32)
PROFILE_ROUNDS = 5
EXPECTED_STATUS = {"create Patient": 201, "create Observation": 201, "read Patient": 200, "update Patient": 200}

# --------------------------------------------------------------------------------------------------------------------
# Realistic Wuzhou residents and their observations
# --------------------------------------------------------------------------------------------------------------------

RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"
MRN_SYSTEM = "https://hie.wuzhou.gov.cn/fhir/sid/mrn/450400-002"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"

# Surnames common in eastern Guangxi, with rough weights (莫、韦、覃、蒙 are frequent Zhuang surnames).
_SURNAMES = (
    "黄8 李7 陈7 梁5 刘4 莫3 韦3 林3 何3 张3 王3 覃2 周2 罗2 吴2 杨2 谢2 钟2 邓2 苏1 卢1 冯1 蒙1 陆1 廖1 潘1 唐1 "
    "曾1 麦1 甘1 蒋1 彭1 欧阳1"
)
_MALE_CHARS = "伟强军明华勇杰涛斌磊超辉鹏飞刚平东海波建国志文荣新永庆家俊豪宇浩轩子晨博铭鑫宏德福贵祥林峰成广昌瑞"
_FEMALE_CHARS = "芳丽娟敏静燕艳玲霞红梅英兰琳婷雪慧莉萍晶洁颖倩欣怡佳悦琪思雨诗涵梦嘉秀凤春月美珍桂群莹薇娜丹妮"

# Wuzhou's county-level divisions (GB/T 2260 code, name, postcode, townships or sub-districts).
_DISTRICTS = (
    ("450403", "万秀区", "543000", "城东街道 城中街道 城南街道 城北街道 角嘴街道 东兴街道 龙湖镇 夏郢镇"),
    ("450405", "长洲区", "543003", "大塘街道 兴龙街道 红岭街道 长洲镇 倒水镇"),
    ("450406", "龙圩区", "543100", "龙圩镇 大坡镇 广平镇 新地镇"),
    ("450421", "苍梧县", "543100", "石桥镇 沙头镇 梨埠镇 岭脚镇 京南镇 狮寨镇 旺甫镇 六堡镇"),
    ("450422", "藤县", "543300", "藤州镇 塘步镇 琅南镇 同心镇 金鸡镇 新庆镇 象棋镇 岭景镇 天平镇 濛江镇 太平镇"),
    ("450423", "蒙山县", "546700", "蒙山镇 西河镇 新圩镇 文圩镇 黄村镇 陈塘镇 汉豪乡 长坪瑶族乡 夏宜瑶族乡"),
    ("450481", "岑溪市", "543200", "岑城镇 糯垌镇 诚谏镇 归义镇 筋竹镇 大业镇 梨木镇 大隆镇 南渡镇 马路镇 三堡镇"),
)
_STREETS = "新兴路 大中路 南环路 西江路 珠山路 文澜路 富民路 龙华路 钱鉴路 三云路 蝶山路 兴龙路"
_VILLAGES = "新村 石桥村 河口村 大塘村 上垌村 龙头村 平山村 中和村 古岭村 东安村"
_HOSPITALS = ("450400-001", "450400-002", "450400-003", "450400-004")


def _weighted_surnames() -> list[str]:
    return [name for name, weight in re.findall(r"(\D+?)(\d+)", _SURNAMES.replace(" ", "")) for _ in range(int(weight))]


class ResidentFactory:
    """Seed-deterministic Patient and Observation resources as the region's institutions send them."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.surnames = _weighted_surnames()
        self.serial = itertools.count(1)

    def patient(self) -> dict[str, Any]:
        rng = self.rng
        male = rng.random() < 0.49
        family = rng.choice(self.surnames)
        chars = _MALE_CHARS if male else _FEMALE_CHARS
        given = "".join(rng.choice(chars) for _ in range(rng.choice((1, 2, 2, 2))))
        code, district, postcode, towns = rng.choice(_DISTRICTS)
        # Ages skew old: the exchange serves the eldercare hotline as well as hospitals.
        born = date(1930, 1, 1) + timedelta(days=int(rng.triangular(0, 34000, 12000)))
        seq = rng.randrange(0, 100) * 10 + rng.choice((1, 3, 5, 7, 9) if male else (0, 2, 4, 6, 8))
        first17 = f"{code}{born:%Y%m%d}{seq:03d}"
        if rng.random() < 0.5:
            street, number = rng.choice(_STREETS.split()), rng.randrange(1, 300)
            line = f"{street}{number}号{rng.randrange(1, 30)}栋{rng.randrange(101, 1801)}室"
        else:
            line = f"{rng.choice(towns.split())}{rng.choice(_VILLAGES.split())}{rng.randrange(1, 200)}号"
        phone = f"1{rng.choice('3578')}{rng.randrange(0, 10)}{rng.randrange(0, 10**8):08d}"
        return {
            "resourceType": "Patient",
            "identifier": [
                {
                    "use": "official",
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NNCHN"}]},
                    "system": RESIDENT_ID_SYSTEM,
                    "value": first17 + resident_id_check_char(first17),
                },
                {"use": "usual", "system": MRN_SYSTEM, "value": f"MRN{next(self.serial):08d}"},
            ],
            "active": True,
            "name": [{"use": "official", "text": family + given, "family": family, "given": [given]}],
            "telecom": [{"system": "phone", "value": phone, "use": "mobile"}],
            "gender": "male" if male else "female",
            "birthDate": born.isoformat(),
            "address": [
                {
                    "use": "home",
                    "text": f"广西壮族自治区梧州市{district}{line}",
                    "line": [line],
                    "city": "梧州市",
                    "district": district,
                    "state": "广西壮族自治区",
                    "postalCode": postcode,
                    "country": "CN",
                }
            ],
            "managingOrganization": {"reference": f"Organization/{rng.choice(_HOSPITALS)}"},
        }

    def observation(self, patient_id: str) -> dict[str, Any]:
        rng = self.rng
        when = datetime(2025, 1, 1, 7, 0) + timedelta(minutes=rng.randrange(0, 525_600))
        base: dict[str, Any] = {
            "resourceType": "Observation",
            "status": "final",
            "subject": {"reference": f"Patient/{patient_id}"},
            "effectiveDateTime": f"{when:%Y-%m-%dT%H:%M:00}+08:00",
            "performer": [{"reference": f"Organization/{rng.choice(_HOSPITALS)}"}],
        }
        kind = rng.random()
        if kind < 0.5:
            systolic = round(rng.gauss(138, 18))
            diastolic = round(rng.gauss(84, 10))
            return {
                **base,
                "category": [_category("vital-signs")],
                "code": _concept("85354-9", "Blood pressure panel", "血压"),
                "component": [
                    {"code": _concept("8480-6", "Systolic blood pressure", "收缩压"), "valueQuantity": _mmhg(systolic)},
                    {
                        "code": _concept("8462-4", "Diastolic blood pressure", "舒张压"),
                        "valueQuantity": _mmhg(diastolic),
                    },
                ],
            }
        if kind < 0.75:
            glucose = round(rng.gauss(6.4, 1.6), 1)
            return {
                **base,
                "category": [_category("laboratory")],
                "code": _concept("1558-6", "Fasting glucose [Moles/volume] in Serum or Plasma", "空腹血糖"),
                "valueQuantity": {"value": glucose, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"},
                "referenceRange": [{"low": _mmol(3.9), "high": _mmol(6.1), "text": "3.9–6.1 mmol/L"}],
            }
        return {
            **base,
            "category": [_category("vital-signs")],
            "code": _concept("8867-4", "Heart rate", "心率"),
            "valueQuantity": {"value": round(rng.gauss(76, 11)), "unit": "次/分", "system": UCUM, "code": "/min"},
        }


def _category(code: str) -> dict[str, Any]:
    return {"coding": [{"system": CATEGORY_SYSTEM, "code": code}]}


def _concept(code: str, display: str, text: str) -> dict[str, Any]:
    return {"coding": [{"system": LOINC, "code": code, "display": display}], "text": text}


def _mmhg(value: int) -> dict[str, Any]:
    return {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}


def _mmol(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"}


def updated_patient(patient: dict[str, Any], res_id: str, rng: random.Random) -> dict[str, Any]:
    """The same resident after a change of mobile number, as a PUT body (with the id)."""
    changed = {**patient, "id": res_id}
    changed["telecom"] = [
        {"system": "phone", "value": f"1{rng.choice('3578')}{rng.randrange(10**9):09d}", "use": "mobile"}
    ]
    return changed


# --------------------------------------------------------------------------------------------------------------------
# Backends and the server under test
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Target:
    """One server configuration to measure."""

    backend: str  # "sqlite" or "postgresql"
    workers: int
    database_url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    """``Authorization`` of the benchmark's client (registered with ``hie auth client create``)."""

    @property
    def label(self) -> str:
        return f"{self.backend} ×{self.workers}"


def postgres_answers(url: str) -> bool:
    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 5432), timeout=2):
            return True
    except OSError:
        return False


def prepare_database(target: Target, workdir: Path, postgres_url: str) -> None:
    """A fresh, migrated database for one server."""
    if target.backend == "sqlite":
        path = workdir / f"crud-{target.workers}w.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        target.database_url = f"sqlite:///{path}"
    else:
        recreate_postgres(postgres_url)
        target.database_url = postgres_url
    env = {**os.environ, "HIE_DATABASE_URL": target.database_url}
    done = subprocess.run([hie_command(), "db", "upgrade"], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"`hie db upgrade` failed for {target.label}:\n{done.stdout}\n{done.stderr}")
    target.headers = {"Authorization": f"Bearer {bench_token(env, target.label)}"}


def bench_token(env: dict[str, str], label: str) -> str:
    """A day-long token of an all-access client acting for the exchange (``hie auth client create`` + ``token``)."""
    create = [hie_command(), "auth", "client", "create", "--name", "crud bench", "--scope", "system/*.*", "--exchange"]
    created = subprocess.run(create, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"^client_id: (\S+)$", created.stdout, re.MULTILINE)
    if created.returncode != 0 or found is None:
        raise SystemExit(f"`hie auth client create` failed for {label}:\n{created.stdout}\n{created.stderr}")
    token = [hie_command(), "auth", "token", "--client", found[1], "--lifetime", "86400"]
    issued = subprocess.run(token, env=env, capture_output=True, text=True, check=False)
    if issued.returncode != 0:
        raise SystemExit(f"`hie auth token` failed for {label}:\n{issued.stdout}\n{issued.stderr}")
    return issued.stdout.strip().splitlines()[-1]


class Server(HieServe):
    """``hie serve`` of one target (backend × workers); a failed start ends the bench with the log's tail."""

    def __init__(self, target: Target, log_path: Path) -> None:
        super().__init__({**os.environ, "HIE_DATABASE_URL": target.database_url}, target.workers, log_path)
        self.target = target

    def start(self, timeout: float = 60.0) -> float:
        try:
            return super().start(timeout)
        except RuntimeError as failed:
            raise SystemExit(str(failed)) from failed


# --------------------------------------------------------------------------------------------------------------------
# CPU accounting from /proc: the server's process group, PostgreSQL's processes, and this client
# --------------------------------------------------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_ticks(server_pgid: int | None, database: str | None) -> tuple[dict[int, int], dict[int, int]]:
    """Ticks (user + system) by process id: of the server's process group, and of the PostgreSQL backends of
    ``database``. Backends of other databases and PostgreSQL's shared background processes count as "other".
    """
    server: dict[int, int] = {}
    backends: dict[int, int] = {}
    if not Path("/proc/self/stat").exists():
        return server, backends
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        close = stat.rfind(")")
        comm = stat[stat.find("(") + 1 : close]
        fields = stat[close + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])
        if server_pgid is not None and int(fields[2]) == server_pgid:
            server[int(entry.name)] = ticks
        elif database and comm == "postgres":
            with contextlib.suppress(OSError):
                # A backend's title: "postgres: 15/main: USER DATABASE HOST(PORT) STATE".
                if f" {database} " in Path(entry.path, "cmdline").read_bytes().decode(errors="replace"):
                    backends[int(entry.name)] = ticks
    return server, backends


def _ticks_since(now: dict[int, int], start: dict[int, int]) -> int:
    """Ticks used between two samples by processes alive at the end (a process that exited takes its own along)."""
    return sum(ticks - start.get(pid, 0) for pid, ticks in now.items() if ticks >= start.get(pid, 0))


def _machine_busy_ticks() -> int:
    """Ticks every CPU of the machine spent on anything but idle and I/O wait (the ``cpu`` line of /proc/stat)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0
    return sum(values[:8]) - values[3] - values[4]  # user nice system idle iowait irq softirq steal


def wait_for_quiet(limit: float, threshold: float = 0.3) -> float:
    """Wait up to ``limit`` seconds until the machine's busy CPU over half a second is below ``threshold`` cores.

    For shared machines: other processes' CPU bursts would otherwise land in some cells and not others.
    Returns the seconds waited.
    """
    if limit <= 0:
        return 0.0
    started = time.perf_counter()
    while True:
        before = _machine_busy_ticks()
        time.sleep(0.5)
        if (_machine_busy_ticks() - before) / _TICKS / 0.5 < threshold or time.perf_counter() - started > limit:
            return time.perf_counter() - started


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


@dataclass
class CpuSample:
    wall: float
    client: float
    server: dict[int, int]
    database: dict[int, int]
    machine: int

    @classmethod
    def take(cls, server_pgid: int | None, database: str | None) -> CpuSample:
        server, backends = _cpu_ticks(server_pgid, database)
        return cls(time.perf_counter(), time.process_time(), server, backends, _machine_busy_ticks())

    def cores_since(self, start: CpuSample) -> tuple[float, float, float, float]:
        """Cores used since ``start`` by the server, PostgreSQL, this client and everything else on the machine."""
        wall = max(self.wall - start.wall, 1e-9)
        server = _ticks_since(self.server, start.server) / _TICKS / wall
        database = _ticks_since(self.database, start.database) / _TICKS / wall
        client = (self.client - start.client) / wall
        machine = (self.machine - start.machine) / _TICKS / wall
        return server, database, client, max(0.0, machine - server - database - client)


# --------------------------------------------------------------------------------------------------------------------
# A lean HTTP/1.1 client, to see how much of the machine the httpx client takes
# --------------------------------------------------------------------------------------------------------------------


class LeanResponse:
    """The parts of ``httpx.Response`` the benchmark uses."""

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return orjson.loads(self.content)

    async def aread(self) -> bytes:
        return self.content


class LeanClient:
    """Keep-alive HTTP/1.1 over asyncio streams to 127.0.0.1: a tenth of httpx's CPU per request.

    Only what this benchmark sends: GET, POST and PUT with a body, answers with Content-Length or chunked.
    """

    def __init__(
        self, base: str, connections: int, timeout: float = 60.0, headers: dict[str, str] | None = None
    ) -> None:
        url = httpx.URL(base)
        self.headers = headers or {}
        self.host, self.port, self.prefix = url.host, url.port or 80, url.path.rstrip("/")
        self.timeout = timeout
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.slots = asyncio.Semaphore(connections)

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for _reader, writer, _since in self.idle:
            writer.close()
        self.idle.clear()

    async def get(self, path: str, headers: dict[str, str] | None = None) -> LeanResponse:
        return await self.request("GET", path, b"", headers)

    async def post(self, path: str, content: bytes, headers: dict[str, str] | None = None) -> LeanResponse:
        return await self.request("POST", path, content, headers)

    async def put(self, path: str, content: bytes, headers: dict[str, str] | None = None) -> LeanResponse:
        return await self.request("PUT", path, content, headers)

    async def request(self, method: str, path: str, body: bytes, headers: dict[str, str] | None) -> LeanResponse:
        lines = [f"{method} {self.prefix}{path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in {**self.headers, **(headers or {})}.items()]
        if body or method != "GET":
            lines.append(f"Content-Length: {len(body)}")
        message = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        async with self.slots:
            while self.idle:  # a kept-alive connection the server has closed since fails before any answer
                reader, writer, since = self.idle.pop()
                if time.monotonic() - since > KEEPALIVE_EXPIRY:
                    writer.close()
                    continue
                try:
                    return await self._exchange(reader, writer, message)
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    if getattr(exc, "partial", b""):
                        raise
            reader, writer = await asyncio.open_connection(self.host, self.port)
            return await self._exchange(reader, writer, message)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: bytes
    ) -> LeanResponse:
        try:
            writer.write(message)
            response, keep = await asyncio.wait_for(self._read(reader), self.timeout)
        except BaseException:
            writer.close()
            raise
        if keep:
            self.idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        return response

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> tuple[LeanResponse, bool]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            if line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                chunks.append(await reader.readexactly(size + 2))
            await reader.readuntil(b"\r\n")
            content = b"".join(c[:-2] for c in chunks)
        else:
            content = await reader.readexactly(int(headers.get("content-length", "0")))
        return LeanResponse(status, headers, content), headers.get("connection", "").lower() != "close"


Client = httpx.AsyncClient | LeanClient
# uvicorn closes a connection idle for 5 s; a client that keeps it as long races with that close and sees the
# connection reset under its next request. Clients drop idle connections well before.
KEEPALIVE_EXPIRY = 2.0
CLIENT_ERRORS = (httpx.HTTPError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError)


def open_client(kind: str, base: str, connections: int, headers: dict[str, str] | None = None) -> Client:
    if kind == "lean":
        return LeanClient(base, connections, headers=headers)
    limits = httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=KEEPALIVE_EXPIRY
    )
    return httpx.AsyncClient(base_url=base, limits=limits, timeout=60, headers=headers)


# --------------------------------------------------------------------------------------------------------------------
# Load generation
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """The figures of one operation at one concurrency on one server."""

    target: str
    operation: str
    clients: int
    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    cpu: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000


Request = Callable[[Any, int], Awaitable[Any]]


async def run_cell(
    client: Client,
    cell: Cell,
    count: int,
    send: Request,
    expected: int,
    timeout: float,
    probe: tuple[int | None, str | None],
) -> Cell:
    """``count`` requests from ``cell.clients`` concurrent tasks, each timed from send to full response."""
    indexes = iter(range(count))
    deadline = time.perf_counter() + timeout

    async def worker() -> None:
        for i in indexes:
            if time.perf_counter() > deadline:
                cell.failures.append(f"phase time limit of {timeout:.0f} s reached")
                return
            start = time.perf_counter()
            try:
                response = await send(client, i)
            except CLIENT_ERRORS as exc:
                cell.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            elapsed = time.perf_counter() - start
            if response.status_code != expected:
                cell.failures.append(f"HTTP {response.status_code}: {response.text[:300]}")
                continue
            cell.latencies.append(elapsed)

    before = CpuSample.take(*probe)
    await asyncio.gather(*(worker() for _ in range(cell.clients)))
    after = CpuSample.take(*probe)
    cell.requests = count
    cell.seconds = after.wall - before.wall
    cell.cpu = after.cores_since(before)
    return cell


def _location_id(response: httpx.Response) -> str | None:
    location = response.headers.get("location", "")
    parts = location.split("/")
    return parts[-3] if len(parts) >= 3 and parts[-2] == "_history" else None


class Workload:
    """Bodies serialised up front, and the ids the server assigned, shared by the phases of one server."""

    def __init__(self, seed: int) -> None:
        self.factory = ResidentFactory(seed)
        self.rng = random.Random(seed + 1)
        self.patients: list[tuple[str, dict[str, Any]]] = []  # (id, body as created)

    def create_patients(self, count: int) -> Request:
        bodies = [self.factory.patient() for _ in range(count)]
        payloads = [orjson.dumps(b) for b in bodies]

        async def send(client: Client, i: int) -> Any:
            response = await client.post("/Patient", content=payloads[i], headers={"Content-Type": FHIR_JSON})
            res_id = _location_id(response)
            if response.status_code == 201 and res_id:
                self.patients.append((res_id, bodies[i]))
            return response

        return send

    def create_observations(self, count: int) -> Request:
        ids = [self.patients[self.rng.randrange(len(self.patients))][0] for _ in range(count)]
        payloads = [orjson.dumps(self.factory.observation(res_id)) for res_id in ids]

        async def send(client: Client, i: int) -> Any:
            return await client.post("/Observation", content=payloads[i], headers={"Content-Type": FHIR_JSON})

        return send

    def read_patients(self, count: int) -> Request:
        paths = [f"/Patient/{self.patients[self.rng.randrange(len(self.patients))][0]}" for _ in range(count)]

        async def send(client: Client, i: int) -> Any:
            response = await client.get(paths[i], headers={"Accept": FHIR_JSON})
            await response.aread()
            return response

        return send

    def update_patients(self, count: int) -> Request:
        # Distinct residents within a phase while there are enough, so clients do not queue on one row lock.
        chosen = self.rng.sample(self.patients, min(count, len(self.patients)))
        chosen = [chosen[i % len(chosen)] for i in range(count)]
        paths = [f"/Patient/{res_id}" for res_id, _ in chosen]
        payloads = [orjson.dumps(updated_patient(body, res_id, self.rng)) for res_id, body in chosen]

        async def send(client: Client, i: int) -> Any:
            return await client.put(paths[i], content=payloads[i], headers={"Content-Type": FHIR_JSON})

        return send

    def phase(self, operation: str, count: int) -> Request:
        return {
            "create Patient": self.create_patients,
            "create Observation": self.create_observations,
            "read Patient": self.read_patients,
            "update Patient": self.update_patients,
        }[operation](count)


async def check_round_trip(client: Client, patient: dict[str, Any], rng: random.Random) -> list[str]:
    """What the server stores is what was sent, and an update makes version 2 with the new value."""
    json_headers = {"Content-Type": FHIR_JSON}
    created = await client.post("/Patient", content=orjson.dumps(patient), headers=json_headers)
    res_id = _location_id(created)
    if created.status_code != 201 or res_id is None:
        return [f"create: HTTP {created.status_code} {created.text[:200]}"]
    problems = []
    read = (await client.get(f"/Patient/{res_id}")).json()
    for key in ("identifier", "name", "address", "birthDate", "gender"):
        if read.get(key) != patient[key]:
            problems.append(f"read: {key} is {read.get(key)!r}, sent {patient[key]!r}")
    changed = updated_patient(patient, res_id, rng)
    updated = await client.put(f"/Patient/{res_id}", content=orjson.dumps(changed), headers=json_headers)
    if updated.status_code != 200:
        return [*problems, f"update: HTTP {updated.status_code} {updated.text[:200]}"]
    again = (await client.get(f"/Patient/{res_id}")).json()
    if again.get("meta", {}).get("versionId") != "2" or again.get("telecom") != changed["telecom"]:
        problems.append(f"read after update: meta {again.get('meta')}, telecom {again.get('telecom')}")
    return problems


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def measure_server(
    target: Target,
    server: Server,
    clients: list[int],
    count: int,
    seed: int,
    timeout: float,
    quiet_wait: float = 0,
    client_kind: str = "httpx",
) -> list[Cell]:
    database = make_url(target.database_url).database if target.backend == "postgresql" else None
    probe = (server.process.pid if server.process else None, database)
    workload = Workload(seed)
    cells: list[Cell] = []
    # Warm-up (not measured): every worker loads its models, definitions and connection pool.
    warm = max(8, 6 * target.workers)
    async with open_client(client_kind, server.base, 4, target.headers) as client:
        for operation, expected in EXPECTED_STATUS.items():
            cell = Cell(target.label, operation, 4)
            await run_cell(client, cell, warm, workload.phase(operation, warm), expected, timeout, probe)
            if cell.failures:
                cells.append(cell)
                progress(f"  warm-up {operation}: {len(cell.failures)} failures, first: {cell.failures[0]}")
                return cells
        problems = await check_round_trip(client, workload.factory.patient(), random.Random(seed))
        if problems:
            progress(f"  round trip check failed: {problems}")
            return [Cell(target.label, "round trip check", 1, requests=4, failures=problems)]
    progress(f"  warmed up with {warm} requests of each operation; create → read → update → read round trip checked")
    for n in clients:
        async with open_client(client_kind, server.base, n, target.headers) as client:
            for operation, expected in EXPECTED_STATUS.items():
                cell = Cell(target.label, operation, n)
                waited = wait_for_quiet(quiet_wait)
                if waited > 1:
                    progress(f"  (waited {waited:.0f} s for the machine to be quiet)")
                await run_cell(client, cell, count, workload.phase(operation, count), expected, timeout, probe)
                cells.append(cell)
                server_cpu, db_cpu, client_cpu, other_cpu = cell.cpu
                progress(
                    f"  {operation:<18} {n:>3} clients  {len(cell.latencies):>5}/{count} ok  "
                    f"{cell.throughput:8.1f} req/s  p50 {cell.percentile(50):7.1f} ms"
                    f"  p99 {cell.percentile(99):7.1f} ms"
                    f"  cores: server {server_cpu:.2f} db {db_cpu:.2f} client {client_cpu:.2f} other {other_cpu:.2f}"
                    + (f"  FAILURES {len(cell.failures)}: {cell.failures[0]}" if cell.failures else "")
                )
    return cells


# --------------------------------------------------------------------------------------------------------------------
# In-process profile of a create
# --------------------------------------------------------------------------------------------------------------------

PHASES = (
    ("structural", "validation: fhir.resources model_validate (validation.structural_issues)"),
    ("definitions", "validation: cardinality and required bindings (validation.definition_issues)"),
    ("checks", "regional domain checks (FhirService.checks)"),
    ("index", "search index extraction (search.index.index_rows)"),
    ("stamp", "meta and JSON serialisation (repository._stamp)"),
    ("sql_python", "SQL: SQLAlchemy execute overhead (compile, parameters, results)"),
    ("sql_driver", "SQL: driver and database (cursor execute, incl. BEGIN)"),
    ("commit", "commit"),
    ("other", "rest: statement construction, pool checkout, unit of work, service glue"),
)


class PhaseClock:
    """Exclusive time per phase of an in-process write, by wrapping the functions that do each part."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = defaultdict(int)
        self.cursor_executes = 0
        self.statements = 0

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                self.ns[name] += time.perf_counter_ns() - start

        return timed

    @contextlib.contextmanager
    def installed(self, engine: Any, service: Any) -> Iterator[None]:
        from sqlalchemy import Connection, event

        from fhir_server import repository, validation

        starts: list[int] = []

        def before(_conn: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any, many: bool) -> None:
            self.cursor_executes += 1
            self.statements += len(parameters) if many and isinstance(parameters, list | tuple) else 1
            starts.append(time.perf_counter_ns())

        def after(*_args: Any) -> None:
            if starts:
                self.ns["sql_driver"] += time.perf_counter_ns() - starts.pop()

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
        try:
            with contextlib.ExitStack() as stack:
                for owner, attr, name in (
                    (validation, "structural_issues", "structural"),
                    (validation, "definition_issues", "definitions"),
                    (repository, "index_rows", "index"),
                    (repository, "_stamp", "stamp"),
                    (Connection, "execute", "sql_total"),
                    (Connection, "commit", "commit"),
                ):
                    stack.enter_context(mock.patch.object(owner, attr, self.wrap(name, getattr(owner, attr))))
                checks = tuple(self.wrap("checks", check) for check in getattr(service, "checks", ()))
                if checks:
                    stack.enter_context(mock.patch.object(service, "checks", checks))
                yield
        finally:
            event.remove(engine, "before_cursor_execute", before)
            event.remove(engine, "after_cursor_execute", after)

    def breakdown(self, total_ns: int) -> list[tuple[str, float, float]]:
        """(phase, ns in all, share of the total) with the SQL split and a remainder; sums to the total."""
        values = dict(self.ns)
        values["sql_python"] = values.pop("sql_total", 0) - values.get("sql_driver", 0)
        values["other"] = total_ns - sum(values.get(key, 0) for key, _ in PHASES if key != "other")
        return [
            (label, values.get(key, 0), values.get(key, 0) / total_ns if total_ns else 0.0) for key, label in PHASES
        ]


@dataclass
class ProfileResult:
    target: str
    operation: str
    writes: int
    ms_per_write: float
    phases: list[tuple[str, float, float]]
    hot: list[tuple[str, float]]
    by_package: list[tuple[str, float]]
    profiler: str
    cursor_executes: float = 0.0
    statements: float = 0.0
    rounds: int = 1


def _package_of(path: str | None) -> str:
    if not path:
        return "(interpreter)"
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    for pkg in ("fhir_server", "bench"):
        if f"/{pkg}/" in path:
            tail = path.split(f"/{pkg}/", 1)[1].removesuffix(".py").replace("/", ".")
            return f"{pkg}.{tail}"
    if path.startswith("<"):
        return "(interpreter)"
    return "stdlib"


def _hot_spots(run: Callable[[], None]) -> tuple[str, list[tuple[str, float]], list[tuple[str, float]]]:
    """Run once under pyinstrument when installed (statistical, low distortion), cProfile otherwise.

    Returns the profiler's name, the top functions by self time and self time by package, as shares of all.
    """
    functions: dict[str, float] = defaultdict(float)
    packages: dict[str, float] = defaultdict(float)
    try:
        from pyinstrument import Profiler
    except ImportError:
        profile = cProfile.Profile()
        profile.runcall(run)
        stats = pstats.Stats(profile)
        for (path, line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            functions[f"{name} ({_short(path)}:{line})"] += tottime
            packages[_package_of(path)] += tottime
        used = "cProfile (deterministic; inflates pure-Python code)"
    else:
        profiler = Profiler(interval=0.0002)
        profiler.start()
        run()
        session = profiler.stop()
        stack = [session.root_frame()]
        while stack:
            frame = stack.pop()
            if frame is None:
                continue
            stack.extend(frame.children)
            if frame.is_synthetic:
                continue
            self_time = frame.total_self_time
            functions[f"{frame.function} ({_short(frame.file_path)}:{frame.line_no})"] += self_time
            packages[_package_of(frame.file_path)] += self_time
        used = "pyinstrument (statistical, 0.2 ms interval)"
    total = sum(functions.values()) or 1.0
    top = sorted(functions.items(), key=lambda kv: -kv[1])[:15]
    by_package = sorted(packages.items(), key=lambda kv: -kv[1])[:12]
    return used, [(k, v / total) for k, v in top], [(k, v / total) for k, v in by_package]


def _short(path: str | None) -> str:
    if not path:
        return "?"
    for marker in ("site-packages/", "/fhir_server/"):
        if marker in path:
            return ("fhir_server/" if marker == "/fhir_server/" else "") + path.split(marker, 1)[1]
    return Path(path).name


def profile_writes(
    target: Target, database_url: str, writes: int, seed: int, quiet_wait: float = 0
) -> list[ProfileResult]:
    """Time creates, reads and updates in-process, phase by phase, then profile creates for their hot functions."""
    from fhir_server.config import load_settings
    from fhir_server.migrations import upgrade
    from fhir_server.service import FhirService
    from fhir_server.storage import create_db_engine, unit_of_work

    settings = load_settings(database_url=database_url)
    engine = create_db_engine(settings)
    upgrade(engine)
    try:  # the service exactly as the server builds it (with its regional checks), when that can be had
        from fhir_server.api.app import Context

        service = Context(settings, engine).service
    except (ImportError, TypeError, AttributeError):
        service = FhirService()
    factory = ResidentFactory(seed + 7)
    rng = random.Random(seed + 8)
    created: list[tuple[str, dict[str, Any]]] = []

    def create_patients(count: int) -> Callable[[], None]:
        bodies = [factory.patient() for _ in range(count)]
        copies = [orjson.loads(orjson.dumps(body)) for body in bodies]  # the service stamps what it stores

        def run() -> None:
            for body, copy in zip(bodies, copies, strict=True):
                with unit_of_work(engine) as conn:
                    outcome = service.create(conn, copy)
                created.append((outcome.version.res_id, body))

        return run

    def create_observations(count: int) -> Callable[[], None]:
        bodies = [factory.observation(created[rng.randrange(len(created))][0]) for _ in range(count)]

        def run() -> None:
            for body in bodies:
                with unit_of_work(engine) as conn:
                    service.create(conn, body)

        return run

    def update_patients(count: int) -> Callable[[], None]:
        chosen = rng.sample(created, min(count, len(created)))
        bodies = [(res_id, updated_patient(body, res_id, rng)) for res_id, body in chosen]

        def run() -> None:
            for res_id, body in bodies:
                with unit_of_work(engine) as conn:
                    service.update(conn, "Patient", res_id, body)

        return run

    def read_patients(count: int) -> Callable[[], None]:
        chosen = [created[rng.randrange(len(created))][0] for _ in range(count)]

        def run() -> None:
            for res_id in chosen:
                with unit_of_work(engine, write=False) as conn:
                    service.read(conn, "Patient", res_id).resource()

        return run

    results = []
    try:
        create_patients(max(20, writes // 10))()  # warm-up: model classes, definitions, compiled statements
        create_observations(max(20, writes // 10))()
        for operation, prepare in (
            ("create Patient", create_patients),
            ("create Observation", create_observations),
            ("read Patient", read_patients),
            ("update Patient", update_patients),
        ):
            # Several rounds, keeping the fastest: other load on a shared machine only ever adds time.
            rounds, per_round = (
                (PROFILE_ROUNDS, writes // PROFILE_ROUNDS) if writes >= 5 * PROFILE_ROUNDS else (1, writes)
            )
            best: tuple[int, int, PhaseClock] | None = None
            for _ in range(rounds):
                run = prepare(per_round)
                done = per_round if operation != "update Patient" else min(per_round, len(created))
                clock = PhaseClock()
                wait_for_quiet(quiet_wait)
                with clock.installed(engine, service):
                    start = time.perf_counter_ns()
                    run()
                    total = time.perf_counter_ns() - start
                if best is None or total / done < best[0] / best[1]:
                    best = (total, done, clock)
            assert best is not None
            total, done, clock = best
            phases = [(label, ns / done / 1e6, share) for label, ns, share in clock.breakdown(total)]
            result = ProfileResult(target.label, operation, done, total / done / 1e6, phases, [], [], "")
            result.cursor_executes, result.statements = clock.cursor_executes / done, clock.statements / done
            result.rounds = rounds
            results.append(result)
            progress(
                f"  in-process {operation}: {total / done / 1e6:.2f} ms per operation (fastest of {rounds} rounds"
                f" of {done})"
            )
        for result, prepare in ((results[0], create_patients), (results[1], create_observations)):
            wait_for_quiet(quiet_wait)
            result.profiler, result.hot, result.by_package = _hot_spots(prepare(writes))
    finally:
        engine.dispose()
    return results


# --------------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------------


def machine() -> list[str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:", 1)[1].split()[0])
        memory = f", {kib / 1024 / 1024:.0f} GiB memory"
    return [
        f"- nproc: {cores}{memory}",
        f"- CPU: {model}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), {platform.system()} "
        f"{platform.release()}",
        f"- SQLite {sqlite3.sqlite_version}",
    ]


def code_measured() -> str:
    """Which server code ran: the commit of the checkout ``fhir_server`` is imported from, and whether it is dirty."""
    import fhir_server

    root = Path(fhir_server.__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if commit is None or git("rev-parse", "--show-toplevel") != str(root):
        return "- Code: `fhir_server` imported from outside a git checkout (an exported tree)"
    dirty = [line for line in (git("status", "--porcelain", "--", "fhir_server") or "").splitlines() if line]
    state = f"with {len(dirty)} uncommitted changes under fhir_server/" if dirty else "clean"
    return f"- Code: commit {commit}, {state}"


def figures_table(cells: list[Cell]) -> list[str]:
    lines = [
        "| backend × workers | operation | clients | requests | req/s | p50 ms | p99 ms | failed "
        "| CPU server | CPU db | CPU client | CPU other | server+db CPU ms/req |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cells:
        server, database, client, other = c.cpu
        per_request = (server + database) / c.throughput * 1000 if c.throughput else float("nan")
        lines.append(
            f"| {c.target} | {c.operation} | {c.clients} | {c.requests} | {c.throughput:.0f} | {c.percentile(50):.1f} "
            f"| {c.percentile(99):.1f} | {len(c.failures)} "
            f"| {server:.2f} | {database:.2f} | {client:.2f} | {other:.2f} | {per_request:.1f} |"
        )
    return lines


def profile_tables(results: list[ProfileResult]) -> list[str]:
    lines: list[str] = []
    by_target: dict[str, list[ProfileResult]] = defaultdict(list)
    for r in results:
        by_target[r.target.split(" ")[0]].append(r)
    for backend, rows in by_target.items():
        lines += [
            "",
            f"In-process on {backend}, ms per operation (share of the operation), the fastest of {rows[0].rounds} "
            "round(s) (× operations per round):",
            "",
            "| phase | " + " | ".join(f"{r.operation} (×{r.writes})" for r in rows) + " |",
            "| --- |" + " ---: |" * len(rows),
        ]
        for i, (label, _, _) in enumerate(rows[0].phases):
            cells = " | ".join(f"{r.phases[i][1]:.3f} ({r.phases[i][2]:.0%})" for r in rows)
            lines.append(f"| {label} | {cells} |")
        lines.append("| **total** | " + " | ".join(f"**{r.ms_per_write:.3f}**" for r in rows) + " |")
        lines.append(
            "| cursor executes (rows) per operation | "
            + " | ".join(f"{r.cursor_executes:.1f} ({r.statements:.1f})" for r in rows)
            + " |"
        )
        for r in rows:
            if not r.hot:
                continue
            lines += [
                "",
                f"Hottest functions by self time, {r.operation} on {backend} — {r.profiler}; one pass, and on a busy "
                "machine time spent descheduled lands on whichever frame was running, so repeat before trusting a "
                "single spike:",
                "",
            ]
            lines += ["| function | self |", "| --- | ---: |"]
            lines += [f"| `{name}` | {share:.1%} |" for name, share in r.hot]
            lines += ["", "Self time by package:", "", "| package | self |", "| --- | ---: |"]
            lines += [f"| `{name}` | {share:.1%} |" for name, share in r.by_package]
    return lines


# --------------------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument(
        "--requests", type=int, default=None, help=f"per operation and concurrency ({DEFAULT_REQUESTS})"
    )
    parser.add_argument("--clients", default=None, help="comma-separated concurrency levels (1,8,32)")
    parser.add_argument("--sqlite-workers", default="1,2", help="uvicorn workers to try on SQLite (1,2)")
    parser.add_argument("--postgres-workers", default="2", help="uvicorn workers on PostgreSQL (2)")
    parser.add_argument("--postgres-url", default=os.environ.get("HIE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    parser.add_argument(
        "--profile-writes", type=int, default=None, help="in-process operations to time per kind (300; 0: none)"
    )
    parser.add_argument("--skip-http", action="store_true", help="only the in-process profile")
    parser.add_argument("--phase-timeout", type=float, default=120.0, help="seconds allowed for one phase")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="before each cell, wait up to this many seconds for other processes to leave the CPUs idle (shared "
        "machines; 0: off)",
    )
    parser.add_argument(
        "--client",
        choices=("httpx", "lean"),
        default="httpx",
        help="httpx.AsyncClient, or a minimal asyncio HTTP/1.1 client that leaves more CPU to the server",
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--smoke", action="store_true", help="a few requests per cell, for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests = args.requests or 10
        args.clients = args.clients or "1,4"
        args.sqlite_workers = "1"
        args.profile_writes = 10 if args.profile_writes is None else args.profile_writes
    args.requests = args.requests or DEFAULT_REQUESTS
    args.clients = [int(n) for n in (args.clients or ",".join(map(str, DEFAULT_CLIENTS))).split(",")]
    args.profile_writes = 300 if args.profile_writes is None else args.profile_writes
    if not 1 <= args.requests <= 100_000 or not all(1 <= n <= 256 for n in args.clients):
        parser.error("--requests must be 1–100000 and each client count 1–256")
    return args


def _terminate(_signum: int, _frame: Any) -> None:
    raise SystemExit(143)  # unwinds through the finally blocks that stop the server and drop the scratch database


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    check_loopback(args.postgres_url)
    targets = []
    if args.backend in ("sqlite", "both"):
        targets += [Target("sqlite", int(w)) for w in args.sqlite_workers.split(",")]
    notes: list[str] = []
    postgres = args.backend in ("postgres", "both")
    if postgres and not postgres_answers(args.postgres_url):
        if args.backend == "postgres" or not args.smoke:
            progress(f"PostgreSQL does not answer at {args.postgres_url}")
            return 2
        notes.append("PostgreSQL did not answer: measured SQLite only.")
        progress(notes[-1])
        postgres = False
    if postgres:
        targets += [Target("postgresql", int(w)) for w in args.postgres_workers.split(",")]
        notes.append(f"- {postgres_version(args.postgres_url)}")

    started = time.perf_counter()
    when = datetime.now().astimezone()
    load_at_start = load_average()
    progress(f"load average at the start: {load_at_start}")
    if float(load_at_start.split()[0] if load_at_start != "?" else 0) > 0.5:
        progress("warning: the machine is busy; other processes will take CPU from the server and the client")
    cells: list[Cell] = []
    profiles: list[ProfileResult] = []
    with tempfile.TemporaryDirectory(prefix="hie-bench-") as tmp:
        workdir = Path(tmp)
        try:
            for target in [] if args.skip_http else targets:
                progress(f"{target.label}: preparing a fresh database")
                prepare_database(target, workdir, args.postgres_url)
                server = Server(target, workdir / f"server-{target.backend}-{target.workers}.log")
                try:
                    ready = server.start()
                    progress(f"{target.label}: server ready at {server.base} after {ready:.1f} s")
                    cells += asyncio.run(
                        measure_server(
                            target,
                            server,
                            args.clients,
                            args.requests,
                            args.seed,
                            args.phase_timeout,
                            args.quiet_wait,
                            args.client,
                        )
                    )
                finally:
                    server.stop()
                if any(c.failures for c in cells):
                    progress(f"server log (last lines):\n{server.log_tail()}")
                    break
            if args.profile_writes and not any(c.failures for c in cells):
                seen = set()
                for target in targets:
                    if target.backend in seen:
                        continue
                    seen.add(target.backend)
                    progress(f"{target.backend}: in-process profile of {args.profile_writes} writes")
                    if target.backend == "sqlite":
                        url = f"sqlite:///{workdir / 'profile.db'}"
                    else:
                        recreate_postgres(args.postgres_url)
                        url = args.postgres_url
                    profiles += profile_writes(target, url, args.profile_writes, args.seed, args.quiet_wait)
        finally:
            if postgres:
                with contextlib.suppress(Exception):
                    recreate_postgres(args.postgres_url, drop_only=True)

    failed = [c for c in cells if c.failures]
    out = [
        f"## CRUD over HTTP — {when:%Y-%m-%d %H:%M %Z}",
        "",
        f"Command: `python bench/crud.py {' '.join(argv if argv is not None else sys.argv[1:])}`".rstrip() + "  ",
        f"{args.requests} requests per cell, clients {', '.join(map(str, args.clients))}; "
        f"run took {time.perf_counter() - started:.0f} s.",
        "",
        *machine(),
        *notes,
        code_measured(),
        "",
        *(figures_table(cells) if cells else ["(no HTTP measurements: --skip-http)"]),
        "",
        "CPU columns: cores used during the cell (user + system) by the server's processes, by PostgreSQL's processes, "
        "by this client and by anything else on the machine (a busy machine skews the figures); the machine has the "
        "nproc above. server+db CPU ms/req: CPU time the server and its database spent per request, the figure "
        f"least moved by other load. Load average at the start: {load_at_start}; at the end: {load_average()}.",
        *profile_tables(profiles),
    ]
    print("\n".join(out))
    if failed:
        for c in failed:
            progress(f"FAILED {c.target} {c.operation} ×{c.clients}: {len(c.failures)} — {c.failures[:3]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
