"""Rest-hook notifications as plain data: the HTTP request owed for one event, and its HMAC-SHA256 signature.

R4 rest-hook (Subscription.channel): no payload → ``POST [endpoint]`` without a body; a payload →
``PUT [endpoint]/[type]/[id]`` with the resource. ``id-only`` (backport payload-content extension) sends a
``history`` Bundle naming the resource without its content. Every request carries ``X-HIE-Event``
(``Type/id/_history/version``, the idempotency key) and, with a secret, ``X-HIE-Signature``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import orjson

from fhir_server.repository import instant
from fhir_server.subscriptions.criteria import SubscriptionSpec

SIGNATURE_HEADER = "X-HIE-Signature"
EVENT_HEADER = "X-HIE-Event"
SUBSCRIPTION_HEADER = "X-HIE-Subscription"


@dataclass(frozen=True)
class Notification:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class EventRef:
    """The version a notification is about."""

    res_type: str
    res_id: str
    version: int
    method: str
    ts: int

    @property
    def key(self) -> str:
        return f"{self.res_type}/{self.res_id}/_history/{self.version}"


def signature(secret: str, timestamp: int, event: str, body: bytes) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<event>." + body>``."""
    message = f"{timestamp}.{event}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, event: str, body: bytes, *, now: int, tolerance: int = 300) -> bool:
    """A receiver's check of ``X-HIE-Signature``: right key, same body and event, recent timestamp."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if not parts.get("t", "").isdigit() or "v1" not in parts:
        return False
    timestamp = int(parts["t"])
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, event, body), header.strip())


def notification(
    spec: SubscriptionSpec,
    event: EventRef,
    body: bytes | None,
    *,
    base_url: str | None,
    secret: str | None,
    now: int,
) -> Notification:
    """The request that notifies ``spec``'s endpoint of ``event`` (``body``: the version's JSON, if needed)."""
    endpoint = (spec.endpoint or "").rstrip("/")
    headers = {name: value for name, value in spec.headers}
    headers[EVENT_HEADER] = event.key
    headers[SUBSCRIPTION_HEADER] = f"Subscription/{spec.id}"
    if spec.content == "empty":
        method, url, payload = "POST", spec.endpoint or "", b""
    elif spec.content == "id-only":
        method, url, payload = "POST", spec.endpoint or "", orjson.dumps(id_only_bundle(event, base_url))
    else:
        if body is None:
            raise ValueError(f"a full-resource notification of {event.key} needs its body")
        method, url, payload = "PUT", f"{endpoint}/{event.res_type}/{event.res_id}", body
    if payload:
        headers["Content-Type"] = spec.mime or "application/fhir+json"
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, now, event.key, payload)
    return Notification(method, url, headers, payload)


def id_only_bundle(event: EventRef, base_url: str | None) -> dict:
    """A ``history`` Bundle with one entry naming the changed version, without its content."""
    relative = f"{event.res_type}/{event.res_id}"
    full_url = f"{base_url.rstrip('/')}/{relative}" if base_url else relative
    status = "201 Created" if event.version == 1 else "200 OK"
    return {
        "resourceType": "Bundle",
        "type": "history",
        "timestamp": instant(event.ts),
        "entry": [
            {
                "fullUrl": full_url,
                "request": {"method": "POST" if event.version == 1 else "PUT", "url": relative},
                "response": {
                    "status": status,
                    "location": event.key,
                    "etag": f'W/"{event.version}"',
                    "lastModified": instant(event.ts),
                },
            }
        ],
    }


__all__ = ["EVENT_HEADER", "SIGNATURE_HEADER", "EventRef", "Notification", "notification", "signature", "verify"]
