"""Keyset paging over one integer column: the one helper behind every paged list.

Newest first over a table's `seq` (jobs, data sets, studies), or in ascending order over a
job's `step` (samples, checkpoints). A cursor is the decimal key of the last row of the
previous page; the next page holds the rows past it. Only cursors this module could have
written are accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from models.records import DB_INT_MAX
from models.store.bounds import clamp
from models.store.errors import InvalidCursor

T = TypeVar("T")

PAGE_LIMIT_MAX = 1000
# Rows read at a time while a Python-side filter (`keep`) scans for a page.
_SCAN_BATCH = 200


def parse_cursor(cursor: str, *, low: int = 1) -> int:
    """The key a cursor names.

    Raises InvalidCursor unless `cursor` is a decimal integer in low..DB_INT_MAX
    (`low` is 1 for a seq, 0 for a step) written as `str(key)` writes it: ASCII
    digits only, no sign, space, underscore or leading zero (Python's int() would
    accept " 5", "+5", "1_0" and "٣").
    """
    canonical = cursor[:1] != "0" or cursor == "0"
    if not (0 < len(cursor) <= len(str(DB_INT_MAX)) and cursor.isascii() and cursor.isdigit() and canonical):
        raise InvalidCursor(cursor)
    value = int(cursor)
    if not low <= value <= DB_INT_MAX:
        raise InvalidCursor(cursor)
    return value


def keyset_page(
    session: Session,
    query: Select[T],
    seq: InstrumentedAttribute[int],
    *,
    limit: int,
    cursor: str | None,
    keep: Callable[[T], bool] | None = None,
    ascending: bool = False,
) -> tuple[list[T], str | None]:
    """One page of `query`'s rows, newest (highest `seq`) first, and the cursor of the next page (None at the end).

    `query` selects one ORM entity and is not ordered yet; `limit` is clamped to
    1..PAGE_LIMIT_MAX; `keep`, when given, filters rows in Python (for filters
    SQLite and PostgreSQL cannot express alike). `ascending` pages lowest key first
    over a key that may be 0 (a step). Raises InvalidCursor.
    """
    limit = clamp(limit, 1, PAGE_LIMIT_MAX)
    query = query.order_by(seq.asc() if ascending else seq.desc())
    if cursor is not None:
        key = parse_cursor(cursor, low=0 if ascending else 1)
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
    next_cursor = str(_seq_of(rows[limit - 1], seq)) if len(rows) > limit else None
    return rows[:limit], next_cursor


def _seq_of(row: Any, seq: InstrumentedAttribute[int]) -> int:
    return int(getattr(row, seq.key))
