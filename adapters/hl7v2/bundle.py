"""One HL7 v2 message as a FHIR R4B transaction Bundle (§3.1.0.11.2) closed by a Provenance.

Conditional update for records the message owns, conditional create (ifNoneExist) for those it only points at.
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import quote

__all__ = ["TransactionBuilder", "conditional_query"]

_NAMESPACE = uuid.UUID("6f0b8a52-3c1e-5d47-9a0e-2b8c4e1d7a63")
_PARTICIPANT_TYPES = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def conditional_query(system: str, value: str) -> str:
    """`identifier=system|value` with FHIR search escapes (R4B search, "Escaping") and URL encoding."""

    def token(text: str) -> str:
        return quote(re.sub(r"([\\|,$])", r"\\\1", text), safe=":/")

    return f"identifier={token(system)}|{token(value)}"


class TransactionBuilder:
    """Collects the entries of one message's transaction; a repeated key returns the first entry's fullUrl."""

    def __init__(self, message_key: str) -> None:
        self._message_key = message_key
        self._entries: list[dict[str, Any]] = []
        self._by_key: dict[str, str] = {}
        self._targets: list[str] = []

    def upsert(self, resource: dict[str, Any], system: str, value: str) -> str:
        """Conditional update: create or replace the `resourceType` with this identifier."""
        query = conditional_query(system, value)
        request = {"method": "PUT", "url": f"{resource['resourceType']}?{query}"}
        return self._add(resource, request, f"{resource['resourceType']}?{query}")

    def ensure(self, resource: dict[str, Any], system: str, value: str) -> str:
        """Conditional create: create this resource only when none has the identifier yet."""
        query = conditional_query(system, value)
        request = {"method": "POST", "url": resource["resourceType"], "ifNoneExist": query}
        return self._add(resource, request, f"{resource['resourceType']}?{query}")

    def invoke(self, parameters: dict[str, Any], url: str) -> str:
        """An operation inside the transaction (R4B §3.1.0.11.2), e.g. `Patient/$merge`; not a Provenance target."""
        return self._add(parameters, {"method": "POST", "url": url}, f"{url}#{len(self._entries)}", target=False)

    def full_url(self, resource_type: str, system: str, value: str) -> str | None:
        """The fullUrl already given to the resource with this identifier, if any."""
        return self._by_key.get(f"{resource_type}?{conditional_query(system, value)}")

    def bundle(
        self, *, recorded: str, agent: dict[str, Any], source: dict[str, Any], activity: dict[str, Any]
    ) -> dict[str, Any]:
        """The transaction Bundle: the entries, then a Provenance naming `agent` and the `source` message."""
        provenance = {
            "resourceType": "Provenance",
            "target": [{"reference": full_url} for full_url in self._targets],
            "recorded": recorded,
            "activity": activity,
            "agent": [
                {
                    "type": {"coding": [{"system": _PARTICIPANT_TYPES, "code": "author", "display": "Author"}]},
                    "who": agent,
                }
            ],
            "entity": [{"role": "source", "what": source}],
        }
        entries = [
            *self._entries,
            {
                "fullUrl": self._full_url("Provenance"),
                "resource": provenance,
                "request": {"method": "POST", "url": "Provenance"},
            },
        ]
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}

    def _add(self, resource: dict[str, Any], request: dict[str, Any], key: str, *, target: bool = True) -> str:
        if key in self._by_key:
            return self._by_key[key]
        full_url = self._full_url(key)
        self._by_key[key] = full_url
        self._entries.append({"fullUrl": full_url, "resource": resource, "request": request})
        if target:
            self._targets.append(full_url)
        return full_url

    def _full_url(self, key: str) -> str:
        # Derived from the message and the entry's key: mapping the same message twice gives the same Bundle.
        return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{self._message_key}|{key}')}"
