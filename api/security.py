"""Security headers on every response: one pure ASGI middleware, outside everything else (500s included).

Every response carries `RESPONSE_HEADERS`:
- `X-Content-Type-Options: nosniff`: a browser never runs a JSON answer, an upload's preview or a checkpoint as
  script or style;
- `Referrer-Policy: no-referrer`: a job or data set id in this service's URLs does not leak to another site;
- a Content-Security-Policy that lets a page (the dashboard at `/`, its files under `/static`, Swagger UI at
  `/docs`) load and connect to this origin only, with no inline or eval'd script anywhere (/docs' start-up
  script is the static docs.js), and no framing by any site (`frame-ancestors 'none'`, and `X-Frame-Options`
  for browsers without CSP 2). On a JSON answer the policy does nothing but forbid framing it.

Authenticated answers (`/v1/...`, and `/metrics` when keys are configured) also carry `Cache-Control: no-store`:
no browser or shared cache keeps one owner's jobs, samples or checkpoints. The dashboard's own files keep the
`no-cache` (revalidate by ETag) that api/routes/dashboard.py gives them.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        # uPlot and Swagger UI style elements through the CSSOM (element.style), which CSP allows; no inline
        # <style> or style="" is needed
        "style-src 'self'",
        "img-src 'self' blob: data:",  # blob: the sample images and previews; data: the empty favicon
        "connect-src 'self'",  # the /v1 calls and the SSE stream
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
RESPONSE_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
PRIVATE_HEADERS = {"cache-control": "no-store"}


def headers_for(path: str) -> dict[str, str]:
    """The security headers (lower-case names) a response to `path` carries, replacing any the app set."""
    # /v1: an owner's data (api.gate's PROTECTED_PREFIX); /metrics: needs a key when keys are configured
    if path in ("/v1", "/metrics") or path.startswith("/v1/"):
        return {**RESPONSE_HEADERS, **PRIVATE_HEADERS}
    return RESPONSE_HEADERS


class SecurityHeaders:
    """ASGI middleware: `headers_for(path)` on every HTTP response's start, in place of the app's same headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = [(name.encode(), value.encode()) for name, value in headers_for(scope["path"]).items()]
        replaced = {name for name, _ in added}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(name, value) for name, value in message.get("headers", []) if name.lower() not in replaced]
                message = {**message, "headers": kept + added}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: FastAPI) -> None:
    """Put SecurityHeaders outside `app`'s whole middleware stack.

    `add_middleware` would place it inside Starlette's ServerErrorMiddleware, whose 500 answer would then go out
    without the headers; wrapping the built stack covers every response.
    """
    build = app.build_middleware_stack

    def build_with_headers() -> ASGIApp:
        return SecurityHeaders(build())

    app.build_middleware_stack = build_with_headers  # type: ignore[method-assign]
