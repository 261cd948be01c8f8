"""``$meta``, ``$meta-add`` and ``$meta-delete`` (R4B resource-operation-meta, -meta-add, -meta-delete).

Tags and security labels are the same when system and code are; profiles when the URLs are. A change of
``meta`` through ``$meta-add`` or ``$meta-delete`` writes a new version (method PATCH): versions stay
immutable, security labels that govern access keep an audit trail in the history, and the ``_tag``,
``_security`` and ``_profile`` index rows follow. A call that changes nothing writes nothing.
``$meta`` at type or system level lists the distinct tags, security labels and profiles of current
resources, read from the search index (codings without display), of the resources the caller may read (the
access condition of searches): an institution learns only the tags and labels of what it may read.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from fhir_server.operations.base import Invocation, Operation
from fhir_server.search.param_ids import ids_named
from fhir_server.search.query import Restriction
from fhir_server.storage.tables import resources, token_index, uri_index

_META_OUT = {"name": "return", "use": "out", "min": 1, "max": "1", "type": "Meta"}
_META_IN = {
    "name": "meta",
    "use": "in",
    "min": 1,
    "max": "1",
    "type": "Meta",
    "documentation": "The tags, security labels and profiles (other elements of the Meta are ignored).",
}
_LISTS = ("profile", "security", "tag")


def _declaration(code: str, name: str, title: str, *, instance_only: bool, description: str) -> dict[str, Any]:
    return {
        "id": f"Resource-{code}",
        "name": name,
        "title": title,
        "code": code,
        "resource": ["Resource"],
        "system": not instance_only,
        "type": not instance_only,
        "instance": True,
        "affectsState": instance_only,
        "base": f"http://hl7.org/fhir/OperationDefinition/Resource-{code}",
        "description": description,
        "parameter": [*([] if code == "meta" else [_META_IN]), _META_OUT],
    }


def meta(call: Invocation, conn: Connection) -> dict[str, Any]:
    if call.res_id is not None:
        current = call.service.read(conn, call.res_type or "", call.res_id, access=call.access)
        return _parameters(current.resource().get("meta") or {})
    return _parameters(_in_use(conn, call.res_type, call.access.restriction))


def meta_add(call: Invocation, conn: Connection) -> dict[str, Any]:
    return _change(call, conn, adding=True)


def meta_delete(call: Invocation, conn: Connection) -> dict[str, Any]:
    return _change(call, conn, adding=False)


def _change(call: Invocation, conn: Connection, *, adding: bool) -> dict[str, Any]:
    res_type, res_id = call.res_type or "", call.res_id or ""
    current = call.service.repository.current(conn, res_type, res_id, lock=True)
    if current is None or current.deleted:
        current = call.service.read(conn, res_type, res_id)  # raises the 404 or 410
    old = current.resource().get("meta") or {}
    new = merge_meta(old, call.one("meta"), adding=adding)
    if all(new.get(key) == old.get(key) for key in _LISTS):
        return _parameters(old)
    patch = [{"op": "add", "path": "/meta", "value": new}]
    result = call.service.patch(conn, res_type, res_id, patch, if_match=current.version)
    return _parameters(result.version.resource()["meta"])


def merge_meta(meta: dict[str, Any], change: dict[str, Any], *, adding: bool) -> dict[str, Any]:
    """``meta`` with the profiles, security labels and tags of ``change`` added (or removed)."""
    merged = dict(meta)
    for key in _LISTS:
        present = list(merged.get(key) or [])
        given = change.get(key) or []
        if adding:
            for item in given:
                if not any(_same(key, item, old) for old in present):
                    present.append(item)
        else:
            present = [old for old in present if not any(_same(key, item, old) for item in given)]
        if present:
            merged[key] = present
        else:
            merged.pop(key, None)
    return merged


def _same(key: str, a: Any, b: Any) -> bool:
    if key == "profile":
        return a == b
    return (
        isinstance(a, dict)
        and isinstance(b, dict)
        and (a.get("system"), a.get("code")) == (b.get("system"), b.get("code"))
    )


def _in_use(conn: Connection, res_type: str | None, restriction: Restriction | None = None) -> dict[str, Any]:
    """The distinct tags, security labels and profiles of current resources (of one type, or all) that
    ``restriction`` (the caller's access condition; None: every resource) lets the caller read."""
    found: dict[str, Any] = {}
    live = [resources.c.deleted.is_(False)] + ([resources.c.res_type == res_type] if res_type else [])
    if restriction is not None:
        live.append(restriction(resources, res_type))
    for key, param in (("security", "_security"), ("tag", "_tag")):
        query = (
            select(token_index.c.system, token_index.c.code)
            .join(resources, resources.c.res_pk == token_index.c.res_pk)
            .where(token_index.c.param_id.in_(ids_named([param], [res_type] if res_type else None)), *live)
            .distinct()
            .order_by(token_index.c.system, token_index.c.code)
        )
        codings = [{k: v for k, v in (("system", row.system), ("code", row.code)) if v} for row in conn.execute(query)]
        if codings:
            found[key] = codings
    query = (
        select(uri_index.c.uri)
        .join(resources, resources.c.res_pk == uri_index.c.res_pk)
        .where(uri_index.c.param_id.in_(ids_named(["_profile"], [res_type] if res_type else None)), *live)
        .distinct()
        .order_by(uri_index.c.uri)
    )
    profiles = list(conn.execute(query).scalars())
    if profiles:
        found["profile"] = profiles
    return found


def _parameters(meta: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "return", "valueMeta": meta}]}


META = Operation(
    _declaration(
        "meta",
        "Meta",
        "Access a list of profiles, tags and security labels",
        instance_only=False,
        description="The Meta of a resource, or the profiles, tags and security labels in use at type or system level.",
    ),
    meta,
)
META_ADD = Operation(
    _declaration(
        "meta-add",
        "MetaAdd",
        "Add profiles, tags and security labels to a resource",
        instance_only=True,
        description="Adds what is not there yet; a change writes a new version (method PATCH), no change writes none.",
    ),
    meta_add,
)
META_DELETE = Operation(
    _declaration(
        "meta-delete",
        "MetaDelete",
        "Delete profiles, tags and security labels from a resource",
        instance_only=True,
        description="Removes matching entries; a change writes a new version (method PATCH), no change writes none.",
    ),
    meta_delete,
)
