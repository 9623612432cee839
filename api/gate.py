"""The gate in front of the routers: authenticate and bound a request before a byte of its body is read.

A pure ASGI middleware, so nothing (FastAPI's body parsing, a route's dependencies) runs first:

- a `/v1` or `/metrics` request (is_protected) without a known bearer key (an environment key, or a store key neither expired nor revoked)
  gets 401 with `WWW-Authenticate: Bearer` at once, its body never received (uvicorn discards what the client
  still sends, in bounded memory), using the same key lookup as the `CurrentOwner` dependency (api.deps
  Authenticator; a store lookup runs in a worker thread, never on the event loop, and is cached
  KEY_CACHE_SECONDS); a key without the scope the request needs gets 403 naming it (`scope_needed`);
- a body over its limit gets 413: at once when Content-Length says so, or as soon as a chunked body passes it.
  Every body is bounded by `max_json_body_bytes` except a multipart POST to the upload route, bounded by
  `max_upload_bytes` plus room for its form fields (the route counts the file itself, naming the field): the
  limit follows the route, not the client's Content-Type alone, which any request could set;
- a header the service reads as one value (Authorization, Content-Type, Content-Length, Idempotency-Key,
  Last-Event-ID) given more than once gets 400: the gate and the framework would read different copies (the last
  and the first);
- rate limits (api/ratelimit.py): a submission or upload over its key's or its owner's rate gets 429 with
  Retry-After, and every answer of those routes the IETF RateLimit headers; a client IP over its rate of failed
  authentications gets 429 instead of 401, and, while it lasts, instead of any key lookup in the store;
- a JSON body (json_body_problem) that is not UTF-8, or names a member twice in one object, gets 422 before the
  route reads it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import CALLER_STATE, NEEDS_STORE, UNAUTHORIZED_MESSAGE, Caller, authenticator_of, scope_message
from api.errors import error_body, field_path
from api.ratelimit import RateLimits, Verdict
from models.settings import Settings

log = logging.getLogger(__name__)

FORM_ROOM = 1024**2  # multipart boundaries and the small form fields, on top of the file itself
PROTECTED_PREFIX = "/v1/"
# Routes outside /v1 that take a key (api/routes/system.py): they go through the same failed-auth count and block.
PROTECTED_PATHS = frozenset({"/v1", "/metrics"})
UPLOAD_PATH = "/v1/datasets"  # api/routes/datasets.py upload_dataset: the one route that takes a large body
SINGLE_HEADERS = frozenset({"authorization", "content-type", "content-length", "idempotency-key", "last-event-id"})
KEYS_PATH = "/v1/keys"  # api/routes/keys.py: admin only
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_protected(path: str) -> bool:
    """Whether a request to `path` needs a key (when auth is on): /v1 and everything under it, and /metrics."""
    return path in PROTECTED_PATHS or path.startswith(PROTECTED_PREFIX)


def scope_needed(method: str, path: str) -> str:
    """The scope a /v1 request needs: "admin" for /v1/keys, "read" to GET, else "submit" (POST, PUT, DELETE...)."""
    if path.rstrip("/") == KEYS_PATH or path.startswith(KEYS_PATH + "/"):
        return "admin"
    return "read" if method.upper() in READ_METHODS else "submit"


def body_limit(settings: Settings, method: str, path: str, content_type: str) -> int:
    """The largest body accepted for this request, in bytes: an upload's on the upload route, else a JSON body's."""
    if method == "POST" and path.rstrip("/") == UPLOAD_PATH and content_type.strip().lower().startswith("multipart/"):
        return settings.max_upload_bytes + FORM_ROOM
    return settings.max_json_body_bytes


class RequestGate:
    """ASGI middleware: 401 for an unknown key on /v1, 403 for a key lacking the scope, 429 over a rate, 413 for a
    body over its limit; none reads the body."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings
        self.rate_limits = RateLimits(settings)

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
        if is_protected(path):
            authorization = headers.get("authorization")
            ip = client_ip(scope)
            blocked = self.rate_limits.blocked(ip)
            try:
                # An IP over its rate of failed authentications gets no store lookup: only a key known in memory.
                caller = await self.caller(scope, authorization, lookup=blocked is None)
            except SQLAlchemyError as exc:
                log.warning("cannot read the API keys from the job store (%s): 503", type(exc).__name__)
                await respond(send, 503, "store_unavailable", "the job store does not answer: try again shortly")
                return
            if caller is None:
                refused = blocked or await self.rate_limits.failed_authentication(ip)
                if refused is not None and not refused.allowed:
                    await respond_limited(send, refused, "from this client address")
                    return
                # RFC 6750 3.1: no credentials, a bare challenge; a key that lets no one in, invalid_token.
                challenge = 'Bearer error="invalid_token"' if authorization else "Bearer"
                await respond(send, 401, "unauthorized", UNAUTHORIZED_MESSAGE, {"www-authenticate": challenge})
                return
            needed = scope_needed(scope["method"], path)
            if not caller.may(needed):
                challenge = f'Bearer error="insufficient_scope", scope="{needed}"'
                await respond(send, 403, "insufficient_scope", scope_message(needed), {"www-authenticate": challenge})
                return
            scope.setdefault("state", {})[CALLER_STATE] = caller
            rate = self.rate_limits.rate_for(scope["method"], path)
            verdict, owners = None, False
            if rate is not None:
                # A key counts for its owner too, all the owner's keys together (an admin key makes keys); with
                # auth off (no key) the client IP is the count.
                owner = caller.owner if caller.key_id is not None else None
                verdict, owners = await self.rate_limits.hit_both(rate, caller.key_id or f"ip:{ip}", owner)
            if verdict is not None:
                if not verdict.allowed:
                    whose = "for this owner's keys together" if owners else None
                    await respond_limited(
                        send, verdict, whose or ("for this API key" if caller.key_id else "for this client")
                    )
                    return
                send = with_headers(send, verdict.headers())
        limit = body_limit(self.settings, scope["method"], path, headers.get("content-type", ""))
        declared = headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            await respond(send, 413, "body_too_large", too_large_message(limit))
            return
        check_json = scope["method"] not in READ_METHODS and is_json_body(headers.get("content-type"))
        await LimitedBody(self.app, limit, check_json=check_json).run(scope, receive, send)

    @staticmethod
    async def caller(scope: Scope, authorization: str | None, *, lookup: bool = True) -> Caller | None:
        """The caller of this request, or None (unauthorized, or with lookup=False a key not known in memory); a
        store query runs in a worker thread.

        Raises SQLAlchemyError when the store must be read and cannot be.
        """
        authenticator = authenticator_of(scope["app"])
        found = authenticator.authenticate(authorization, block=False)
        if found is NEEDS_STORE and lookup:
            found = await anyio.to_thread.run_sync(lambda: authenticator.authenticate(authorization))
        return found if isinstance(found, Caller) else None


class LimitedBody:
    """One request whose streamed body is counted as it arrives; past `limit`, the client gets 413 and the app a
    disconnect (so it stops reading), and whatever the app still sends is dropped. With `check_json`, the whole
    body (at most `limit` bytes) is read first and refused when json_body_problem finds one, else handed on."""

    def __init__(self, app: ASGIApp, limit: int, *, check_json: bool = False) -> None:
        self.app, self.limit, self.check_json = app, limit, check_json
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

        app_receive = counted_receive
        if self.check_json:
            chunks: list[bytes] = []
            more = True
            while more:
                message = await counted_receive()
                if message["type"] != "http.request":
                    return  # the client left, or the body passed the limit (the client has its 413)
                chunks.append(message.get("body", b""))
                more = bool(message.get("more_body", False))
            body = b"".join(chunks)
            problem = json_body_problem(body)
            if problem is not None:
                status, detail = problem
                await respond(send, status, "validation_error", f"body: {detail['message']}", details=[detail])
                return
            replayed = False

            async def replay_receive() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            app_receive = replay_receive
        try:
            await self.app(scope, app_receive, guarded_send)
        except Exception:
            if not self.refused:
                raise
            # the app saw a disconnect mid-body; the client has its 413, so this is not an error
            log.debug("request stopped after its body passed %d bytes", self.limit, exc_info=True)


def is_json_body(content_type: str | None) -> bool:
    """Whether FastAPI reads a body with this Content-Type as JSON: none given, application/json or */*+json."""
    if content_type is None:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class _Object(dict[str, Any]):
    """A JSON object as json_body_problem reads it, with the first member name it saw twice (or None)."""

    repeated: str | None = None


def _object_of(pairs: list[tuple[str, Any]]) -> _Object:
    found = _Object(pairs)
    if len(found) < len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                found.repeated = name
                break
            seen.add(name)
    return found


def json_body_problem(body: bytes) -> tuple[int, dict[str, str]] | None:
    """Why a JSON body (bounded by the body limit) is refused before FastAPI reads it, as (status, detail), or None.

    - not UTF-8 JSON (RFC 8259 8.1), which Python's json would otherwise guess from its first bytes: UTF-16 or
      UTF-32, or UTF-8 behind a byte order mark: 422 at `body`;
    - an object naming one member twice (`{"scopes": ["read"], "scopes": ["admin"]}`), where a parser keeps the
      last and the client may have meant the first: 422 at the member's path.
    Syntax errors and bytes that are not UTF-8 are left to FastAPI's own 422 (api/errors.py), which gives the
    position.
    """
    if not body:
        return None
    encoding = json.detect_encoding(body)
    if encoding != "utf-8":
        read_as = "UTF-8 with a byte order mark" if encoding == "utf-8-sig" else encoding.upper()
        message = f"the body is not UTF-8: it reads as {read_as}; send JSON in UTF-8 without a byte order mark"
        return 422, {"field": "body", "message": message, "type": "json_invalid"}
    try:
        tree = json.loads(body.decode("utf-8"), object_pairs_hook=_object_of)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), tree)]
    while stack:
        loc, node = stack.pop()
        if isinstance(node, _Object):
            if node.repeated is not None:
                field = field_path(("body", *loc, node.repeated))
                message = f"{node.repeated!r} given more than once in one JSON object: give it once"
                return 422, {"field": field, "message": message, "type": "repeated"}
            stack.extend(((*loc, name), child) for name, child in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend(((*loc, index), child) for index, child in reversed(list(enumerate(node))))
    return None


def client_ip(scope: Scope) -> str:
    """The client's address as the server saw it (uvicorn puts a trusted proxy's X-Forwarded-For there)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def with_headers(send: Send, headers: dict[str, str]) -> Send:
    """`send` that adds `headers` to the response's start."""
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *raw]}
        await send(message)

    return send_with_headers


async def respond_limited(send: Send, verdict: Verdict, whose: str) -> None:
    """The 429 of a request over `verdict`'s rate, with Retry-After and the RateLimit headers."""
    await respond(send, 429, "rate_limited", verdict.message(whose), verdict.headers(), verdict.extra())


def too_large_message(limit: int) -> str:
    """The 413's message for a body limit in bytes."""
    return f"the request body is larger than the limit of {limit} bytes"


async def respond(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, str] | None = None,
    details: list[dict[str, str]] | None = None,
) -> None:
    """Send a whole JSON error response in the API's one error shape, with `details` and `extra` members in its
    error object."""
    answer = error_body(code, message, details)
    answer["error"].update(extra or {})
    body = json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()  # as JSONResponse writes it
    raw: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})
