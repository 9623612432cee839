"""`ganforge up | api | worker | migrate`.

    ganforge up --demo        # embedded default: migrate, API + one worker, submit a demo job

Settings come from GANFORGE_* environment variables (models/settings.py);
`--data-dir` sets GANFORGE_DATA_DIR for every process this command starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger("ganforge")

DEMO_SPEC = {
    "name": "demo-ring8-nsgan",
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp"},
    "loss": {"name": "nsgan"},
    "training": {"steps": 2000, "batch_size": 256},
    "every": {"metrics": 10, "samples": 250, "checkpoint": 500},
}


def api_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "api.app:app", "--host", host, "--port", str(port), "--no-access-log"]


def worker_command() -> list[str]:
    from models.settings import get_settings

    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "--loglevel",
        "INFO",
        "--pool",
        "prefork",
        "--concurrency",
        "1",
        "-Q",
        get_settings().queue,
        "-n",
        f"ganforge-{os.getpid()}@%h",
    ]


def migrate() -> None:
    from migrations import upgrade
    from models.settings import get_settings

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    log.info("schema is at the latest revision (%s)", settings.database_url.split("@")[-1])


def wait_ready(url: str, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return False


def submit_demo(url: str) -> None:
    request = urllib.request.Request(
        f"{url}/v1/jobs", data=json.dumps(DEMO_SPEC).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        job = json.load(response)
    print(
        f"\ndemo job {job['id']} submitted: follow it with\n"
        f"  curl {url}/v1/jobs/{job['id']}\n  curl -N {url}/v1/jobs/{job['id']}/events\n"
        f"  open {url}/v1/jobs/{job['id']}/samples/2000.png when it has succeeded\n",
        flush=True,
    )


def up(host: str, port: int, demo: bool) -> int:
    """Migrate, then run the API and one worker; a worker that dies is started again."""
    migrate()
    api = subprocess.Popen(api_command(host, port))
    worker = subprocess.Popen(worker_command())
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    if demo and wait_ready(url):
        submit_demo(url)
    try:
        while not stopping:
            if api.poll() is not None:
                log.error("the API exited with %s; stopping", api.returncode)
                break
            if worker.poll() is not None:
                log.warning("the worker exited with %s; starting a new one", worker.returncode)
                worker = subprocess.Popen(worker_command())
            time.sleep(0.5)
    finally:
        for process in (worker, api):
            if process.poll() is None:
                process.terminate()
        for process in (worker, api):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    return 0 if stopping else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ganforge", description="GAN training as a service")
    parser.add_argument("--data-dir", type=Path, help="GANFORGE_DATA_DIR for this command and what it starts")
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="embedded default: migrate, then API and one worker")
    api_parser = commands.add_parser("api", help="run the HTTP API (uvicorn)")
    for sub in (up_parser, api_parser):
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=8000)
    up_parser.add_argument("--demo", action="store_true", help="submit a small ring8 job once the API is ready")
    commands.add_parser("worker", help="run one Celery training worker")
    commands.add_parser("migrate", help="bring the job store's schema to the latest revision")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.data_dir is not None:
        os.environ["GANFORGE_DATA_DIR"] = str(args.data_dir.expanduser().resolve())
    if args.command == "migrate":
        migrate()
        return 0
    if args.command == "up":
        return up(args.host, args.port, args.demo)
    command = api_command(args.host, args.port) if args.command == "api" else worker_command()
    os.execv(command[0], command)
    return 0
