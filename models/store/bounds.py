"""Integers that came from a client, kept inside what the store's BIGINT columns hold.

A value outside DB_INT_MIN..DB_INT_MAX must never reach SQL (PostgreSQL and SQLite
refuse it with an error, which would surface as a 500): the store answers such a
value as the query means (no row can be there) before asking the database.
"""

from __future__ import annotations

from models.records import DB_INT_MAX, DB_INT_MIN


def in_db_range(value: int) -> bool:
    """Whether a BIGINT column can hold `value`."""
    return DB_INT_MIN <= value <= DB_INT_MAX


def clamp(value: int, low: int, high: int) -> int:
    """`value` limited to low..high (for sizes such as page limits, where any out-of-range value means the edge)."""
    return max(low, min(high, value))
