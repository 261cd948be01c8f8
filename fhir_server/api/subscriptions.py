"""Subscription channels served over HTTP: the R4 websocket channel and ``Subscription/[id]/$resend``.

Websocket (R4B Subscription §websocket): the client connects to ``[base]/websocket`` and sends ``bind [id]``
for a websocket Subscription; the server answers ``bound [id]`` and sends ``ping [id]`` for each
notification. Pings are read from the delivery table, so any process may have matched the event.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request, Response, WebSocket, WebSocketDisconnect
from sqlalchemy import and_, func, or_, select

from fhir_server.api.negotiation import FHIR_JSON, check_accept, check_content_type, read_body
from fhir_server.errors import FhirError, Issue, invalid, operation_outcome
from fhir_server.repository import check_id
from fhir_server.search.values import date_range
from fhir_server.subscriptions.criteria import parse_subscription
from fhir_server.subscriptions.dispatcher import now_micros
from fhir_server.subscriptions.tables import deliveries
from fhir_server.validation import parse_json

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from fhir_server.api.app import Context
    from fhir_server.background import Background


class WebsocketHub:
    """The open websockets of this process, woken (from any thread) when pings were recorded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def add(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        with self._lock:
            self._waiters.add((loop, event))

    def discard(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        with self._lock:
            self._waiters.discard((loop, event))

    def notify(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                loop.call_soon_threadsafe(event.set)


def bind(conn: Connection, service: Any, subscription_id: str) -> tuple[int | None, str]:
    """``(cursor, "")`` for a websocket Subscription that can be bound, else ``(None, reason)``."""
    try:
        check_id(subscription_id)
    except FhirError as error:
        return None, error.diagnostics
    found = service.repository.current(conn, "Subscription", subscription_id)
    if found is None or found.deleted:
        return None, f"Subscription/{subscription_id} is not known to this server"
    try:
        spec = parse_subscription(found.resource())
    except FhirError as error:
        return None, error.diagnostics
    if spec.channel != "websocket":
        return None, f"Subscription/{subscription_id} has channel {spec.channel}, not websocket"
    if spec.status not in ("requested", "active"):
        return None, f"Subscription/{subscription_id} is {spec.status}"
    cursor = conn.execute(
        select(func.max(deliveries.c.id)).where(deliveries.c.subscription_id == subscription_id)
    ).scalar_one()
    return cursor or 0, ""


def pings(conn: Connection, bound: dict[str, int]) -> list[tuple[str, int]]:
    """``(subscription id, delivery id)`` of websocket notifications after each bound cursor, in order."""
    if not bound:
        return []
    after = [and_(deliveries.c.subscription_id == sid, deliveries.c.id > cursor) for sid, cursor in bound.items()]
    rows = conn.execute(
        select(deliveries.c.subscription_id, deliveries.c.id)
        .where(deliveries.c.channel == "websocket", or_(*after))
        .order_by(deliveries.c.id)
    )
    return [(row.subscription_id, row.id) for row in rows]


async def window_parameters(request: Request) -> tuple[int, int]:
    """``since`` (required) and ``until`` of a ``$resend``, from the query or a Parameters body."""
    values = dict(request.query_params.items())
    body = await read_body(request, 64 * 1024)
    if body.strip():
        check_content_type(request, FHIR_JSON, "application/json")
        resource = parse_json(body)
        for parameter in (resource or {}).get("parameter") or []:
            for key in ("valueInstant", "valueDateTime", "valueString"):
                if key in parameter:
                    values[parameter.get("name", "")] = parameter[key]
    if "since" not in values:
        raise invalid("$resend needs 'since' (an instant): the start of the window to notify again.")
    since = date_range(values["since"])
    until = date_range(values["until"]) if "until" in values else (now_micros(), now_micros())
    if since is None or until is None:
        raise invalid("since and until must be FHIR instants.")
    return since[0], until[1]


def router(ctx: Context, background: Background | None = None) -> APIRouter:
    api = APIRouter(prefix="/fhir")
    service = ctx.service
    hub = WebsocketHub()
    if background is not None:
        background.on_websocket(hub.notify)
    poll = ctx.settings.background_poll_seconds

    @api.websocket("/websocket")
    async def websocket(socket: WebSocket) -> None:
        await socket.accept()
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        sending = asyncio.Lock()
        bound: dict[str, int] = {}
        hub.add(loop, wake)

        async def send(text: str) -> None:
            async with sending:
                await socket.send_text(text)

        async def pinger() -> None:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=poll)
                wake.clear()
                snapshot = dict(bound)
                for subscription_id, delivery_id in await ctx.run(lambda c, s=snapshot: pings(c, s), write=False):
                    await send(f"ping {subscription_id}")
                    bound[subscription_id] = max(bound.get(subscription_id, 0), delivery_id)

        task = asyncio.create_task(pinger())
        try:
            while True:
                command, _, argument = (await socket.receive_text()).strip().partition(" ")
                argument = argument.strip()
                if command != "bind" or not argument:
                    await send(f"error send 'bind [subscription id]', not '{command} {argument}'".rstrip())
                    continue
                cursor, reason = await ctx.run(lambda c, a=argument: bind(c, service, a), write=False)
                if cursor is None:
                    await send(f"error {reason}")
                    continue
                bound.setdefault(argument, cursor)
                await send(f"bound {argument}")
        except WebSocketDisconnect:
            pass
        finally:
            task.cancel()
            hub.discard(loop, wake)
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await task

    @api.post("/Subscription/{subscription_id}/$resend")
    async def resend(request: Request, subscription_id: str) -> Response:
        """Queue again the notifications of a time window (events still in the outbox)."""
        check_accept(request)
        check_id(subscription_id)
        since, until = await window_parameters(request)
        if background is None:
            raise FhirError("not-supported", "Notifications are not dispatched by this server.")
        count = await ctx.run(
            lambda conn: background.dispatcher.resend(conn, subscription_id, since=since, until=until)
        )
        background.wake()
        message = f"{count} notification(s) of Subscription/{subscription_id} queued again."
        body = operation_outcome([Issue("informational", message, severity="information")])
        return Response(orjson.dumps(body), media_type=FHIR_JSON)

    return api


__all__ = ["WebsocketHub", "router"]
