"""Webhook endpoints (per owner) and the delivery outbox's reads and state changes (issue 13).

The outbox rows themselves are written with the job events they tell (models/store/outbox.py). A sender claims
due rows with a lease (PostgreSQL: FOR UPDATE SKIP LOCKED, so several API processes never send one row at once;
SQLite serialises writers) and records each attempt under that lease.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update

from models.records import WebhookDelivery, WebhookEndpoint
from models.store.base import StoreBase, as_utc, serialise, utcnow
from models.store.bounds import storable
from models.store.outbox import mark_written
from models.store.paging import keyset_page

PENDING, FAILED, SUCCEEDED, DEAD = "pending", "failed", "succeeded", "dead"
DELIVERY_STATUSES = (PENDING, FAILED, SUCCEEDED, DEAD)
DUE = (PENDING, FAILED)
# Deliveries waiting (pending or failed) for one endpoint beyond which a redeliver is refused: with one waiting
# redelivery per event, this bounds what redelivers can queue against one host (each retried for the window).
MAX_WAITING = 1000


class TooManyWebhooks(Exception):
    """The owner already holds `limit` endpoints (GANFORGE_WEBHOOK_MAX_ENDPOINTS_PER_OWNER)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"an owner may hold at most {limit} webhook endpoints")
        self.limit = limit


class RedeliveryPending(Exception):
    """The event already has a delivery to the endpoint waiting to be sent (pending or failed): `waiting` is its id."""

    def __init__(self, waiting: str) -> None:
        super().__init__(f"delivery {waiting!r} of this event is still waiting to be sent")
        self.waiting = waiting


class TooManyWaiting(Exception):
    """The endpoint already has `limit` deliveries waiting to be sent (MAX_WAITING)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the endpoint has {limit} deliveries waiting to be sent")
        self.limit = limit


@dataclass(frozen=True)
class Claimed:
    """A delivery a sender holds until `lease_until`: what to send, where, and with which secret."""

    id: str
    endpoint_id: str
    owner: str
    url: str
    secret: str
    event_id: str
    payload: dict[str, object]
    attempts: int
    created_at: datetime


@dataclass(frozen=True)
class Disabled:
    """An endpoint disabled just now for failing continuously for the retry window."""

    id: str
    owner: str
    url: str
    reason: str


class WebhooksStore(StoreBase):
    """Webhook endpoints and their deliveries."""

    def create_webhook(
        self, *, owner: str, url: str, events: list[str], description: str, secret: str, max_per_owner: int
    ) -> WebhookEndpoint:
        """Store a new enabled endpoint; raises TooManyWebhooks when the owner holds `max_per_owner` already
        (counted under a per-owner lock, so concurrent creations cannot overshoot)."""
        with self.session() as session, session.begin():
            serialise(session, f"webhooks:{owner}")
            held = session.scalar(select(func.count()).where(WebhookEndpoint.owner == owner)) or 0
            if held >= max_per_owner:
                raise TooManyWebhooks(max_per_owner)
            endpoint = WebhookEndpoint(
                id=str(uuid.uuid4()),
                owner=owner,
                url=url,
                description=description,
                events=sorted(set(events)),
                secret=secret,
                enabled=True,
                disabled_reason=None,
                created_at=utcnow(),
                failing_since=None,
            )
            session.add(endpoint)
            return endpoint

    def list_webhooks(
        self, *, owner: str, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[WebhookEndpoint], str | None]:
        """The owner's endpoints newest first, at most `limit` (1..1000), and the next page's cursor (None at the
        end); raises InvalidCursor for a cursor this store did not write for this list."""
        if not storable(owner):
            return [], None
        with self.session() as session:
            query = select(WebhookEndpoint).where(WebhookEndpoint.owner == owner)
            return keyset_page(
                session,
                query,
                WebhookEndpoint.seq,
                scope=self.cursor_scope("webhooks", owner),
                limit=limit,
                cursor=cursor,
            )

    def get_webhook(self, *, webhook_id: str, owner: str) -> WebhookEndpoint | None:
        """The owner's endpoint, or None (missing, or another owner's)."""
        if not storable(webhook_id, owner):
            return None
        with self.session() as session:
            return session.scalar(
                select(WebhookEndpoint).where(WebhookEndpoint.id == webhook_id, WebhookEndpoint.owner == owner)
            )

    def delete_webhook(self, *, webhook_id: str, owner: str) -> WebhookEndpoint | None:
        """Delete the owner's endpoint and its delivery log (undelivered events are dropped); None when missing."""
        if not storable(webhook_id, owner):
            return None
        with self.session() as session, session.begin():
            endpoint = session.scalar(
                select(WebhookEndpoint)
                .where(WebhookEndpoint.id == webhook_id, WebhookEndpoint.owner == owner)
                .with_for_update()
            )
            if endpoint is None:
                return None
            session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == webhook_id))
            session.delete(endpoint)
            return endpoint

    def enable_webhook(self, *, webhook_id: str, owner: str) -> WebhookEndpoint | None:
        """Enable the owner's endpoint again (its failure run starts over); None when missing. Events that
        happened while it was disabled are not sent (redeliver them from its delivery log)."""
        if not storable(webhook_id, owner):
            return None
        with self.session() as session, session.begin():
            endpoint = session.scalar(
                select(WebhookEndpoint)
                .where(WebhookEndpoint.id == webhook_id, WebhookEndpoint.owner == owner)
                .with_for_update()
            )
            if endpoint is not None:
                endpoint.enabled, endpoint.disabled_reason, endpoint.failing_since = True, None, None
            return endpoint

    def list_deliveries(
        self, *, webhook_id: str, limit: int = 50, cursor: str | None = None, status: str | None = None
    ) -> tuple[list[WebhookDelivery], str | None]:
        """The endpoint's deliveries newest first (optionally only those in `status`), at most `limit`, and the
        next page's cursor; the caller checked the endpoint is the owner's. Raises InvalidCursor."""
        with self.session() as session:
            query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == webhook_id)
            if status is not None:
                query = query.where(WebhookDelivery.status == status)
            return keyset_page(
                session,
                query,
                WebhookDelivery.seq,
                scope=self.cursor_scope(f"webhook_deliveries:{status or ''}", webhook_id),
                limit=limit,
                cursor=cursor,
            )

    def redeliver(self, *, webhook_id: str, delivery_id: str, max_waiting: int = MAX_WAITING) -> WebhookDelivery | None:
        """A new pending delivery of the same event (same `event_id`, so a receiver that saw it already can tell)
        to the endpoint, due now; None when the endpoint has no such delivery. Wakes this process's sender.

        Raises RedeliveryPending when a delivery of that event to the endpoint is still waiting (pending or failed:
        this one, or an earlier redelivery), and TooManyWaiting when `max_waiting` of the endpoint's deliveries are;
        both checked under a per-endpoint lock, so concurrent calls cannot overshoot."""
        if not storable(delivery_id):
            return None
        with self.session() as session, session.begin():
            serialise(session, f"webhooks:redeliver:{webhook_id}")
            earlier = session.scalar(
                select(WebhookDelivery).where(
                    WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == webhook_id
                )
            )
            if earlier is None:
                return None
            of_endpoint = (WebhookDelivery.endpoint_id == webhook_id, WebhookDelivery.status.in_(DUE))
            waiting = session.scalar(
                select(WebhookDelivery.id).where(*of_endpoint, WebhookDelivery.event_id == earlier.event_id).limit(1)
            )
            if waiting is not None:
                raise RedeliveryPending(waiting)
            counted = select(WebhookDelivery.id).where(*of_endpoint).limit(max_waiting).subquery()
            if (session.scalar(select(func.count()).select_from(counted)) or 0) >= max_waiting:
                raise TooManyWaiting(max_waiting)
            now = utcnow()
            again = WebhookDelivery(
                id=str(uuid.uuid4()),
                endpoint_id=webhook_id,
                event_id=earlier.event_id,
                type=earlier.type,
                payload=earlier.payload,
                status=PENDING,
                attempts=0,
                created_at=now,
                next_attempt_at=now,
            )
            session.add(again)
            mark_written(session)
            return again

    # ------------------------------------------------------------------ the sender's side

    def next_delivery_due(self) -> datetime | None:
        """When the earliest pending or failed delivery of an enabled endpoint is due (it may be now or past), or
        None when there is none (one indexed read; the sender's poll). One a sender leases now is left out (it is
        being sent: the poll must not claim while a slow receiver holds it)."""
        now = utcnow()
        with self.session() as session:
            found = session.scalar(
                select(func.min(WebhookDelivery.next_attempt_at)).where(
                    WebhookDelivery.status.in_(DUE),
                    or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now),
                )
            )
        return as_utc(found)

    def claim_deliveries(
        self,
        *,
        holder: str,
        limit: int,
        lease: timedelta,
        per_endpoint: int | None = None,
        busy: Mapping[str, int] | None = None,
    ) -> list[Claimed]:
        """Take up to `limit` due deliveries (oldest due first) for `holder` until now + `lease`: rows another
        holder leases are skipped (PostgreSQL: FOR UPDATE SKIP LOCKED), and one whose lease ran out (its sender
        died) is taken again, so every delivery is sent at least once.

        `per_endpoint`: at most that many of one endpoint, counting `busy` (the holder's deliveries in flight, by
        endpoint id); an endpoint at its bound is left out of the query, so its backlog cannot fill the claim."""
        now = utcnow()
        room = dict(busy or {})
        query = select(WebhookDelivery.id, WebhookDelivery.endpoint_id).where(
            WebhookDelivery.status.in_(DUE),
            WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now),
        )
        if per_endpoint is not None:
            full = sorted(endpoint for endpoint, held in room.items() if held >= per_endpoint)
            if full:
                query = query.where(WebhookDelivery.endpoint_id.not_in(full))
        with self.session() as session, session.begin():
            # Some spare rows: one endpoint's run of oldest rows leaves room for others' in the same claim.
            window = limit if per_endpoint is None else limit * 4
            ids: list[str] = []
            for delivery_id, endpoint_id in session.execute(
                query.order_by(WebhookDelivery.next_attempt_at).limit(window).with_for_update(skip_locked=True)
            ).all():
                if per_endpoint is not None:
                    if room.get(endpoint_id, 0) >= per_endpoint:
                        continue
                    room[endpoint_id] = room.get(endpoint_id, 0) + 1
                ids.append(delivery_id)
                if len(ids) == limit:
                    break
            if not ids:
                return []
            session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(ids))
                .values(lease_until=now + lease, lease_holder=holder)
                .execution_options(synchronize_session=False)
            )
            rows = session.execute(
                select(WebhookDelivery, WebhookEndpoint)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .where(WebhookDelivery.id.in_(ids))
            ).all()
            return [
                Claimed(
                    id=delivery.id,
                    endpoint_id=endpoint.id,
                    owner=endpoint.owner,
                    url=endpoint.url,
                    secret=endpoint.secret,
                    event_id=delivery.event_id,
                    payload=dict(delivery.payload),
                    attempts=delivery.attempts,
                    created_at=as_utc(delivery.created_at),
                )
                for delivery, endpoint in rows
            ]

    def record_attempt(
        self,
        *,
        delivery_id: str,
        holder: str,
        succeeded: bool,
        response_code: int | None,
        error: str | None,
        latency_ms: float,
        retry_in: timedelta,
        window: timedelta,
    ) -> tuple[str | None, Disabled | None]:
        """Record one attempt of a delivery `holder` leases: succeeded (its endpoint's failure run ends), or
        failed and due again after `retry_in`, or dead once `window` has passed since its event. An endpoint
        whose failures ran `window` without a success is disabled (its waiting deliveries are dead).

        Returns (the delivery's new status, the endpoint disabled now or None); (None, None) when `holder` no
        longer leases it (it took longer than the lease and another sender took it over).
        """
        now = utcnow()
        with self.session() as session, session.begin():
            delivery = session.scalar(
                select(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id, WebhookDelivery.lease_holder == holder)
                .with_for_update()
            )
            if delivery is None:
                return None, None
            endpoint = session.scalar(
                select(WebhookEndpoint).where(WebhookEndpoint.id == delivery.endpoint_id).with_for_update()
            )
            delivery.attempts += 1
            delivery.last_attempt_at, delivery.lease_until, delivery.lease_holder = now, None, None
            delivery.response_code, delivery.error, delivery.latency_ms = response_code, error, latency_ms
            disabled = None
            if succeeded:
                delivery.status, delivery.next_attempt_at = SUCCEEDED, None
                if endpoint is not None:
                    endpoint.failing_since = None
                return SUCCEEDED, None
            give_up_at = as_utc(delivery.created_at) + window
            if now >= give_up_at:
                delivery.status, delivery.next_attempt_at = DEAD, None
            else:
                delivery.status, delivery.next_attempt_at = FAILED, min(now + retry_in, give_up_at)
            if endpoint is not None and endpoint.enabled:
                since = as_utc(endpoint.failing_since)
                if since is None:
                    endpoint.failing_since = now
                elif now - since >= window:
                    reason = (
                        f"disabled at {now.isoformat(timespec='seconds')}: every delivery failed since "
                        f"{since.isoformat(timespec='seconds')} (the last: {error or response_code}); "
                        f"POST /v1/webhooks/{endpoint.id}/enable turns it on again"
                    )
                    endpoint.enabled, endpoint.disabled_reason = False, reason
                    session.execute(
                        update(WebhookDelivery)
                        .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status.in_(DUE))
                        .values(status=DEAD, next_attempt_at=None, lease_until=None, lease_holder=None)
                        .execution_options(synchronize_session=False)
                    )
                    delivery.status, delivery.next_attempt_at = DEAD, None
                    disabled = Disabled(endpoint.id, endpoint.owner, endpoint.url, reason)
            return delivery.status, disabled
