"""Bundles the API returns: history (R4B §3.1.0.10) with keyset paging links."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlencode

from fhir_server.errors import FhirError
from fhir_server.repository import Version, instant

_STATUS = {"POST": "201 Created", "DELETE": "204 No Content"}


def encode_cursor(*parts: int) -> str:
    return base64.urlsafe_b64encode(".".join(map(str, parts)).encode()).decode().rstrip("=")


def decode_cursor(token: str, size: int) -> tuple[int, ...]:
    try:
        parts = tuple(int(p) for p in base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().split("."))
    except (ValueError, UnicodeDecodeError):
        parts = ()
    if len(parts) != size:
        raise FhirError("invalid", "The paging cursor is not one this server issued; start again from the first page.")
    return parts


def history_entry(base: str, version: Version) -> dict[str, Any]:
    url = f"{version.res_type}/{version.res_id}"
    if version.method == "POST":
        request = {"method": "POST", "url": version.res_type}
        status = "201 Created"
    else:
        request = {"method": version.method, "url": url}
        status = _STATUS.get(version.method, "201 Created" if version.version == 1 else "200 OK")
    entry: dict[str, Any] = {"fullUrl": f"{base}/{url}"}
    if version.body is not None:
        entry["resource"] = version.resource()
    entry["request"] = request
    entry["response"] = {
        "status": status,
        "etag": version.etag,
        "lastModified": instant(version.ts),
        "location": f"{base}/{version.location}",
    }
    return entry


def history_bundle(
    base: str, path: str, params: list[tuple[str, str]], versions: list[Version], count: int, total: int | None
) -> dict[str, Any]:
    kept = [(k, v) for k, v in params if k != "_cursor"]
    links = [
        {"relation": "self", "url": _url(base, path, params)},
        {"relation": "first", "url": _url(base, path, kept)},
    ]
    if len(versions) > count:
        last = versions[count - 1]
        links.append(
            {
                "relation": "next",
                "url": _url(base, path, [*kept, ("_cursor", encode_cursor(last.ts, last.res_pk, last.version))]),
            }
        )
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    bundle["entry"] = [history_entry(base, v) for v in versions[:count]]
    return bundle


def _url(base: str, path: str, params: list[tuple[str, str]]) -> str:
    query = urlencode(params)
    return f"{base}/{path}" + (f"?{query}" if query else "")
