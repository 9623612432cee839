"""`client.webhooks`: your owner's webhook endpoints and their delivery logs (api/routes/webhooks.py), for the sync
`Client` (`Webhooks`) and the `AsyncClient` (`AsyncWebhooks`).

Each event of the kinds an endpoint asks for (job.status, job.checkpoint, study.finished) is POSTed to its URL as
JSON `{type, timestamp, data}`, signed as the Standard Webhooks spec says: verify it with the secret from
`create` (shown only then), e.g. `standardwebhooks.Webhook(secret).verify(body, headers)`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ganforge.client.calls import Call, _segment
from ganforge.client.types import ApiModel, Page

if TYPE_CHECKING:
    from ganforge.client.aio import AsyncClient
    from ganforge.client.sync import Client

EVENT_KINDS = ("job.status", "job.checkpoint", "study.finished")


class Webhook(ApiModel):
    """An endpoint: id, url, events (kinds), description; enabled (false: nothing is sent, disabled_reason says
    why); failing_since: since when every delivery failed (None: the last passed)."""

    id: str
    url: str
    events: list[str]
    description: str = ""
    enabled: bool = True
    disabled_reason: str | None = None
    created_at: datetime
    failing_since: datetime | None = None


class WebhookCreated(Webhook):
    """The answer of `create`: the endpoint and its signing secret `whsec_...`, shown only this once."""

    secret: str


class Delivery(ApiModel):
    """One delivery of one event: event_id (the webhook-id header, the same on every attempt and redelivery),
    type, status (pending, failed: retried at next_attempt_at, succeeded, dead), attempts, the last attempt's
    response_code, error and latency_ms, its times, and the payload sent."""

    id: str
    event_id: str
    type: str
    status: str
    attempts: int
    response_code: int | None = None
    error: str | None = None
    latency_ms: float | None = None
    created_at: datetime
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None
    payload: dict[str, Any] = {}


class WebhookPage(Page):
    webhooks: list[Webhook]


class DeliveryPage(Page):
    deliveries: list[Delivery]


def _path(webhook_id: str, *rest: str) -> str:
    return "/".join(["/v1/webhooks", _segment(webhook_id, "webhook_id"), *rest])


def create_call(url: str, events: Iterable[str] | str, description: str) -> Call:
    """POST /v1/webhooks; never retried (a retry after a lost answer would make a second endpoint)."""
    kinds = [events] if isinstance(events, str) else list(events)
    return Call(
        "POST", "/v1/webhooks", json={"url": url, "events": kinds, "description": description}, idempotent=False
    )


def list_call(limit: int, cursor: str | None) -> Call:
    return Call("GET", "/v1/webhooks", params={"limit": limit, **({"cursor": cursor} if cursor else {})})


def deliveries_call(webhook_id: str, status: str | None, limit: int, cursor: str | None) -> Call:
    params: dict[str, str | int] = {"limit": limit}
    if status is not None:
        params["status"] = status
    if cursor:
        params["cursor"] = cursor
    return Call("GET", _path(webhook_id, "deliveries"), params=params)


def redeliver_call(webhook_id: str, delivery_id: str) -> Call:
    # A retry after a lost answer queues the event once more: the receiver sees the same webhook-id (harmless).
    return Call(
        "POST", _path(webhook_id, "deliveries", _segment(delivery_id, "delivery_id"), "redeliver"), idempotent=True
    )


class Webhooks:
    """`client.webhooks` of the sync `Client`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, url: str, events: Iterable[str] | str = EVENT_KINDS, *, description: str = "") -> WebhookCreated:
        """Register `url` for your owner's events of the kinds `events` (job.status, job.checkpoint,
        study.finished; default all). The answer's `secret` (whsec_...) is shown only now. Raises ValidationFailed
        naming `url` for a URL the service refuses (not http(s), credentials in it, or resolving to a loopback,
        private, link-local, multicast, reserved or unspecified address), PermissionDenied past the owner's cap."""
        return self._client._answer(create_call(url, events, description), WebhookCreated)

    def list(self, *, limit: int = 50) -> Iterator[Webhook]:
        """Your endpoints, newest first, page after page (lazily; `limit` is the page size, 1-500)."""
        for page in self._client._pages(lambda cursor: list_call(limit, cursor), WebhookPage):
            yield from page.webhooks

    def get(self, webhook_id: str) -> Webhook:
        """The endpoint (never its secret). Raises NotFound (another owner's too)."""
        return self._client._answer(Call("GET", _path(webhook_id)), Webhook)

    def delete(self, webhook_id: str) -> Webhook:
        """Delete the endpoint and its delivery log; events not delivered yet are dropped. Raises NotFound."""
        return self._client._answer(Call("DELETE", _path(webhook_id), idempotent=False), Webhook)

    def enable(self, webhook_id: str) -> Webhook:
        """Turn a disabled endpoint on again. Raises NotFound."""
        return self._client._answer(Call("POST", _path(webhook_id, "enable"), idempotent=True), Webhook)

    def deliveries(self, webhook_id: str, *, status: str | None = None, limit: int = 50) -> Iterator[Delivery]:
        """The endpoint's deliveries, newest first (only those in `status`: pending, failed, succeeded, dead),
        page after page (lazily). Raises NotFound."""
        for page in self._client._pages(lambda c: deliveries_call(webhook_id, status, limit, c), DeliveryPage):
            yield from page.deliveries

    def redeliver(self, webhook_id: str, delivery_id: str) -> Delivery:
        """Send the delivery's event again (a new delivery, due now, same webhook-id). Raises NotFound, Conflict
        when the endpoint is disabled."""
        return self._client._answer(redeliver_call(webhook_id, delivery_id), Delivery)


class AsyncWebhooks:
    """`client.webhooks` of the `AsyncClient`: the methods of `Webhooks`, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self, url: str, events: Iterable[str] | str = EVENT_KINDS, *, description: str = ""
    ) -> WebhookCreated:
        """As Webhooks.create."""
        return await self._client._answer(create_call(url, events, description), WebhookCreated)

    async def list(self, *, limit: int = 50) -> AsyncIterator[Webhook]:
        """As Webhooks.list."""
        async for page in self._client._pages(lambda cursor: list_call(limit, cursor), WebhookPage):
            for webhook in page.webhooks:
                yield webhook

    async def get(self, webhook_id: str) -> Webhook:
        """As Webhooks.get."""
        return await self._client._answer(Call("GET", _path(webhook_id)), Webhook)

    async def delete(self, webhook_id: str) -> Webhook:
        """As Webhooks.delete."""
        return await self._client._answer(Call("DELETE", _path(webhook_id), idempotent=False), Webhook)

    async def enable(self, webhook_id: str) -> Webhook:
        """As Webhooks.enable."""
        return await self._client._answer(Call("POST", _path(webhook_id, "enable"), idempotent=True), Webhook)

    async def deliveries(
        self, webhook_id: str, *, status: str | None = None, limit: int = 50
    ) -> AsyncIterator[Delivery]:
        """As Webhooks.deliveries."""
        async for page in self._client._pages(lambda c: deliveries_call(webhook_id, status, limit, c), DeliveryPage):
            for delivery in page.deliveries:
                yield delivery

    async def redeliver(self, webhook_id: str, delivery_id: str) -> Delivery:
        """As Webhooks.redeliver."""
        return await self._client._answer(redeliver_call(webhook_id, delivery_id), Delivery)


__all__ = ["AsyncWebhooks", "Delivery", "Webhook", "WebhookCreated", "Webhooks"]
