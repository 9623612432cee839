"""/v1/webhooks: an owner's webhook endpoints, their delivery logs, redelivery (issue 13).

An endpoint receives the events of the kinds it asks for (job.status, job.checkpoint, study.finished) of its
owner's jobs and studies, signed as the Standard Webhooks spec says with the secret shown once in the 201 of its
creation. Another owner's endpoint is as missing as a missing one (404). The gate (api/gate.py) asks the submit
scope for every change and the read scope to look; creations count against GANFORGE_RATE_SUBMIT.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Depends, Path, Query
from pydantic import AfterValidator, BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentCaller, SettingsDep, StoreDep, not_found, scope_message
from api.errors import ApiError
from api.routes.jobs import PageCursor, PageLimit
from models.records import WebhookDelivery, WebhookEndpoint
from models.spec import StrictModel, is_id, plain_text
from models.store import as_utc
from models.store.webhooks import (
    DELIVERY_STATUSES,
    MAX_WAITING,
    RedeliveryPending,
    TooManyWaiting,
    TooManyWebhooks,
)
from models.webhooks import EVENT_KINDS, HostPolicy, UrlRefused, new_secret

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

EventKind = Literal["job.status", "job.checkpoint", "study.finished"]
assert set(get_args(EventKind)) == set(EVENT_KINDS)  # one list of kinds
Text = Annotated[str, AfterValidator(plain_text)]
WEBHOOK_ID = "3f1c2a9e-8d4b-4c1e-9a55-0b7f3e2d1c4a"
DELIVERY_ID = "7a2b9c1d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def _error(description: str, code: str, message: str, field: str | None = None) -> dict[str, Any]:
    details = [{"field": field, "message": message}] if field else []
    example = {"error": {"code": code, "message": message, "details": details}}
    return {"description": description, "content": {"application/json": {"example": example}}}


NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: _error("no such endpoint of yours", "not_found", f"no webhook {WEBHOOK_ID!r}")
}
FORBIDDEN = _error("the key lacks the submit scope", "insufficient_scope", scope_message("submit").replace("\n", " "))


class WebhookCreate(StrictModel):
    """POST /v1/webhooks: where to send, which event kinds, and a note."""

    url: Annotated[Text, Field(min_length=1, max_length=2048)] = Field(
        description="http(s) URL that receives a POST per event; its host must resolve to public addresses only "
        "(or ones GANFORGE_WEBHOOK_ALLOWED_HOSTS names); no user:password@",
        examples=["https://hooks.example.com/ganforge"],
    )
    events: list[EventKind] = Field(
        min_length=1,
        max_length=len(EVENT_KINDS),
        description="job.status (every status change of a job), job.checkpoint (a new checkpoint), study.finished "
        "(a study's last job reached a final status)",
        examples=[["job.status", "study.finished"]],
    )
    description: Annotated[Text, Field(max_length=200)] = Field(default="", description="what the endpoint is for")


class WebhookOut(BaseModel):
    """An endpoint: never its secret (that is in the 201 of its creation only)."""

    id: str
    url: str
    events: list[str]
    description: str
    enabled: bool = Field(description="false: no events are sent (disabled_reason says why)")
    disabled_reason: str | None
    created_at: datetime
    failing_since: datetime | None = Field(description="since when every delivery failed (null: the last one passed)")

    @classmethod
    def of(cls, record: WebhookEndpoint) -> WebhookOut:
        return cls(
            id=record.id,
            url=record.url,
            events=list(record.events),
            description=record.description,
            enabled=record.enabled,
            disabled_reason=record.disabled_reason,
            created_at=as_utc(record.created_at),
            failing_since=as_utc(record.failing_since),
        )


class WebhookCreated(WebhookOut):
    """The 201 of POST /v1/webhooks: the signing secret, shown this once."""

    secret: str = Field(
        description="the Standard Webhooks signing secret (whsec_<base64>): verify each request's "
        "webhook-signature with it (e.g. the standardwebhooks library); shown only now",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


class WebhookPage(BaseModel):
    webhooks: list[WebhookOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at the end")


class DeliveryOut(BaseModel):
    """One delivery of one event to the endpoint."""

    id: str
    event_id: str = Field(description="the webhook-id header: the same on every attempt and redelivery of an event")
    type: str = Field(description="job.status, job.checkpoint or study.finished")
    status: str = Field(description="pending, failed (retried at next_attempt_at), succeeded, dead (given up)")
    attempts: int
    response_code: int | None = Field(description="the HTTP status of the last attempt (null: no answer)")
    error: str | None = Field(description="why the last attempt failed")
    latency_ms: float | None = Field(description="how long the last attempt took, milliseconds")
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    payload: dict[str, Any] = Field(description="the JSON body sent: type, timestamp, data")

    @classmethod
    def of(cls, record: WebhookDelivery) -> DeliveryOut:
        return cls(
            id=record.id,
            event_id=record.event_id,
            type=record.type,
            status=record.status,
            attempts=record.attempts,
            response_code=record.response_code,
            error=record.error,
            latency_ms=record.latency_ms,
            created_at=as_utc(record.created_at),
            last_attempt_at=as_utc(record.last_attempt_at),
            next_attempt_at=as_utc(record.next_attempt_at),
            payload=dict(record.payload),
        )


class DeliveryPage(BaseModel):
    deliveries: list[DeliveryOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at the end")


def writer(caller: CurrentCaller) -> str:
    """The caller's owner when its key may change things (the submit scope); else 403 naming it."""
    if not caller.may("submit"):
        raise ApiError(403, "insufficient_scope", scope_message("submit"))
    return caller.owner


def reader(caller: CurrentCaller) -> str:
    """The caller's owner."""
    return caller.owner


Writer = Annotated[str, Depends(writer)]
Reader = Annotated[str, Depends(reader)]
WebhookId = Annotated[str, Path(description="the endpoint's id", examples=[WEBHOOK_ID])]


def _owned(store: StoreDep, owner: str, webhook_id: str) -> WebhookEndpoint:
    endpoint = store.get_webhook(webhook_id=webhook_id, owner=owner) if is_id(webhook_id) else None
    if endpoint is None:
        raise not_found("webhook", webhook_id)
    return endpoint


@router.post(
    "",
    status_code=201,
    response_model=WebhookCreated,
    summary="Create a webhook endpoint",
    responses={
        403: _error(
            "the key lacks the submit scope, or the owner holds GANFORGE_WEBHOOK_MAX_ENDPOINTS_PER_OWNER endpoints",
            "quota_exceeded",
            "owner 'vision' already holds 20 webhook endpoints (GANFORGE_WEBHOOK_MAX_ENDPOINTS_PER_OWNER): delete "
            "one first",
        ),
        422: _error(
            "a bad field; a URL that is not http(s), carries credentials, or resolves to a loopback, private, "
            "link-local, multicast, reserved or unspecified address is refused at `url`",
            "validation_error",
            "10.0.0.1 is a private address: webhooks reach public addresses only (GANFORGE_WEBHOOK_ALLOWED_HOSTS can "
            "allow it)",
            "url",
        ),
    },
)
def create_webhook(body: WebhookCreate, owner: Writer, store: StoreDep, settings: SettingsDep) -> WebhookCreated:
    """Register a URL for the caller's owner's events of the kinds in `events`. The answer holds the signing
    secret (`whsec_...`), shown only this once. Each event is POSTed as JSON `{type, timestamp, data}` with the
    Standard Webhooks headers webhook-id, webhook-timestamp and webhook-signature; a non-2xx answer is retried with
    exponential backoff for GANFORGE_WEBHOOK_RETRY_WINDOW_SECONDS (a day), and an endpoint failing that long is
    disabled. The URL's host is resolved now and at every send: loopback, private, link-local, multicast, reserved
    and unspecified addresses are refused unless GANFORGE_WEBHOOK_ALLOWED_HOSTS allows them."""
    try:
        HostPolicy(settings.webhook_allowed_hosts).check_url(body.url)
    except UrlRefused as exc:
        raise ApiError(422, "validation_error", f"url: {exc}", [{"field": "url", "message": str(exc)}]) from None
    try:
        record = store.create_webhook(
            owner=owner,
            url=body.url,
            events=list(body.events),
            description=body.description,
            secret=new_secret(),
            max_per_owner=settings.webhook_max_endpoints_per_owner,
        )
    except TooManyWebhooks as exc:
        raise ApiError(
            403,
            "quota_exceeded",
            f"owner {owner!r} already holds {exc.limit} webhook endpoints "
            "(GANFORGE_WEBHOOK_MAX_ENDPOINTS_PER_OWNER): delete one first",
            extra={"setting": "GANFORGE_WEBHOOK_MAX_ENDPOINTS_PER_OWNER", "limit": exc.limit},
        ) from None
    return WebhookCreated(**WebhookOut.of(record).model_dump(), secret=record.secret)


@router.get("", response_model=WebhookPage, summary="List webhook endpoints")
def list_webhooks(owner: Reader, store: StoreDep, limit: PageLimit = 50, cursor: PageCursor = None) -> WebhookPage:
    """The caller's owner's endpoints, newest first, without their secrets; pass `next_cursor` back as `cursor`
    for the next page."""
    records, next_cursor = store.list_webhooks(owner=owner, limit=limit, cursor=cursor)
    return WebhookPage(webhooks=[WebhookOut.of(r) for r in records], next_cursor=next_cursor)


@router.get("/{webhook_id}", response_model=WebhookOut, summary="Get a webhook endpoint", responses={**NOT_FOUND})
def get_webhook(webhook_id: WebhookId, owner: Reader, store: StoreDep) -> WebhookOut:
    """The endpoint (never its secret): URL, event kinds, whether it is enabled and why not, since when its
    deliveries fail. Another owner's: 404."""
    return WebhookOut.of(_owned(store, owner, webhook_id))


@router.delete(
    "/{webhook_id}",
    response_model=WebhookOut,
    summary="Delete a webhook endpoint",
    responses={**NOT_FOUND, 403: FORBIDDEN},
)
def delete_webhook(webhook_id: WebhookId, owner: Writer, store: StoreDep) -> WebhookOut:
    """Delete the endpoint and its delivery log; events not delivered yet are dropped. Answers the endpoint as it
    was. Another owner's: 404."""
    record = store.delete_webhook(webhook_id=webhook_id, owner=owner) if is_id(webhook_id) else None
    if record is None:
        raise not_found("webhook", webhook_id)
    return WebhookOut.of(record)


@router.post(
    "/{webhook_id}/enable",
    response_model=WebhookOut,
    summary="Enable a disabled webhook endpoint",
    responses={**NOT_FOUND, 403: FORBIDDEN},
)
def enable_webhook(webhook_id: WebhookId, owner: Writer, store: StoreDep) -> WebhookOut:
    """Turn a disabled endpoint on again (it was failing for the retry window); new events are sent from now on,
    and the ones it missed can be redelivered from its delivery log. Enabling an enabled one changes nothing."""
    record = store.enable_webhook(webhook_id=webhook_id, owner=owner) if is_id(webhook_id) else None
    if record is None:
        raise not_found("webhook", webhook_id)
    return WebhookOut.of(record)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryPage,
    summary="List an endpoint's deliveries",
    responses={**NOT_FOUND},
)
def list_deliveries(
    webhook_id: WebhookId,
    owner: Reader,
    store: StoreDep,
    status: Annotated[
        str | None,
        Query(pattern="^(" + "|".join(DELIVERY_STATUSES) + ")$", description="only deliveries in this status"),
    ] = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> DeliveryPage:
    """The endpoint's delivery log, newest first: each event's type, status, attempts, the last answer's HTTP
    status, error and latency, and its times. Another owner's endpoint: 404."""
    endpoint = _owned(store, owner, webhook_id)
    records, next_cursor = store.list_deliveries(webhook_id=endpoint.id, status=status, limit=limit, cursor=cursor)
    return DeliveryPage(deliveries=[DeliveryOut.of(r) for r in records], next_cursor=next_cursor)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=DeliveryOut,
    summary="Send an event to the endpoint again",
    responses={
        404: _error(
            "no such endpoint of yours, or no such delivery of it", "not_found", f"no delivery {DELIVERY_ID!r}"
        ),
        403: FORBIDDEN,
        409: _error(
            "the endpoint is disabled (endpoint_disabled); a delivery of this event to the endpoint is still "
            f"waiting, pending or failed (redelivery_pending); {MAX_WAITING} of the endpoint's deliveries are "
            "(too_many_pending)",
            "redelivery_pending",
            f"delivery {DELIVERY_ID!r} of this event is still waiting to be sent (pending or failed): wait for it",
        ),
    },
)
async def redeliver(
    webhook_id: WebhookId,
    delivery_id: Annotated[str, Path(description="the delivery's id", examples=[DELIVERY_ID])],
    owner: Writer,
    store: StoreDep,
) -> DeliveryOut:
    """Queue the delivery's event again as a new delivery, due now (same webhook-id, so a receiver can tell it saw
    it). Answers the new delivery (202: it is sent in the background). One delivery of an event waits at a time:
    while one is pending or failed (retried), redelivering that event is a 409 (redelivery_pending), and so is any
    redeliver while the endpoint has MAX_WAITING (1000) deliveries waiting (too_many_pending)."""
    endpoint = await run_in_threadpool(_owned, store, owner, webhook_id)
    if not endpoint.enabled:
        raise ApiError(409, "endpoint_disabled", "the endpoint is disabled: enable it first (POST .../enable)")
    try:
        record = (
            await run_in_threadpool(lambda: store.redeliver(webhook_id=endpoint.id, delivery_id=delivery_id))
            if is_id(delivery_id)
            else None
        )
    except RedeliveryPending as exc:
        raise ApiError(
            409,
            "redelivery_pending",
            f"delivery {exc.waiting!r} of this event is still waiting to be sent (pending or failed): wait for it "
            "(GET .../deliveries?status=failed shows its next attempt)",
            extra={"delivery_id": exc.waiting},
        ) from None
    except TooManyWaiting as exc:
        raise ApiError(
            409,
            "too_many_pending",
            f"the endpoint has {exc.limit} deliveries waiting to be sent (pending or failed): redeliver once they "
            "are sent or dead",
            extra={"limit": exc.limit},
        ) from None
    if record is None:
        raise not_found("delivery", delivery_id)
    return DeliveryOut.of(record)
