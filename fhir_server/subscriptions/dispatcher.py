"""From the outbox to subscribers: match committed writes to active Subscriptions, then deliver in order.

Matching turns each outbox event into one delivery row per matching Subscription, in one transaction with
marking the event seen. Delivery works a subscription's rows strictly in order (head of line), under a
lease so that one worker at a time serves a subscriber; a row is marked delivered only after the endpoint
answered 2xx, so notifications survive restarts (at least once; ``X-HIE-Event`` lets receivers deduplicate).
Failures retry with exponential backoff; after the last attempt the Subscription goes to ``error`` with the
reason in ``Subscription.error`` (R4B Subscription status codes).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx
from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from fhir_server import outbox
from fhir_server.access.inprocess import audited_task, note_in_process_reads
from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.repository import Version
from fhir_server.service import FhirService
from fhir_server.storage.engine import is_postgres, unit_of_work
from fhir_server.storage.tables import resources
from fhir_server.subscriptions.criteria import SubscriptionSpec, parse_subscription
from fhir_server.subscriptions.matching import matches
from fhir_server.subscriptions.notify import EventRef, Notification, notification
from fhir_server.subscriptions.tables import deliveries, leases

log = logging.getLogger("hie.subscriptions")

Sender = Callable[[Notification], int]
"""Sends one notification and returns the HTTP status; raises ``httpx.HTTPError`` when there is no answer."""

_TRY_MATCH_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || '.hie-subscription-matcher'))")
"""One matcher at a time per schema (PostgreSQL); SQLite serialises writers anyway."""
_BATCH = 1000

_SUBSCRIPTIONS_STAMP = select(func.max(resources.c.ts), func.count()).where(
    resources.c.res_type == "Subscription", resources.c.deleted.is_(False)
)
"""When the stored Subscriptions last changed, and how many: built once (every pass after a commit runs it)."""

_FIRST = deliveries.alias("first")
_HEADS = (
    select(deliveries.c.subscription_id, deliveries.c.next_attempt_at, func.coalesce(leases.c.lease_until, 0))
    .select_from(deliveries.outerjoin(leases, leases.c.subscription_id == deliveries.c.subscription_id))
    .where(
        deliveries.c.status == "pending",
        deliveries.c.channel == "rest-hook",
        deliveries.c.id
        == select(func.min(_FIRST.c.id))
        .where(_FIRST.c.subscription_id == deliveries.c.subscription_id, _FIRST.c.status == "pending")
        .scalar_subquery(),
    )
)
"""The oldest pending rest-hook notification of each subscription and the end of the subscriber's lease (0 when
free), built once (twice per dispatch pass)."""


def now_micros() -> int:
    return time.time_ns() // 1000


def http_sender(timeout: float) -> Sender:
    """The production sender: one pooled HTTP client (made on first use), no redirects followed."""
    clients: list[httpx.Client] = []

    def send(note: Notification) -> int:
        if not clients:
            clients.append(httpx.Client(timeout=timeout, follow_redirects=False))
        return clients[0].request(note.method, note.url, headers=note.headers, content=note.body).status_code

    return send


@dataclass(frozen=True)
class MatchResult:
    events: int
    """Outbox events seen by the pass."""
    websocket: int
    """Websocket pings recorded (bound clients read them)."""
    locked: bool = False
    """The pass held the matcher lock (PostgreSQL): a pass turned away by it meanwhile left its events to this
    one, which must look again after its commit (``unmatched_left``)."""


class Dispatcher:
    """Matching and delivery over one database; every method is one or a few short units of work."""

    def __init__(
        self,
        engine: Engine,
        service: FhirService,
        settings: Settings,
        *,
        sender: Sender | None = None,
    ) -> None:
        self.engine = engine
        self.service = service
        self.settings = settings
        self.sender = sender or http_sender(settings.subscription_timeout_seconds)
        self._specs: dict[str, SubscriptionSpec] = {}
        self._stamp: object = None

    # -- subscriptions -------------------------------------------------------------------------

    def active(self, conn: Connection) -> dict[str, SubscriptionSpec]:
        """Active Subscriptions by id; ``requested`` ones are activated, expired ones turned ``off``."""
        stamp = tuple(conn.execute(_SUBSCRIPTIONS_STAMP).one())
        if stamp != self._stamp:
            self._specs = self._load(conn)
            self._stamp = stamp
        now = now_micros()
        live = {}
        for spec in self._specs.values():
            if spec.end is not None and spec.end < now:
                self._set_status(conn, spec.id, "off", None)
                self._stamp = None
            elif spec.status == "active":
                live[spec.id] = spec
        return live

    def _load(self, conn: Connection) -> dict[str, SubscriptionSpec]:
        owners = dict(
            conn.execute(
                select(resources.c.res_pk, resources.c.owner_org).where(
                    resources.c.res_type == "Subscription", resources.c.deleted.is_(False)
                )
            ).all()
        )
        specs = {}
        for version in self.service.repository.load_many(conn, list(owners)):
            resource = version.resource()
            if resource.get("status") not in ("requested", "active"):
                continue
            try:
                spec = parse_subscription(resource)
            except FhirError as error:
                self._set_status(conn, version.res_id, "error", error.diagnostics)
                continue
            if spec.status == "requested":
                self._set_status(conn, spec.id, "active", None)
                spec = parse_subscription({**resource, "status": "active"})
            specs[spec.id] = replace(spec, owner=owners[version.res_pk])
        return specs

    def _set_status(self, conn: Connection, subscription_id: str, status: str, reason: str | None) -> None:
        """A new version of the Subscription with ``status`` (and ``error``), unless a client changed it first."""
        current = self.service.repository.current(conn, "Subscription", subscription_id, lock=True)
        if current is None or current.deleted:
            return
        resource = current.resource()
        resource["status"] = status
        if reason is None:
            resource.pop("error", None)
        else:
            resource["error"] = reason
        self.service.update(conn, "Subscription", subscription_id, resource, if_match=current.version)

    def subscription(self, conn: Connection, subscription_id: str) -> SubscriptionSpec | None:
        found = self.service.repository.current(conn, "Subscription", subscription_id)
        if found is None or found.deleted:
            return None
        try:
            return parse_subscription(found.resource())
        except FhirError:
            return None

    # -- matching ------------------------------------------------------------------------------

    def match(self, *, limit: int = _BATCH) -> MatchResult:
        """One pass over unmatched outbox events: deliveries for every matching active Subscription."""
        with unit_of_work(self.engine, write=False) as conn:
            if not outbox.any_unmatched(conn):
                return MatchResult(0, 0)
        with unit_of_work(self.engine) as conn:
            locked = is_postgres(conn)  # SQLite: a writer waits for the one before it, then sees its commit
            if locked:
                # One snapshot for the pass: what the outbox says and what the search sees must agree.
                conn.execution_options(isolation_level="REPEATABLE READ")
                if not conn.execute(_TRY_MATCH_LOCK).scalar_one():
                    return MatchResult(0, 0)
            live = self.active(conn)
            if not live:
                return MatchResult(outbox.mark_all_matched(conn), 0, locked)
            events = outbox.unmatched(conn, limit=limit)
            rows = self._deliveries(conn, live, events)
            if rows:
                conn.execute(insert(deliveries), rows)
            outbox.mark_matched(conn, [event.seq for event in events])
        return MatchResult(len(events), sum(1 for r in rows if r["channel"] == "websocket"), locked)

    def unmatched_left(self) -> bool:
        """Whether committed events wait for a pass: read after the commit of a pass that held the matcher lock,
        it finds the events whose own pass was turned away while this one's snapshot was older than their commit
        (whether or not this pass found any events itself)."""
        with unit_of_work(self.engine, write=False) as conn:
            return outbox.any_unmatched(conn)

    def _deliveries(
        self, conn: Connection, live: dict[str, SubscriptionSpec], events: list[outbox.Event]
    ) -> list[dict[str, Any]]:
        now = now_micros()
        return [
            _delivery_row(spec, event, now)
            for spec, event in matches(conn, self.service.registry, list(live.values()), events)
        ]

    def resend(self, conn: Connection, subscription_id: str, *, since: int, until: int) -> int:
        """Queue again every event of ``[since, until]`` still in the outbox that meets the criteria; the count."""
        spec = self.subscription(conn, subscription_id)
        if spec is None:
            raise FhirError("not-found", f"Subscription/{subscription_id} is not known to this server.")
        if spec.status != "active":
            raise FhirError("business-rule", f"Subscription/{subscription_id} is {spec.status}, not active.")
        queued, after, now = 0, 0, now_micros()
        while True:
            events = outbox.window(conn, since=since, until=until, res_type=spec.res_type, after=after, limit=_BATCH)
            if not events:
                return queued
            rows = [_delivery_row(spec, e, now) for spec, e in matches(conn, self.service.registry, [spec], events)]
            if rows:
                conn.execute(insert(deliveries), rows)
            queued += len(rows)
            after = events[-1].seq

    # -- delivery ------------------------------------------------------------------------------

    def due(self) -> list[str]:
        """Active rest-hook Subscriptions whose oldest pending notification is due now and that no worker serves."""
        now = now_micros()
        return [subscription_id for subscription_id, at in self._heads() if at <= now]

    def next_due_in(self) -> float | None:
        """Seconds until the next head-of-line notification can go, None when nothing is pending.

        A subscriber another worker serves can go when that lease runs out: the holder looks again itself when
        it lets go, so a worker turned away by the lease does not come back before."""
        heads = self._heads()
        if not heads:
            return None
        return max(0.0, (min(at for _, at in heads) - now_micros()) / 1e6)

    def _heads(self) -> list[tuple[str, int]]:
        """``(subscription id, when it can go)`` of the oldest pending notification of each active subscription:
        its next attempt, or later the end of a live lease on the subscriber (``_claim`` takes it only after)."""
        with unit_of_work(self.engine, write=False) as conn:
            rows = conn.execute(_HEADS).all()
            heads = []
            for subscription_id, at, lease_until in sorted(rows):
                spec = self.subscription(conn, subscription_id)
                if spec is not None and spec.status == "active":
                    heads.append((subscription_id, max(at, lease_until + 1)))
            return heads

    def deliver(self, subscription_id: str) -> int:
        """Send the Subscription's due notifications in order; stop at the first failure. Returns how many went.

        Audited as background work for the Subscription's institution, listing the versions sent."""
        with audited_task(
            self.engine, "notify", f"Subscription/{subscription_id}", organization=self._owner(subscription_id)
        ):
            return self._deliver(subscription_id)

    def _owner(self, subscription_id: str) -> str | None:
        r = resources.c
        with unit_of_work(self.engine, write=False) as conn:
            return conn.execute(
                select(r.owner_org).where(r.res_type == "Subscription", r.res_id == subscription_id)
            ).scalar_one_or_none()

    def _deliver(self, subscription_id: str) -> int:
        token = self._claim(subscription_id)
        if token is None:
            return 0
        sent = 0
        try:
            while True:
                with unit_of_work(self.engine, write=False) as conn:
                    spec = self.subscription(conn, subscription_id)
                    if spec is None or spec.status != "active" or spec.channel != "rest-hook":
                        return sent
                    head = conn.execute(
                        select(deliveries)
                        .where(deliveries.c.subscription_id == subscription_id, deliveries.c.status == "pending")
                        .order_by(deliveries.c.id)
                        .limit(1)
                    ).first()
                    if head is None or head.next_attempt_at > now_micros():
                        return sent
                    stored = self._stored(conn, head)
                if stored is None:
                    self._skip(head, "the version is no longer stored")
                    continue
                body = stored.body if spec.content == "full-resource" else None
                event = EventRef(head.res_type, head.res_id, head.version, head.method, stored.ts)
                ok, reason = self._send(spec, event, body)
                if not self._record(subscription_id, token, head, ok, reason):
                    return sent
                if not ok:
                    return sent
                note_in_process_reads([stored], self.engine)  # passed on to the subscriber
                sent += 1
        finally:
            self._release(subscription_id, token)

    def _stored(self, conn: Connection, head: Any) -> Version | None:
        """The notified version, unless it was removed since (``$expunge``)."""
        try:
            return self.service.repository.vread(conn, head.res_type, head.res_id, head.version)
        except FhirError:
            return None

    def _skip(self, head: Any, reason: str) -> None:
        with unit_of_work(self.engine) as conn:
            conn.execute(
                update(deliveries).where(deliveries.c.id == head.id).values(status="skipped", last_error=reason)
            )

    def _send(self, spec: SubscriptionSpec, event: EventRef, body: bytes | None) -> tuple[bool, str | None]:
        secret = spec.secret or self.settings.subscription_signing_key
        note = notification(
            spec, event, body, base_url=self.settings.base_url, secret=secret, now=now_micros() // 1_000_000
        )
        try:
            status = self.sender(note)
        except Exception as exc:  # whatever stops a notification is a failed attempt, recorded and retried
            return False, f"{note.method} {note.url} failed: {type(exc).__name__}: {exc}"
        if 200 <= status < 300:
            return True, None
        return False, f"{note.method} {note.url} answered HTTP {status}"

    def _record(self, subscription_id: str, token: str, head: Any, ok: bool, reason: str | None) -> bool:
        """Store the outcome of one attempt; False when the lease was lost (another worker took over)."""
        now = now_micros()
        with unit_of_work(self.engine) as conn:
            if not self._extend(conn, subscription_id, token, now):
                return False
            if ok:
                conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id == head.id)
                    .values(status="delivered", delivered_at=now, attempts=head.attempts + 1, last_error=None)
                )
                return True
            attempts = head.attempts + 1
            if attempts >= self.settings.subscription_max_attempts:
                conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id == head.id)
                    .values(status="failed", attempts=attempts, last_error=reason)
                )
                message = f"Notification of {head.res_type}/{head.res_id} failed {attempts} times; last: {reason}"
                self._set_status(conn, subscription_id, "error", message)
                log.warning("Subscription/%s is now in error: %s", subscription_id, message)
                return True
            delay = self.settings.subscription_retry_base_seconds * 2 ** (attempts - 1)
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == head.id)
                .values(attempts=attempts, last_error=reason, next_attempt_at=now + int(delay * 1e6))
            )
        return True

    # -- leases --------------------------------------------------------------------------------

    def _lease_micros(self) -> int:
        return int((self.settings.subscription_timeout_seconds * 3 + 30) * 1e6)

    def _claim(self, subscription_id: str) -> str | None:
        """A lease on the subscription for this call (a token), unless a live lease is held elsewhere."""
        now, token = now_micros(), uuid.uuid4().hex
        until = now + self._lease_micros()
        try:
            with unit_of_work(self.engine) as conn:
                taken = conn.execute(
                    update(leases)
                    .where(leases.c.subscription_id == subscription_id, leases.c.lease_until < now)
                    .values(owner=token, lease_until=until)
                ).rowcount
                if taken:
                    return token
                held = conn.execute(
                    select(leases.c.subscription_id).where(leases.c.subscription_id == subscription_id)
                ).first()
                if held:
                    return None
                conn.execute(insert(leases).values(subscription_id=subscription_id, owner=token, lease_until=until))
                return token
        except IntegrityError:
            return None

    def _extend(self, conn: Connection, subscription_id: str, token: str, now: int) -> bool:
        return bool(
            conn.execute(
                update(leases)
                .where(leases.c.subscription_id == subscription_id, leases.c.owner == token)
                .values(lease_until=now + self._lease_micros())
            ).rowcount
        )

    def _release(self, subscription_id: str, token: str) -> None:
        with unit_of_work(self.engine) as conn:
            conn.execute(
                update(leases)
                .where(leases.c.subscription_id == subscription_id, leases.c.owner == token)
                .values(owner=None, lease_until=0)
            )

    # -- housekeeping --------------------------------------------------------------------------

    def prune(self) -> int:
        """Forget matched events and finished deliveries older than the retention period."""
        before = now_micros() - self.settings.outbox_retention_seconds * 1_000_000
        with unit_of_work(self.engine) as conn:
            done = conn.execute(
                delete(deliveries).where(
                    and_(deliveries.c.status.in_(("delivered", "failed", "skipped")), deliveries.c.created_at < before)
                )
            ).rowcount
            return done + outbox.prune(conn, before=before)


def _delivery_row(spec: SubscriptionSpec, event: outbox.Event, now: int) -> dict[str, Any]:
    websocket = spec.channel == "websocket"
    return {
        "subscription_id": spec.id,
        "seq": event.seq,
        "res_type": event.res_type,
        "res_id": event.res_id,
        "version": event.version,
        "method": event.method,
        "channel": spec.channel,
        "status": "delivered" if websocket else "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "delivered_at": now if websocket else None,
        "last_error": None,
    }


__all__ = ["Dispatcher", "MatchResult", "Sender", "http_sender", "now_micros"]
