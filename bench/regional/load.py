"""The load generator: concurrent clients over one aiohttp connection pool, a latency recorder with percentiles,
progress lines.

Every request is timed from send to the full response body. A request counts as done when its status is the
expected one; anything else (or a transport error) is a failure, recorded with its first words for the report.

The client is aiohttp's (its HTTP parser is compiled): the generator shares the machine with the server it
measures, and every millisecond of client CPU is one the server does not get. Measured against a trivial ASGI
app at 8 connections: httpx 1.7 ms of client CPU per request, aiohttp 0.2 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

if importlib.util.find_spec("sniffio") is None:
    # httpcore 1.0 imports sniffio on every request; without it each attempt searches sys.path again (~2 ms).
    # (The set-up steps still use httpx.)
    sys.modules["sniffio"] = None  # type: ignore[assignment]

__all__ = [
    "FHIR_JSON",
    "Answer",
    "Cell",
    "Client",
    "LatencyRecorder",
    "auth_headers",
    "open_client",
    "percentile",
    "progress",
    "run_clients",
    "use_token",
]

FHIR_JSON = "application/fhir+json"
PROGRESS_EVERY = 5.0
_TOKEN: list[str] = []


def use_token(token: str | None) -> None:
    """Send ``Authorization: Bearer token`` with every request from now on (None: send none)."""
    _TOKEN[:] = [token] if token else []


def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {_TOKEN[0]}"} if _TOKEN else {}


def progress(message: str) -> None:
    """One progress line on stderr (the report goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0–100) of unsorted values; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class LatencyRecorder:
    """Latencies (seconds) and failures of one measured cell, with a wall-clock span."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    units: int = 0
    started: float = 0.0
    ended: float = 0.0

    def ok(self, seconds: float, units: int = 1) -> None:
        self.latencies.append(seconds)
        self.units += units

    def fail(self, reason: str) -> None:
        self.failures.append(reason[:200])

    @property
    def elapsed(self) -> float:
        return max(self.ended - self.started, 1e-9)

    @property
    def rate(self) -> float:
        """Successful requests per second of wall clock."""
        return len(self.latencies) / self.elapsed

    @property
    def unit_rate(self) -> float:
        """Units (resources, for ingest) per second of wall clock."""
        return self.units / self.elapsed

    def ms(self, p: float) -> float:
        return percentile(self.latencies, p) * 1000


@dataclass
class Cell:
    """One row of figures: a workload at one concurrency on one backend."""

    workload: str
    backend: str
    label: str
    clients: int
    recorder: LatencyRecorder
    resources: int = 0
    unit: str = "req/s"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.recorder.latencies)

    @property
    def failures_text(self) -> str:
        return self.recorder.failures[0][:120].replace("|", "/").replace("\n", " ") if self.recorder.failures else ""


@dataclass(frozen=True)
class Answer:
    """A response read whole: status, headers and body."""

    status_code: int
    headers: CIMultiDictProxy[str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class Client:
    """Keep-alive connections to one base URL; paths are relative to it (``""`` is the base itself, as a
    transaction's endpoint), absolute URLs (``next`` links, ``Content-Location``) are used as they are."""

    def __init__(self, base: str, connections: int, timeout: float) -> None:
        self._base = base.rstrip("/") + "/"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, keepalive_timeout=2.0),
            timeout=aiohttp.ClientTimeout(total=timeout),
            headers={"Accept": FHIR_JSON, **auth_headers()},
        )

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self._base + path.lstrip("/")

    async def request(
        self, method: str, path: str, *, content: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Answer:
        async with self._session.request(method, self.url(path), data=content, headers=headers) as response:
            return Answer(response.status, response.headers, await response.read())

    async def get(self, path: str, *, headers: dict[str, str] | None = None) -> Answer:
        return await self.request("GET", path, headers=headers)

    async def post(self, path: str, *, content: bytes, headers: dict[str, str] | None = None) -> Answer:
        return await self.request("POST", path, content=content, headers=headers)

    async def delete(self, path: str) -> Answer:
        return await self.request("DELETE", path)

    async def download(self, path: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """The body of a GET, chunk by chunk (a large export file is never held whole)."""
        async with self._session.get(self.url(path)) as response:
            response.raise_for_status()
            async for chunk in response.content.iter_chunked(chunk_size):
                yield chunk

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()


TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


def open_client(base: str, connections: int, timeout: float = 300.0) -> Client:
    """One client with room for ``connections`` concurrent keep-alive connections."""
    return Client(base, connections, timeout)


Send = Callable[[Client, int], Awaitable[tuple[bool, int, str]]]
"""One request number ``i``: returns (success, units done, failure reason)."""


async def run_clients(
    base: str,
    send: Send,
    *,
    total: int,
    clients: int,
    label: str,
    time_limit: float = 600.0,
    request_timeout: float = 300.0,
) -> LatencyRecorder:
    """``total`` requests by ``clients`` workers sharing a counter; none starts after ``time_limit`` seconds."""
    recorder = LatencyRecorder()
    counter = iter(range(total))
    deadline = time.perf_counter() + time_limit

    async def worker(client: Client) -> None:
        for i in counter:
            if time.perf_counter() > deadline:
                recorder.fail("time limit reached")
                return
            start = time.perf_counter()
            try:
                good, units, reason = await send(client, i)
            except TRANSPORT_ERRORS as exc:
                good, units, reason = False, 0, f"{type(exc).__name__}: {exc}"
            if good:
                recorder.ok(time.perf_counter() - start, units)
            else:
                recorder.fail(reason)

    async def report() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            done = len(recorder.latencies) + len(recorder.failures)
            spent = time.perf_counter() - recorder.started
            progress(f"  {label}: {done}/{total} in {spent:.0f} s ({done / max(spent, 1e-9):.0f}/s)")

    async with open_client(base, clients, request_timeout) as client:
        with _no_collections():
            recorder.started = time.perf_counter()
            reporter = asyncio.create_task(report())
            try:
                await asyncio.gather(*(worker(client) for _ in range(clients)))
            finally:
                reporter.cancel()
            recorder.ended = time.perf_counter()
    return recorder


@contextlib.contextmanager
def _no_collections() -> Iterator[None]:
    """The load generator's heap (hundreds of thousands of prepared requests) frozen for a timed phase: a full
    collection of it took 120-330 ms, which would otherwise land as a latency spike in the measured figures."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def expect(status: int, response: Answer, units: int = 1) -> tuple[bool, int, str]:
    """(success, units, reason) of a response that should have ``status``."""
    if response.status_code == status:
        return True, units, ""
    return False, 0, f"HTTP {response.status_code}: {response.text[:160]}"
