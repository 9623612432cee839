"""`ganforge up`: migrate, then run the API, training workers (one, or `--workers N`) and one generate worker until
told to stop.

The children run in process groups of their own, so a terminal's Ctrl-C reaches this
process alone and the shutdown happens once, in order: SIGTERM to the worker (a running
job checkpoints and goes back to the queue; an idle worker just exits) and to the API.
A second Ctrl-C kills them at once. The children get SIGTERM from the kernel if this
process dies without cleaning up (Linux `PR_SET_PDEATHSIG`), and this process stops
when its own parent exits or is dying (ganforge/parent.py: `make run` told SIGINT).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from functools import partial
from types import FrameType

from ganforge.parent import ParentWatch

log = logging.getLogger("ganforge")

DEMO_SPEC = {
    "name": "demo-ring8-nsgan",
    "dataset": {"builtin": "ring8"},
    # 128 units instead of the zoo's 512: minutes, not a quarter of an hour, on a laptop CPU.
    "architecture": {"name": "mlp", "hidden": 128},
    "loss": {"name": "nsgan"},
    "training": {"steps": 2000, "batch_size": 256},
    "every": {"metrics": 10, "samples": 250, "checkpoint": 500},
}
POLL_SECONDS = 0.5
DEMO_READY_SECONDS = 60.0
# A worker handing a job back writes a checkpoint first; past this it is killed (the lease re-queues the job).
WORKER_GRACE_SECONDS = 30.0
API_GRACE_SECONDS = 10.0
# A worker that dies soon after starting (broker unreachable) is restarted after a growing pause, up to this.
MAX_RESTART_DELAY_SECONDS = 30.0
_PR_SET_PDEATHSIG = 1


# How a server process starts: its entry point run with this installation's packages, not a same-named folder of
# the current directory (ganforge/child.py).
CHILD = (sys.executable, "-P", "-m", "ganforge.child")


def api_command(host: str, port: int, environ: Mapping[str, str] | None = None) -> list[str]:
    """The uvicorn command line that serves `api.app:app` on host:port.

    uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told otherwise, so any local client could pick the
    address the failed-authentication limit counts (api/ratelimit.py): forwarded headers are read only when the
    operator names the proxies in FORWARDED_ALLOW_IPS (`environ`, default os.environ; uvicorn reads it itself).
    """
    environ = os.environ if environ is None else environ
    command = [*CHILD, "uvicorn", "api.app:app", "--host", host, "--port", str(port), "--no-access-log"]
    if not environ.get("FORWARDED_ALLOW_IPS", "").strip():
        command.append("--no-proxy-headers")
    return command


def worker_command(generate: bool = False) -> list[str]:
    """The Celery command line of one worker (prefork, one process): a training worker on its named queues
    (models/queue.py worker_queues: GANFORGE_WORKER_QUEUES, else GANFORGE_QUEUE), or (`generate`) a generate worker
    on its own short queue (models/queue.py generate_queue)."""
    from models.queue import generate_queue, worker_queues
    from models.settings import get_settings

    # With JSON logs, Celery's start-up banner (plain text on stdout) is left out: every line is then one object.
    quiet = ["--quiet"] if get_settings().log_format == "json" else []
    return [
        *CHILD,
        "celery",
        "-A",
        "worker.celery_app",
        *quiet,
        "worker",
        "--loglevel",
        "INFO",
        "--pool",
        "prefork",
        "--concurrency",
        "1",
        "-Q",
        generate_queue(get_settings()) if generate else ",".join(worker_queues(get_settings())),
        "-n",
        f"ganforge-{'generate-' if generate else ''}{os.getpid()}@%h",
    ]


def migrate() -> None:
    """Create the data dir (owner-only, as every file this process and its children make: `ganforge up` starts
    them after this) and bring the store's schema to the latest Alembic revision."""
    from migrations import upgrade
    from models.artifacts import keep_files_private
    from models.settings import get_settings

    keep_files_private()
    settings = get_settings()
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    upgrade(settings.database_url)
    log.info("schema is at the latest revision (%s)", settings.database_url.split("@")[-1])


def _die_with_parent(death_signal: signal.Signals) -> Callable[[], None]:
    def arm() -> None:
        # Runs in the child between fork and exec; the setting survives exec.
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)

    return arm


def spawn(command: list[str], death_signal: signal.Signals = signal.SIGTERM) -> subprocess.Popen[bytes]:
    """Start `command` as the leader of a new process group that gets `death_signal` if we die.

    SIGTERM is a Celery worker's warm shutdown (a training job is checkpointed and handed back); SIGQUIT its cold
    shutdown, for the generate worker, whose unfinished request the reconciler expires anyway."""
    arm = _die_with_parent(death_signal) if sys.platform == "linux" else None
    return subprocess.Popen(command, process_group=0, preexec_fn=arm)


def is_ready(url: str) -> bool:
    """True when `url`/readyz answers 200 within a second."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def submit_demo(url: str, key: str | None = None) -> None:
    """Submit DEMO_SPEC (with `key`, else the first environment key, if any) and print how to follow it; a refusal
    is logged, never stops the service."""
    from models.settings import get_settings

    headers = {"Content-Type": "application/json"}
    keys = get_settings().api_keys
    key = key or (next(iter(keys)) if keys else None)
    if key:  # auth on: the demo belongs to the key's owner
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(f"{url}/v1/jobs", data=json.dumps(DEMO_SPEC).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            job = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.warning("the demo job was not submitted: %s", exc)
        return
    print(
        f"\ndemo job {job['id']} submitted: watch it\n"
        f"  in the dashboard: {url}/#/jobs/{job['id']}\n"
        f"  in a terminal:    ganforge --url {url} follow {job['id']}\n"
        f"  over HTTP:        curl {url}/v1/jobs/{job['id']}\n",
        flush=True,
    )


def parent_watch() -> ParentWatch | None:
    """A watch on our parent, or None under `nohup` (SIGHUP ignored): the user asked to outlive the parent."""
    return None if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN else ParentWatch()


def spawn_training_worker(workers: int, index: int = 0) -> subprocess.Popen[bytes]:
    """Training worker `index` of `workers` on the default queue: GANFORGE_WORKER_THREADS, when not set, is its share
    of the cores (cores ÷ workers; worker/presence.py), so N workers do not oversubscribe the machine N times; with
    GANFORGE_WORKER_METRICS_PORT set, worker `index` serves its metrics on that port + `index`."""
    from models.settings import get_settings

    settings = get_settings()
    if settings.worker_threads <= 0 and workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        os.environ["GANFORGE_WORKER_THREADS"] = str(max(1, cores // workers))  # inherited by the child
    if settings.worker_metrics_port is not None and workers > 1:
        os.environ["GANFORGE_WORKER_METRICS_PORT"] = str(settings.worker_metrics_port + index)  # as above
    return spawn(worker_command())


class Up:
    """The API and `workers` training workers (and a generate worker), kept running until a stop signal or the
    parent's end."""

    def __init__(self, host: str, port: int, workers: int = 1) -> None:
        self.host, self.port = host, port
        self.stop_reason: str | None = None
        self.signals = 0
        self.api: subprocess.Popen[bytes] | None = None
        self.trainers = [
            Kept("worker" if workers == 1 else f"worker {i + 1}", partial(spawn_training_worker, workers, i))
            for i in range(workers)
        ]
        self.generator = Kept("generate worker", lambda: spawn(worker_command(generate=True), signal.SIGQUIT))

    @property
    def workers(self) -> list[subprocess.Popen[bytes] | None]:
        """The training workers' current processes, then the generate worker's."""
        return [kept.process for kept in [*self.trainers, self.generator]]

    @property
    def url(self) -> str:
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '::') else self.host}:{self.port}"

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals == 1:
            self.stop_reason = f"got {signal.Signals(signum).name}"
            log.info("%s: stopping the worker and the API (again to kill them at once)", self.stop_reason)
        else:
            log.info("got %s again: killing the worker and the API", signal.Signals(signum).name)
            for process in (*self.workers, self.api):
                _kill_group(process)

    def install_signal_handlers(self) -> None:
        """SIGINT, SIGTERM and SIGHUP stop the service; SIGHUP stays ignored under nohup."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
                continue
            signal.signal(sig, self._on_signal)

    def run(self, demo: bool, after_migrate: Callable[[], str | None] | None = None) -> int:
        """Serve until stopped; 0 when stopped on request, 1 when the API died. `after_migrate` runs before the API
        starts (the first admin key) and may return a key for the demo job."""
        parent = parent_watch()
        self.install_signal_handlers()
        migrate()
        demo_key = after_migrate() if after_migrate is not None else None
        if self.stop_reason is not None:
            return 0
        self.api = spawn(api_command(self.host, self.port))
        for kept in [*self.trainers, self.generator]:
            kept.start()
        # The demo waits for readiness inside the loop, so a Ctrl-C during start-up is not held up.
        demo_until = time.monotonic() + DEMO_READY_SECONDS if demo else None
        try:
            while self.stop_reason is None:
                if demo_until is not None and is_ready(self.url):
                    submit_demo(self.url, demo_key)
                    demo_until = None
                elif demo_until is not None and time.monotonic() > demo_until:
                    log.warning("the API was not ready within %.0f s: no demo job submitted", DEMO_READY_SECONDS)
                    demo_until = None
                # A local first: a signal handled meanwhile has set stop_reason, which must not be overwritten.
                parent_reason = parent.reason_to_stop() if parent else None
                if parent_reason is not None:
                    self.stop_reason = parent_reason
                    log.info("%s: stopping the worker and the API", parent_reason)
                    break
                if self.api.poll() is not None:
                    log.error("the API exited with %s; stopping", self.api.returncode)
                    return 1
                # A worker that lived a minute had a real life: restarted at once; a crash loop backs off (Kept).
                for kept in [*self.trainers, self.generator]:
                    kept.keep()
                time.sleep(POLL_SECONDS)
            return 0
        finally:
            self.stop()

    def stop(self) -> None:
        """SIGTERM the workers and the API, wait for them, kill what outlives its grace."""
        for process in (*self.workers, self.api):
            if process is not None and process.poll() is None:
                process.terminate()
        for process, grace in (
            *((worker, WORKER_GRACE_SECONDS) for worker in self.workers),
            (self.api, API_GRACE_SECONDS),
        ):
            if process is None:
                continue
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("process %s did not stop within %.0f s; killing it", process.pid, grace)
                _kill_group(process)
                process.wait()
        log.info("stopped")


class Kept:
    """A child process restarted when it dies: at once after a minute's life, else after a growing pause."""

    def __init__(self, name: str, start: Callable[[], subprocess.Popen[bytes]]) -> None:
        self.name, self._start = name, start
        self.process: subprocess.Popen[bytes] | None = None
        self.started, self.restarts = 0.0, 0
        self.restart_at: float | None = None

    def start(self) -> None:
        self.process, self.started, self.restart_at = self._start(), time.monotonic(), None

    def keep(self) -> None:
        """Called every poll: notice a death, and restart when its pause is over."""
        if self.process is None:
            return
        if self.restart_at is None and self.process.poll() is not None:
            self.restarts = 0 if time.monotonic() - self.started > 60 else self.restarts + 1
            delay = min(MAX_RESTART_DELAY_SECONDS, 0.5 * 2**self.restarts) if self.restarts else 0.0
            log.warning(
                "the %s exited with %s; starting a new one in %.1f s", self.name, self.process.returncode, delay
            )
            self.restart_at = time.monotonic() + delay
        if self.restart_at is not None and time.monotonic() >= self.restart_at:
            self.start()


def _kill_group(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group: a Celery worker's pool processes too
    except ProcessLookupError:
        pass
