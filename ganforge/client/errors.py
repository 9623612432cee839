"""The SDK's exceptions: one type per error shape of the API.

Every error answer of the API has one shape,
`{"error": {"code": str, "message": str, "details": [{"field": str, "message": str}, ...]}}` (api/errors.py);
`error_from_response` turns it into the matching subclass of `GanforgeError`:

| status               | exception          |
|----------------------|--------------------|
| 400, 413, 415, 422   | `ValidationFailed` (`.fields`: the invalid field paths, e.g. `loss.name`) |
| 401, 403             | `Unauthorized`     |
| 404                  | `NotFound`         |
| 409                  | `Conflict`         |
| 429                  | `RateLimited` (`.retry_after`: seconds, or None) |
| 5xx                  | `ServerError`      |
| no answer at all     | `ConnectionFailed` (refused, reset, timed out) |

Text the server chose (message, code, field paths) reaches a terminal: control characters in it are shown escaped
(`shown`), so an answer cannot move the cursor, recolour or clear the screen of whoever prints the error.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

MAX_MESSAGE = 2000  # characters of a server's message kept


def shown(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` fit for a terminal: each control character escaped (`\\x1b`, `\\n`), at most `limit` characters."""
    text = text[:limit]
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class FieldError:
    """One invalid field: its dotted path in the request (`loss.name`, `query.cursor`, `file`) and why."""

    field: str
    message: str


class GanforgeError(Exception):
    """Any failure the SDK reports.

    `message` is the API's message (or ours), `status` the HTTP status (None when no answer came), `code` the API's
    error code (`validation_error`, `not_found`, `idempotency_conflict`, ...), `details` its list of
    `{"field", "message"}` dicts (empty when it gave none).
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details: list[dict[str, Any]] = list(details or [])

    @property
    def fields(self) -> list[FieldError]:
        """The invalid fields the answer named (`details` as `FieldError`s), in the API's order."""
        return [
            FieldError(field=shown(str(d.get("field", "")), 300), message=shown(str(d.get("message", ""))))
            for d in self.details
            if isinstance(d, dict)
        ]

    def __str__(self) -> str:
        prefix = f"{self.status} {self.code}: " if self.status is not None and self.code else ""
        return prefix + self.message


class ValidationFailed(GanforgeError):
    """The request was refused as invalid (400, 413, 415, 422); `.fields` lists each invalid field path."""

    def __str__(self) -> str:
        lines = [super().__str__()]
        lines += [f"  {f.field or '(body)'}: {f.message}" for f in self.fields]
        return "\n".join(lines)


class Unauthorized(GanforgeError):
    """A missing or unknown API key (401, 403): pass `api_key=` or set GANFORGE_API_KEY."""


class NotFound(GanforgeError):
    """No such job, data set, sample or checkpoint (404); another owner's job is as missing as a missing one."""


class Conflict(GanforgeError):
    """The request conflicts with the current state (409): e.g. an Idempotency-Key reused with another spec
    (`code` idempotency_conflict), cancelling a finished job (already_finished), deleting a data set a queued or
    running job uses (dataset_in_use)."""


class RateLimited(GanforgeError):
    """Too many requests (429); `retry_after` is the seconds the API asked to wait (None when it did not say)."""

    def __init__(
        self,
        message: str,
        status: int | None = 429,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status, code, details)
        self.retry_after = retry_after


class ServerError(GanforgeError):
    """The service failed (5xx) and retrying did not help."""


class UnexpectedResponse(GanforgeError):
    """The answer is not what a ganforge API sends (not JSON, or not the expected shape): `--url` / GANFORGE_URL
    may point at another service, or a proxy answered."""


class ConnectionFailed(GanforgeError):
    """The service could not be reached, or the connection broke or timed out (no HTTP answer)."""


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The answer's Retry-After in seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    date = response.headers.get("date")
    try:
        now = parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        now = None
    if now is None:
        now = datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def error_from_response(response: httpx.Response) -> GanforgeError:
    """The exception for an error answer (status >= 400); the body must have been read."""
    status = response.status_code
    code: str | None = None
    details: list[dict[str, Any]] = []
    message = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = shown(str(error["code"]), 100) if error.get("code") is not None else None
        message = shown(str(error.get("message") or ""))
        raw = error.get("details")
        details = [d for d in raw if isinstance(d, dict)] if isinstance(raw, list) else []
    if not message:
        text = response.text.strip()
        message = shown(text, 500) if text else shown(response.reason_phrase or f"HTTP {status}", 100)
    request = response.request
    message = f"{message} ({request.method} {request.url.path})"
    if status in (400, 413, 415, 422):
        return ValidationFailed(message, status, code, details)
    if status in (401, 403):
        return Unauthorized(message, status, code, details)
    if status == 404:
        return NotFound(message, status, code, details)
    if status == 409:
        return Conflict(message, status, code, details)
    if status == 429:
        return RateLimited(message, status, code, details, retry_after=retry_after_seconds(response))
    if status >= 500:
        return ServerError(message, status, code, details)
    return GanforgeError(message, status, code, details)
