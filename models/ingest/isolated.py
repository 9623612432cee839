"""Normalising an upload in a bounded subprocess, so one upload cannot stall or kill the process that serves.

The child (`python -m models.ingest`, models/ingest/__main__.py) lowers its own
address-space limit to GANFORGE_INGEST_MEMORY_BYTES (RLIMIT_AS) before reading
anything, runs models.ingest.normalise, and writes its answer to a JSON file;
the parent waits at most GANFORGE_INGEST_TIMEOUT_SECONDS. The limit is set in
the child rather than in a preexec_fn, which is unsafe in a threaded server.
Call it from a worker thread (the API uses its threadpool): it blocks.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import models
from models.ingest.canonical import Canonical
from models.ingest.errors import IngestError, invalid, too_large
from models.ingest.limits import Limits
from models.ingest.options import IngestOptions

log = logging.getLogger(__name__)
_ROOT = str(Path(models.__file__).resolve().parent.parent)
# One thread per library: a thread pool's stacks and arenas would eat the address-space limit.
_THREADS = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def normalise_isolated(upload: Path, directory: Path, options: IngestOptions, limits: Limits) -> Canonical:
    """models.ingest.normalise run in a subprocess bounded by `limits` (memory, time).

    Raises IngestError as the child does; 413 when it runs out of memory or time,
    422 when a signal stops it (a reader crashed on the content); RuntimeError
    when it fails in any other way (a bug, logged with the child's stderr).
    """
    result = directory.parent / "ingest-result.json"
    result.unlink(missing_ok=True)  # only this run's answer counts
    request = {
        "upload": str(upload),
        "directory": str(directory),
        "result": str(result),
        "options": options.to_json(),
        "limits": limits.as_dict(),
    }
    env = {**os.environ, **_THREADS, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "models.ingest", json.dumps(request)],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=limits.timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise too_large(
            "file",
            f"normalising the upload took longer than {limits.timeout_seconds:g} s (GANFORGE_INGEST_TIMEOUT_SECONDS)",
        ) from None
    if result.exists():
        answer: dict[str, Any] = json.loads(result.read_text())
        if "error" in answer:
            error = answer["error"]
            raise IngestError(error["field"], error["message"], int(error["status"]))
        return Canonical.from_json(answer["canonical"])
    stderr = done.stderr.decode("utf-8", "replace")[-4000:]
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        log.warning("ingest subprocess stopped by %s:\n%s", name, stderr)
        raise invalid("file", f"the upload could not be read: its reader was stopped by {name}")
    log.error("ingest subprocess failed with exit status %s:\n%s", done.returncode, stderr)
    raise RuntimeError(f"ingest subprocess failed with exit status {done.returncode}")


def child_main(argv: list[str]) -> int:
    """The subprocess: limit memory, watch the parent, normalise, answer in the result file."""
    import resource
    import threading
    import time

    from models.ingest.normalise import normalise

    request = json.loads(argv[0])
    limits = Limits(**request["limits"])
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    ceiling = limits.memory_bytes if hard == resource.RLIM_INFINITY else min(limits.memory_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))  # a process may lower, never raise, its hard limit
    parent = os.getppid()

    def orphaned() -> None:  # an API that went away takes its uploads' work with it
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(3)

    threading.Thread(target=orphaned, daemon=True).start()
    answer: dict[str, Any]
    try:
        options = IngestOptions.from_json(request["options"])
        canonical = normalise(Path(request["upload"]), Path(request["directory"]), options, limits)
        answer = {"canonical": canonical.to_json()}
    except IngestError as exc:
        answer = {"error": {"field": exc.field, "message": exc.message, "status": exc.status_hint}}
    except MemoryError:
        message = f"normalising it needs more than {limits.memory_bytes} bytes of memory (GANFORGE_INGEST_MEMORY_BYTES)"
        answer = {"error": {"field": "file", "message": message, "status": 413}}
    Path(request["result"]).write_text(json.dumps(answer))
    return 0
