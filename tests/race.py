"""Calls released at the same instant, for tests of what must hold under concurrency."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def at_once(*calls: Callable[[], Any], timeout: float = 120.0) -> list[Any]:
    """Run each call in its own thread, all released by one barrier; what each returned or raised, in order.

    Exceptions are returned, not raised, so a test can assert on every caller's answer.
    """
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:  # collected: each caller's answer is the point
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return results
