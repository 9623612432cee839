"""Watch the process that started `ganforge up`, so the service stops when its parent does.

Two ways a parent stops without telling its child:

- it exits (a shell killed with SIGKILL, a closed terminal's session): we are re-parented,
  so `os.getppid()` changes;
- GNU make, told SIGINT (`kill -INT <make's pid>`, not the process group), does not pass
  the signal on to its recipe: its handler resets SIGINT to the default action, keeps it
  blocked and waits for the recipe to end before dying of it (make's `fatal_error_signal`).
  Linux shows that state in `/proc/<pid>/status`: the signal is blocked and no longer caught.

Linux only (`/proc`); elsewhere only the first way is seen.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

# The signals a parent gets when the user wants it, and so us, to stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _mask(status: str, field: str) -> int:
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split(":", 1)[1].strip(), 16)
    return 0


def dying_of(pid: int, proc: Path = Path("/proc")) -> signal.Signals | None:
    """The stop signal that process `pid` holds blocked at its default action, or None.

    A process in that state dies of the signal as soon as it unblocks it (make waiting
    for its recipe). None when `pid` does not exist or /proc cannot be read.
    """
    try:
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return None
    blocked, caught, ignored = (_mask(status, name) for name in ("SigBlk", "SigCgt", "SigIgn"))
    for sig in STOP_SIGNALS:
        bit = 1 << (sig - 1)
        if blocked & bit and not (caught | ignored) & bit:
            return sig
    return None


class ParentWatch:
    """Polled by `ganforge up`'s loop: says why to stop once the parent has gone or is dying.

    A parent seen dying must be seen so on two polls in a row: a process may block a signal
    for an instant (around a fork) without meaning anything by it.
    """

    def __init__(self, pid: int | None = None) -> None:
        self.pid = os.getppid() if pid is None else pid
        self._seen_dying = 0

    def reason_to_stop(self) -> str | None:
        """A sentence saying why to stop, or None while the parent lives on."""
        if self.pid <= 1:
            return None  # started by init or as a container's first process: no parent to follow
        if os.getppid() != self.pid:
            return f"its parent process {self.pid} exited"
        sig = dying_of(self.pid)
        self._seen_dying = self._seen_dying + 1 if sig is not None else 0
        if sig is not None and self._seen_dying >= 2:
            return f"its parent process {self.pid} got {sig.name} and waits for it to end"
        return None
