"""Places one owner holds at once in this API process, each kind up to its cap: open event streams
(GANFORGE_MAX_SSE_PER_OWNER, api/events.py) and uploads in progress (GANFORGE_MAX_UPLOADS_IN_FLIGHT_PER_OWNER,
api/routes/datasets.py).

Counted on the event loop, so without a lock; per process, not shared through Redis.
"""

from __future__ import annotations

from collections import Counter


class OwnerSlots:
    """How many places each owner holds; an owner holding none has no entry (the table stays as small as the
    owners active now)."""

    def __init__(self) -> None:
        self._held: Counter[str] = Counter()

    def held(self, owner: str) -> int:
        return self._held[owner]

    def take(self, owner: str, cap: int) -> bool:
        """Take one of `owner`'s `cap` places; False (nothing taken) when it already holds `cap`."""
        if self._held[owner] >= cap:
            return False
        self._held[owner] += 1
        return True

    def give_back(self, owner: str) -> None:
        """Give back one place taken with `take`."""
        self._held[owner] -= 1
        if self._held[owner] <= 0:
            del self._held[owner]
