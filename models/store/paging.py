"""Keyset paging, newest first, over a table's `seq` column: the one helper behind every paged list.

A cursor is the decimal `seq` of the last row of the previous page; the next page
holds the rows with a smaller seq. Only cursors this module could have written
are accepted.
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


def parse_cursor(cursor: str) -> int:
    """The seq a cursor names.

    Raises InvalidCursor unless `cursor` is a decimal integer in 1..DB_INT_MAX
    written as `str(seq)` writes it: ASCII digits only, no sign, space, underscore
    or leading zero (Python's int() would accept " 5", "+5", "1_0" and "٣").
    """
    if not (0 < len(cursor) <= len(str(DB_INT_MAX)) and cursor.isascii() and cursor.isdigit() and cursor[0] != "0"):
        raise InvalidCursor(cursor)
    value = int(cursor)
    if value > DB_INT_MAX:
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
) -> tuple[list[T], str | None]:
    """One page of `query`'s rows, newest (highest `seq`) first, and the cursor of the next page (None at the end).

    `query` selects one ORM entity and is not ordered yet; `limit` is clamped to
    1..PAGE_LIMIT_MAX; `keep`, when given, filters rows in Python (for filters
    SQLite and PostgreSQL cannot express alike). Raises InvalidCursor.
    """
    limit = clamp(limit, 1, PAGE_LIMIT_MAX)
    query = query.order_by(seq.desc())
    if cursor is not None:
        query = query.where(seq < parse_cursor(cursor))
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
