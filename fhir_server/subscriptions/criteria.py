"""What a Subscription asks for (R4B Subscription: R4-style criteria and channel), checked when it is written.

Criteria are searches (``Observation?code=…``) run by the search engine (``subscriptions.matching``), so
every parameter, modifier and chain of search works the same in a subscription.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhir_server import definitions
from fhir_server.errors import FhirError, Issue
from fhir_server.search.parameters import Registry, default_registry
from fhir_server.search.request import PASSIVE_PARAMETERS, RESULT_PARAMETERS, parse_request
from fhir_server.search.values import date_range

SIGNING_SECRET_URL = "https://hie.wuzhou.gov.cn/fhir/StructureDefinition/subscription-signing-secret"
"""Extension on ``Subscription.channel`` (valueString): the subscriber's HMAC-SHA256 key for our signatures."""
PAYLOAD_CONTENT_URL = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content"
"""Extension on ``Subscription.channel.payload`` (valueCode ``empty``, ``id-only`` or ``full-resource``)."""
CHANNELS = ("rest-hook", "websocket")
PAYLOAD_CONTENTS = ("empty", "id-only", "full-resource")
PAYLOAD_TYPES = ("application/fhir+json", "application/json")


@dataclass(frozen=True)
class SubscriptionSpec:
    """A Subscription reduced to what matching and delivery need."""

    id: str
    status: str
    res_type: str
    params: tuple[tuple[str, str], ...]
    channel: str
    endpoint: str | None
    content: str
    """``empty`` (no payload), ``id-only`` or ``full-resource``."""
    mime: str | None
    headers: tuple[tuple[str, str], ...]
    secret: str | None
    end: int | None
    owner: str | None = None
    """The institution that created the Subscription: it is notified only of what it may read (consent as of the
    match); None for the exchange's own."""


def split_criteria(criteria: str) -> tuple[str, list[tuple[str, str]]]:
    """``Type?a=1&b=2`` → ``("Type", [("a", "1"), ("b", "2")])``; a bare type subscribes to every change of it."""
    res_type, _, query = criteria.strip().partition("?")
    return res_type, parse_qsl(query, keep_blank_values=True)


def parse_subscription(resource: dict[str, Any]) -> SubscriptionSpec:
    """Read a Subscription; raises FhirError naming the first element this server cannot honour."""
    criteria = resource.get("criteria") or ""
    res_type, params = split_criteria(criteria)
    if res_type not in definitions.resource_types():
        raise _invalid(f"criteria '{criteria}' must start with an R4B resource type (Type?params).", "criteria")
    for name, _ in params:
        if name.split(":", 1)[0] in RESULT_PARAMETERS | PASSIVE_PARAMETERS:
            raise _invalid(f"criteria may not use the result parameter {name}.", "criteria")
    channel = resource.get("channel") or {}
    kind = channel.get("type")
    if kind not in CHANNELS:
        raise FhirError(
            "not-supported",
            f"Subscription.channel.type '{kind}' is not served here; use one of {', '.join(CHANNELS)}.",
            expression=("Subscription.channel.type",),
        )
    endpoint = channel.get("endpoint")
    if kind == "rest-hook" and urlsplit(endpoint or "").scheme not in ("http", "https"):
        raise _invalid("a rest-hook Subscription needs an http(s) channel.endpoint.", "channel.endpoint")
    mime = channel.get("payload")
    content = _extension(channel.get("_payload"), PAYLOAD_CONTENT_URL, "valueCode")
    if mime is None:
        content = "empty"
    elif mime not in PAYLOAD_TYPES:
        raise _invalid(f"channel.payload '{mime}' is not served here; use application/fhir+json.", "channel.payload")
    content = content or "full-resource"
    if content not in PAYLOAD_CONTENTS:
        raise _invalid(f"payload content '{content}' is not one of {', '.join(PAYLOAD_CONTENTS)}.", "channel.payload")
    headers = []
    for header in channel.get("header") or []:
        name, colon, value = header.partition(":")
        if not colon or not name.strip() or not header.isascii() or any(c in header for c in "\r\n"):
            raise _invalid(
                f"channel.header '{header}' is not 'Name: value' in ASCII (RFC 9110 §5.5).", "channel.header"
            )
        headers.append((name.strip(), value.strip()))
    end = date_range(resource["end"]) if resource.get("end") else None
    return SubscriptionSpec(
        id=resource.get("id", ""),
        status=resource.get("status", ""),
        res_type=res_type,
        params=tuple(params),
        channel=kind,
        endpoint=endpoint,
        content=content,
        mime=mime,
        headers=tuple(headers),
        secret=_extension(channel, SIGNING_SECRET_URL, "valueString"),
        end=end[1] if end else None,
    )


def _extension(element: dict[str, Any] | None, url: str, value: str) -> str | None:
    for extension in (element or {}).get("extension") or []:
        if extension.get("url") == url:
            return extension.get(value)
    return None


def _invalid(message: str, element: str) -> FhirError:
    return FhirError("invalid", f"Subscription {message}", expression=(f"Subscription.{element}",))


def check_subscription(resource: dict[str, Any], registry: Registry | None = None) -> list[Issue]:
    """Write check: refuse a Subscription whose criteria or channel this server could not serve."""
    if resource.get("resourceType") != "Subscription":
        return []
    try:
        spec = parse_subscription(resource)
        parse_request(registry or default_registry(), (spec.res_type,), list(spec.params))
    except FhirError as error:
        return error.issues
    return []


__all__ = [
    "PAYLOAD_CONTENT_URL",
    "SIGNING_SECRET_URL",
    "SubscriptionSpec",
    "check_subscription",
    "parse_subscription",
    "split_criteria",
]
