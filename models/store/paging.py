"""Keyset paging over one integer column: the one helper behind every paged list, and its opaque cursors.

Newest first over a table's `seq` (jobs, data sets, studies), or in ascending order over a
job's `step` (samples, checkpoints). The next page holds the rows past the key of the
previous page's last row; the cursor that carries that key is sealed to its list:

- opaque: the key is encrypted, so a cursor tells nothing (a bare seq would tell how many
  rows every owner together has made);
- bound: it opens only for the list ("jobs", "datasets", "studies", "samples",
  "checkpoints") and the scope (the owner, or the job of a samples or checkpoints list) it
  was written for; any other string, a tampered cursor included, is InvalidCursor (the API:
  a 422 at `query.cursor`).

A cursor is base64url (no padding, 34 characters) of a version byte, a 128-bit tag and the
8-byte key XOR a pad: deterministic authenticated encryption from HMAC-SHA256 (the SIV
construction), tag = HMAC(k, "tag" ‖ list ‖ scope ‖ key)[:16], pad = HMAC(k, "pad" ‖ tag)[:8].
The key k is the store's "cursor" service secret (records.ServiceSecret): 256 random bits
made on first use and shared by every API process through the store, so cursors survive
restarts and work on any API process of a deployment. Deleting its row retires every
cursor handed out (a client then starts its list again).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from models.records import DB_INT_MAX, ServiceSecret
from models.store.bounds import clamp
from models.store.errors import InvalidCursor

T = TypeVar("T")

PAGE_LIMIT_MAX = 1000
# Rows read at a time while a Python-side filter (`keep`) scans for a page.
_SCAN_BATCH = 200

CURSOR_SECRET = "cursor"  # the ServiceSecret row that keys every cursor
_VERSION = 1
_TAG_BYTES = 16
_KEY_BYTES = 8
CURSOR_CHARS = 34  # base64url of 1 + 16 + 8 bytes, unpadded
_CURSOR_FORM = re.compile(rf"[A-Za-z0-9_-]{{{CURSOR_CHARS}}}")


def _mac(secret: bytes, label: bytes, message: bytes) -> bytes:
    return hmac.new(secret, label + b"\0" + message, hashlib.sha256).digest()


@dataclass(frozen=True)
class CursorScope:
    """What a cursor is bound to: the list's name and its scope (owner, or job id), under the store's secret."""

    secret: bytes = field(repr=False)
    list_name: str
    scope: str

    def seal(self, key: int) -> str:
        """The cursor of `key` (0..DB_INT_MAX) for this list and scope: 34 base64url characters."""
        bound = json.dumps([_VERSION, self.list_name, self.scope, key]).encode()
        tag = _mac(self.secret, b"tag", bound)[:_TAG_BYTES]
        pad = _mac(self.secret, b"pad", tag)[:_KEY_BYTES]
        sealed = bytes(a ^ b for a, b in zip(key.to_bytes(_KEY_BYTES, "big"), pad, strict=True))
        return base64.urlsafe_b64encode(bytes([_VERSION]) + tag + sealed).decode().rstrip("=")

    def open(self, cursor: str, *, low: int = 1) -> int:
        """The key `cursor` carries, in low..DB_INT_MAX (`low` is 1 for a seq, 0 for a step).

        Raises InvalidCursor for anything `seal` of this list and scope did not write: another list's or owner's
        cursor, a changed character, an old bare number, an empty or overlong string.
        """
        if not _CURSOR_FORM.fullmatch(cursor):
            raise InvalidCursor(cursor)
        try:
            raw = base64.urlsafe_b64decode(cursor + "==")
        except (binascii.Error, ValueError):
            raise InvalidCursor(cursor) from None
        if len(raw) != 1 + _TAG_BYTES + _KEY_BYTES or raw[0] != _VERSION:
            raise InvalidCursor(cursor)
        tag, sealed = raw[1 : 1 + _TAG_BYTES], raw[1 + _TAG_BYTES :]
        pad = _mac(self.secret, b"pad", tag)[:_KEY_BYTES]
        key = int.from_bytes(bytes(a ^ b for a, b in zip(sealed, pad, strict=True)), "big")
        # Sealing again checks the tag and that the text is the one encoding seal writes.
        if not (low <= key <= DB_INT_MAX and hmac.compare_digest(self.seal(key), cursor)):
            raise InvalidCursor(cursor)
        return key


def load_secret(sessions: Callable[[], Session], name: str = CURSOR_SECRET) -> bytes:
    """The service secret `name` (32 bytes), made and stored on first use; when two processes make it at once, the
    first committed wins and both return it."""

    def read() -> str | None:
        with sessions() as session:
            return session.scalar(select(ServiceSecret.value).where(ServiceSecret.name == name))

    value = read()
    if value is None:
        try:
            with sessions() as session, session.begin():
                session.add(ServiceSecret(name=name, value=secrets.token_hex(32), created_at=datetime.now(UTC)))
        except IntegrityError:
            pass  # another process stored it first: use theirs
        value = read()
        if value is None:  # pragma: no cover - the row was just committed
            raise RuntimeError(f"service secret {name!r} was stored but does not read back")
    return bytes.fromhex(value)


def keyset_page(
    session: Session,
    query: Select[T],
    seq: InstrumentedAttribute[int],
    *,
    scope: CursorScope,
    limit: int,
    cursor: str | None,
    keep: Callable[[T], bool] | None = None,
    ascending: bool = False,
) -> tuple[list[T], str | None]:
    """One page of `query`'s rows, newest (highest `seq`) first, and the cursor of the next page (None at the end).

    `query` selects one ORM entity and is not ordered yet; `scope` seals the next cursor and opens `cursor` (see
    the module's docstring); `limit` is clamped to 1..PAGE_LIMIT_MAX; `keep`, when given, filters rows in Python
    (for filters SQLite and PostgreSQL cannot express alike). `ascending` pages lowest key first over a key that
    may be 0 (a step). Raises InvalidCursor.
    """
    limit = clamp(limit, 1, PAGE_LIMIT_MAX)
    query = query.order_by(seq.asc() if ascending else seq.desc())
    if cursor is not None:
        key = scope.open(cursor, low=0 if ascending else 1)
        query = query.where(seq > key if ascending else seq < key)
    rows: list[T] = []
    if keep is None:
        rows = list(session.scalars(query.limit(limit + 1)))
    else:
        for row in session.scalars(query.execution_options(yield_per=_SCAN_BATCH)):
            if keep(row):
                rows.append(row)
                if len(rows) > limit:
                    break
    next_cursor = scope.seal(_seq_of(rows[limit - 1], seq)) if len(rows) > limit else None
    return rows[:limit], next_cursor


def _seq_of(row: Any, seq: InstrumentedAttribute[int]) -> int:
    return int(getattr(row, seq.key))
