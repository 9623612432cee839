"""A PostgreSQL cluster and a Redis server of a test's own, for tests that stop or restart them.

The suite runs in two processes (pytest-xdist) against the machine's shared PostgreSQL and
Redis; a test that restarted those would break whatever the other process was running. These
are the same real servers, started from the same binaries, on free ports, for one test only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

import psycopg

from tests.service import free_port


def _postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian's layout); fails loudly when none is."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    assert versions, "PostgreSQL server binaries not found under /usr/lib/postgresql"
    return versions[-1]


def _as_postgres(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; CI runs as root, a developer may not.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class _Closing:
    """`with Server() as server:` closes it however the block ends."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class PrivatePostgres(_Closing):
    """A throw-away PostgreSQL cluster (trust auth, user postgres) on 127.0.0.1:`port`."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ganforge-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._bin = _postgres_bin()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            _as_postgres(
                [str(self._bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
            ),
            check=True,
            capture_output=True,
        )
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres([str(self._bin / "pg_ctl"), "-D", str(self.data), *args]), check=True, capture_output=True
        )

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._ctl("-o", options, "-l", str(self.root / "log"), "-w", "start")
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", connect_timeout=5):
            pass

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every session is terminated, as in a real server restart."""
        self._ctl("-m", "fast", "-w", "stop")
        self.start()

    def close(self) -> None:
        try:
            self._ctl("-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis(_Closing):
    """A throw-away Redis server (no persistence) on 127.0.0.1:`port`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(100):
            ping = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "ping"], capture_output=True)
            if ping.returncode == 0 and b"PONG" in ping.stdout:
                return
            time.sleep(0.05)
        raise AssertionError(f"redis-server on port {self.port} did not answer")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def close(self) -> None:
        self.stop()
