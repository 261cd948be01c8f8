"""Content negotiation and request headers of the FHIR RESTful API (R4B §3.1.0.1.x, §3.1.0.10)."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
from starlette.requests import Request

from fhir_server.errors import FhirError
from fhir_server.search.values import to_micros

FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"
_JSON_TYPES = {FHIR_JSON, "application/json", "json", "text/json", "*/*", "application/*"}
_FORMAT_ALIASES = {"json", "application/json", FHIR_JSON, "text/json"}


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def header_value(request: Request, name: bytes) -> str | None:
    """The first value of a request header, ``name`` in lower case as ASGI gives names; None when it is absent
    (``request.headers.get`` raises and catches a ``KeyError`` for each absent one)."""
    for key, value in request.headers.raw:
        if key == name:
            return value.decode("latin-1")
    return None


def check_accept(request: Request) -> None:
    """Only JSON is served; ``_format`` overrides Accept. Anything else is 406."""
    requested = request.query_params.get("_format")
    if requested is not None:
        if requested.strip().lower() not in _FORMAT_ALIASES:
            raise FhirError("not-acceptable", f"_format={requested} is not served here; use _format=json.")
        return
    accept = header_value(request, b"accept")
    if not accept:
        return
    offered = [media_type(part) for part in accept.split(",")]
    if not any(kind in _JSON_TYPES or kind.endswith("+json") for kind in offered):
        raise FhirError(
            "not-acceptable", f"This server answers in {FHIR_JSON} only; the Accept header asks for {accept}."
        )


def check_content_type(request: Request, *allowed: str) -> str:
    kind = media_type(request.headers.get("content-type"))
    if kind not in allowed:
        expected = " or ".join(allowed)
        shown = kind or "none"
        raise FhirError("unsupported-media-type", f"Content-Type {shown} is not accepted here; send {expected}.")
    return kind


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise FhirError("too-long", f"The request body of {declared} bytes exceeds the limit of {limit} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FhirError("too-long", f"The request body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def prefer_return(request: Request) -> str:
    """``Prefer: return=minimal | representation | OperationOutcome`` (R4B §3.1.0.8.3)."""
    for part in request.headers.get("prefer", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip() == "return":
            value = value.strip().strip('"')
            if value in ("minimal", "representation", "OperationOutcome"):
                return value
    return "representation"


def if_match_version(request: Request) -> int | None:
    """``If-Match: W/"3"`` → 3."""
    header = request.headers.get("if-match")
    if header is None:
        return None
    return parse_etag(header, "If-Match")


def parse_etag(header: str, name: str) -> int:
    tag = header.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise FhirError("invalid", f'{name} must hold a version ETag like W/"3", not {header}.')
    return int(tag)


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(micros: int) -> str:
    """An IMF-fixdate (RFC 9110 §5.6.7) of a timestamp in microseconds: ``Tue, 19 Nov 2024 07:06:40 GMT``."""
    t = time.gmtime(micros // 1_000_000)
    return (
        f"{_WEEKDAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def not_modified(request: Request, version: int, ts: int) -> bool:
    """Conditional read: ``If-None-Match`` or ``If-Modified-Since`` (R4B §3.1.0.2.1)."""
    none_match = header_value(request, b"if-none-match")
    if none_match is not None:
        return any(tag.strip().removeprefix("W/").strip('"') in (str(version), "*") for tag in none_match.split(","))
    since = header_value(request, b"if-modified-since")
    if since is not None:
        try:
            moment = parsedate_to_datetime(since)
        except (TypeError, ValueError):
            raise FhirError("invalid", f"If-Modified-Since is not an HTTP date: {since}") from None
        return ts // 1_000_000 <= to_micros(moment) // 1_000_000
    return False


def dump(body: Any, request: Request) -> bytes:
    pretty = request.query_params.get("_pretty") == "true"
    return orjson.dumps(body, option=orjson.OPT_INDENT_2 if pretty else 0)
