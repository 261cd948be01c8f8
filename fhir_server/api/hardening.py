"""Hardening of the HTTP surface: rate limits, request timeouts, security headers, CORS, masked logs.

- Per-client rate limits: a token bucket per ``principal.client_id`` (the remote address when the caller is not
  authenticated), ``HIE_RATE_LIMIT_PER_SECOND`` and ``HIE_RATE_LIMIT_BURST``; over the limit → 429 with
  ``Retry-After``. Buckets live in each worker process, so N workers allow up to N times the rate.
- Request timeouts: a request still running after ``HIE_REQUEST_TIMEOUT_SECONDS`` is answered 503.
- Security headers on every response (OWASP Secure Headers; ``Cache-Control: no-store`` under ``/fhir``).
- CORS (``HIE_CORS_ORIGINS``) with Starlette's ``CORSMiddleware``, off by default.
- Resident ID numbers (GB 11643, 18 or 15 digits) and mobile numbers are masked in every log line.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import Depends, FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_server.auth.principal import ANONYMOUS, SYSTEM
from fhir_server.config import Settings
from fhir_server.errors import FhirError, http_status

FHIR_JSON = "application/fhir+json"
_RESIDENT_ID = re.compile(r"(?<![0-9])([0-9]{17}[0-9Xx]|[0-9]{15})(?![0-9A-Za-z])")
_MOBILE = re.compile(r"(?:(?<=\+86)|(?<![0-9]))1[3-9][0-9]{9}(?![0-9])")
log = logging.getLogger("hie.api")


# -- masked logs --------------------------------------------------------------------------------------------------


def mask_identifiers(text: str) -> str:
    """Resident ID numbers keep their last 4 characters, mobile numbers their first 3 and last 4."""
    text = _RESIDENT_ID.sub(lambda m: "*" * (len(m.group(0)) - 4) + m.group(0)[-4:], text)
    return _MOBILE.sub(lambda m: m.group(0)[:3] + "****" + m.group(0)[-4:], text)


class MaskingFilter(logging.Filter):
    """Masks resident ID and mobile numbers in each record: in its string arguments (formatters such as uvicorn's
    access log read them), and in the message as a whole when other arguments still carry one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_identifiers(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(mask_identifiers(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: mask_identifiers(v) if isinstance(v, str) else v for k, v in record.args.items()}
        if record.args and not record.name.startswith("uvicorn.access"):
            try:
                message = record.getMessage()
            except Exception:  # a malformed record: leave it to the handler to report
                return True
            masked = mask_identifiers(message)
            if masked != message:
                record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_identifiers(logging.Formatter().formatException(record.exc_info))
        return True


LOGGERS = ("", "uvicorn", "uvicorn.access", "uvicorn.error", "celery")


def install_log_masking(loggers: tuple[str, ...] = LOGGERS) -> None:
    """Put one ``MaskingFilter`` on every handler of these loggers (idempotent; call after logging is set up)."""
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, MaskingFilter) for f in handler.filters):
                handler.addFilter(MaskingFilter())


# -- rate limits --------------------------------------------------------------------------------------------------


class RateLimiter:
    """Token buckets by key: ``rate`` tokens per second, at most ``burst`` saved up."""

    MAX_KEYS = 100_000

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst if burst > 0 else max(1, math.ceil(2 * rate)))
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one token of ``key``'s bucket: 0 when allowed, else the seconds until a token is available."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._store(key, tokens - 1, now)
                return 0.0
            self._store(key, tokens, now)
            return (1 - tokens) / self.rate

    def _store(self, key: str, tokens: float, now: float) -> None:
        if key not in self._buckets and len(self._buckets) >= self.MAX_KEYS:
            full = [k for k, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst]
            for stale in full or list(self._buckets)[: self.MAX_KEYS // 10]:
                del self._buckets[stale]
        self._buckets[key] = (tokens, now)


def rate_limit_key(connection: HTTPConnection) -> str:
    """The authenticated client, else (no token, or authentication off) the remote address."""
    state = connection.scope.get("state") or {}
    principal = state.get("principal")
    if principal is not None and principal is not SYSTEM and principal.client_id != ANONYMOUS.client_id:
        return f"client:{principal.client_id}"
    client = connection.scope.get("client")
    return f"address:{client[0] if client else 'unknown'}"


def rate_limit_dependency(limiter: RateLimiter) -> Callable[[HTTPConnection], Awaitable[None]]:
    """A FastAPI dependency of every route: runs after authentication, so it can key on the client."""

    async def check_rate(connection: HTTPConnection) -> None:
        limit_rate(limiter, connection)

    return check_rate


def limit_rate(limiter: RateLimiter, connection: HTTPConnection) -> None:
    """Spend one of the caller's tokens; 429 with ``Retry-After`` when the bucket is empty."""
    wait = limiter.take(rate_limit_key(connection))
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise FhirError(
            "throttled",
            f"Too many requests: this client may make {limiter.rate:g} per second; retry in {seconds} s.",
            headers={"Retry-After": str(seconds)},
        )


# -- timeouts and headers -----------------------------------------------------------------------------------------


def _error_messages(error: FhirError) -> tuple[Message, Message]:
    body = orjson.dumps(error.outcome())
    headers = [(b"content-type", FHIR_JSON.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    start = {"type": "http.response.start", "status": http_status(error), "headers": headers}
    return start, {"type": "http.response.body", "body": body}


class TimeoutMiddleware:
    """Answers 503 when a request has not begun its response after ``seconds``.

    The answer goes out at the deadline; work already handed to a worker thread (a database transaction) runs to
    its end in the background, and whatever it answers then is discarded. A response already streaming out (a
    bulk export file) is not cut. The deadline is a timer on the event loop, not a task per request.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.seconds <= 0:
            await self.app(scope, receive, send)
            return
        deadline = _Deadline(send, self.seconds)
        timer = asyncio.get_running_loop().call_later(self.seconds, deadline.expire)
        try:
            await self.app(scope, receive, deadline.send)
        except asyncio.CancelledError:
            if not deadline.cancelled_here():
                raise
        except Exception:
            if deadline.answer is None:
                raise
            log.exception("a request failed after its 503 timeout answer had been sent")
        finally:
            timer.cancel()
        if deadline.answer is not None:
            await deadline.answer


class _Deadline:
    """The timeout state of one request: whether its response started, and the 503 sent at the deadline."""

    __slots__ = ("_send", "answer", "seconds", "started", "task")

    def __init__(self, send: Send, seconds: float) -> None:
        self._send = send
        self.seconds = seconds
        self.started = False
        self.task = asyncio.current_task()
        self.answer: asyncio.Task[None] | None = None

    async def send(self, message: Message) -> None:
        if self.answer is not None:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    def expire(self) -> None:
        """At the deadline: unless the response has begun, answer 503 and cancel the request's work."""
        if self.started or self.task is None or self.task.done():
            return
        self.answer = asyncio.get_running_loop().create_task(self._answer())
        self.task.cancel()

    def cancelled_here(self) -> bool:
        """Whether a cancellation is this deadline's own (then it is absorbed), not the server's."""
        if self.answer is None or self.task is None:
            return False
        return self.task.uncancel() == 0

    async def _answer(self) -> None:
        error = FhirError(
            "transient",
            f"The request did not finish within {self.seconds:g} s; try again later or narrow it.",
            headers={"Retry-After": "1"},
        )
        for message in _error_messages(error):
            await self._send(message)


API_HEADERS = {
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
}
DOCS_PATHS = ("/docs", "/openapi.json")
"""The interactive API documentation loads scripts and styles; it gets no ``Content-Security-Policy``."""


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP response that does not set them itself."""

    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        self.app = app
        self.hsts = hsts
        self._fhir = self._headers(csp=True, no_store=True)  # built once: the same few lists for every response
        self._other = self._headers(csp=True, no_store=False)
        self._docs = self._headers(csp=False, no_store=False)
        self._names = frozenset(name for name, _ in self._fhir + self._other)

    def _headers(self, *, csp: bool, no_store: bool) -> list[tuple[bytes, bytes]]:
        extra = dict(API_HEADERS)
        if csp:
            extra[b"content-security-policy"] = b"default-src 'none'; frame-ancestors 'none'"
        if no_store:
            extra[b"cache-control"] = b"no-store"
        if self.hsts:
            extra[b"strict-transport-security"] = b"max-age=31536000; includeSubDomains"
        return list(extra.items())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == "/fhir" or path.startswith("/fhir/"):
            extra = self._fhir
        else:
            extra = self._docs if path.startswith(DOCS_PATHS) else self._other

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                if present.isdisjoint(self._names):  # the usual case: the response sets none of them
                    headers += extra
                else:
                    headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def cors_origins(settings: Settings) -> list[str]:
    return [origin.strip() for origin in settings.cors_origins.split(",") if origin.strip()]


def install_hardening(app: FastAPI, settings: Settings, *, inner: Callable[[], None] | None = None) -> None:
    """Add the hardening middleware: the timeout innermost, then ``inner`` (the audit), headers and CORS outermost."""
    app.add_middleware(TimeoutMiddleware, seconds=settings.request_timeout_seconds)
    if inner is not None:
        inner()
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.hsts)
    origins = cors_origins(settings)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["Location", "Content-Location", "ETag", "Last-Modified", "Retry-After"],
            allow_credentials=False,
        )


def rate_limiter(settings: Settings) -> RateLimiter | None:
    """The limiter of ``HIE_RATE_LIMIT_PER_SECOND`` (None when it is 0)."""
    if settings.rate_limit_per_second <= 0:
        return None
    return RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)


def rate_limits(limiter: RateLimiter | None) -> list[Any]:
    """The application-wide dependencies enforcing the limiter (none without one)."""
    return [] if limiter is None else [Depends(rate_limit_dependency(limiter))]
