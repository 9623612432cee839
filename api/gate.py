"""The gate in front of the routers: authenticate and bound a request before a byte of its body is read.

A pure ASGI middleware, so nothing (FastAPI's body parsing, a route's dependencies) runs first:

- a `/v1` request without a known bearer key gets 401 at once, its body never received (uvicorn discards what
  the client still sends, in bounded memory), using the same key lookup as the `CurrentOwner` dependency;
- a body over its limit gets 413: at once when Content-Length says so, or as soon as a chunked body passes it.
  Every body is bounded by `max_json_body_bytes` except a multipart POST to the upload route, bounded by
  `max_upload_bytes` plus room for its form fields (the route counts the file itself, naming the field): the
  limit follows the route, not the client's Content-Type alone, which any request could set;
- a header the service reads as one value (Authorization, Content-Type, Content-Length) given more than once
  gets 400: the gate and the framework would read different copies (the last and the first).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import UNAUTHORIZED_MESSAGE, owner_for
from api.errors import error_body
from models.settings import Settings

log = logging.getLogger(__name__)

FORM_ROOM = 1024**2  # multipart boundaries and the small form fields, on top of the file itself
PROTECTED_PREFIX = "/v1/"
UPLOAD_PATH = "/v1/datasets"  # api/routes/datasets.py upload_dataset: the one route that takes a large body
SINGLE_HEADERS = frozenset({"authorization", "content-type", "content-length"})


def body_limit(settings: Settings, method: str, path: str, content_type: str) -> int:
    """The largest body accepted for this request, in bytes: an upload's on the upload route, else a JSON body's."""
    if method == "POST" and path.rstrip("/") == UPLOAD_PATH and content_type.strip().lower().startswith("multipart/"):
        return settings.max_upload_bytes + FORM_ROOM
    return settings.max_json_body_bytes


class RequestGate:
    """ASGI middleware: 401 for an unknown key on /v1, 413 for a body over its limit; neither reads the body."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        names = [name.decode("latin-1").lower() for name, _ in scope["headers"]]
        repeated = sorted({name for name in names if name in SINGLE_HEADERS and names.count(name) > 1})
        if repeated:
            await respond(send, 400, "repeated_header", f"header {repeated[0]} given more than once: give it once")
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        path: str = scope["path"]
        if path == PROTECTED_PREFIX.rstrip("/") or path.startswith(PROTECTED_PREFIX):
            if owner_for(self.settings.api_keys, headers.get("authorization")) is None:
                await respond(send, 401, "unauthorized", UNAUTHORIZED_MESSAGE, {"www-authenticate": "Bearer"})
                return
        limit = body_limit(self.settings, scope["method"], path, headers.get("content-type", ""))
        declared = headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            await respond(send, 413, "body_too_large", too_large_message(limit))
            return
        await LimitedBody(self.app, limit).run(scope, receive, send)


class LimitedBody:
    """One request whose streamed body is counted as it arrives; past `limit`, the client gets 413 and the app a
    disconnect (so it stops reading), and whatever the app still sends is dropped."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit
        self.received = 0
        self.started = False  # the app has begun its response: too late for a 413
        self.refused = False

    async def run(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted_receive() -> Message:
            if self.refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limit:
                    self.refused = True
                    if not self.started:
                        self.started = True
                        await respond(send, 413, "body_too_large", too_large_message(self.limit))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if self.refused:
                return  # the client already has its 413
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not self.refused:
                raise
            # the app saw a disconnect mid-body; the client has its 413, so this is not an error
            log.debug("request stopped after its body passed %d bytes", self.limit, exc_info=True)


def too_large_message(limit: int) -> str:
    """The 413's message for a body limit in bytes."""
    return f"the request body is larger than the limit of {limit} bytes"


async def respond(send: Send, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
    """Send a whole JSON error response in the API's one error shape."""
    body = json.dumps(error_body(code, message)).encode()
    raw: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})
