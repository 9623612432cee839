"""Integers and text that came from a client, kept inside what the store can hold.

A value outside DB_INT_MIN..DB_INT_MAX must never reach SQL (PostgreSQL and SQLite
refuse it with an error, which would surface as a 500): the store answers such a
value as the query means (no row can be there) before asking the database. The same
for text with a NUL character (PostgreSQL text cannot hold one) or a lone surrogate
(not encodable as UTF-8): no row can have it, so a lookup finds nothing.
"""

from __future__ import annotations

from models.records import DB_INT_MAX, DB_INT_MIN


def in_db_range(value: int) -> bool:
    """Whether a BIGINT column can hold `value`."""
    return DB_INT_MIN <= value <= DB_INT_MAX


def storable(*values: str | None) -> bool:
    """Whether every string of `values` (None is skipped) can be sent to the database: no NUL, no lone surrogate."""
    for value in values:
        if value is not None and ("\x00" in value or not _encodable(value)):
            return False
    return True


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clamp(value: int, low: int, high: int) -> int:
    """`value` limited to low..high (for sizes such as page limits, where any out-of-range value means the edge)."""
    return max(low, min(high, value))
