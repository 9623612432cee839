"""Webhook delivery latency: from a job's state change (its event's time) to receipt at a local receiver.

    python bench/webhook_latency.py [--events 60] [--backend sqlite|postgres]

Starts a real API (`ganforge api`, no worker) on a fresh store of the backend, a threaded HTTP receiver on
127.0.0.1, and one webhook endpoint for job.status. Then, one event at a time (each waits for the previous one's
receipt, so no queue builds up), measures `receipt time - the payload's timestamp` (the job event's time, written
in the state change's transaction) for:
- API writes: jobs submitted and cancelled through the API (its own commits wake its sender at once);
- other process's writes: jobs created by this process on the store directly, as a worker's status changes are
  (the API's sender finds them by polling, every GANFORGE_WEBHOOK_POLL_SECONDS, 0.25 s by default);
- baseline: a bare httpx POST of a body of the same size to the same receiver (time before the POST to receipt).
Prints median and p95 (ms) for each and the ratio of each median to the baseline's. `--backend postgres` makes a
throwaway database on 127.0.0.1:5432 (as the tests do) and drops it after.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from models.db import make_engine  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from models.store import JobStore  # noqa: E402
from tests.service import (  # noqa: E402
    KEYS,
    TINY_SPEC,
    Service,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    migrated_sqlite,
    service_env,
)


class Receiver:
    """Records the receipt time (time.time()) and JSON body of every POST, by its webhook-id (or x-probe)."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[float, dict[str, Any]]] = {}
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                at = time.time()
                key = self.headers.get("webhook-id") or self.headers.get("x-probe") or ""
                with receiver.arrived:
                    receiver.seen[key] = (at, json.loads(body or b"{}"))
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, match: Any, timeout: float = 30) -> tuple[float, dict[str, Any]]:
        """The first receipt whose body `match(body)` is true (waits for it)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                for at, body in self.seen.values():
                    if match(body):
                        return at, body
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no matching webhook arrived")
                self.arrived.wait(left)


def event_latency(receiver: Receiver, job_id: str, to: str) -> float:
    """Seconds from the job's `to` status event to its receipt."""
    at, body = receiver.wait_for(
        lambda b: b.get("type") == "job.status" and b["data"]["job_id"] == job_id and b["data"]["to"] == to
    )
    return at - datetime.fromisoformat(body["timestamp"]).timestamp()


def figures(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=60, help="events measured per path (at least 50)")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    count = max(50, args.events)
    receiver = Receiver()
    data_dir = Path(tempfile.mkdtemp(prefix="ganforge-webhook-bench-"))
    database = None
    if args.backend == "postgres":
        database, url = create_postgres_database(migrated=True)
    else:
        url = migrated_sqlite(data_dir / "ganforge.db")
    env = service_env(data_dir, url, None, GANFORGE_WEBHOOK_ALLOWED_HOSTS="127.0.0.1")
    service = Service(env=env, data_dir=data_dir)
    owner = KEYS["key-a"]
    try:
        service.start_api()
        engine = make_engine(url)
        store = JobStore(engine)
        with service.client() as client:
            made = client.post("/v1/webhooks", json={"url": receiver.url, "events": ["job.status"]})
            made.raise_for_status()
            api_writes: list[float] = []
            while len(api_writes) < count:
                job = client.post("/v1/jobs", json=TINY_SPEC).json()
                api_writes.append(event_latency(receiver, job["id"], "queued"))
                client.post(f"/v1/jobs/{job['id']}/cancel")
                api_writes.append(event_latency(receiver, job["id"], "cancelled"))
            spec = JobSpec.model_validate(TINY_SPEC)
            other_writes = []
            for _ in range(count):
                job_record, _created = store.create_job(owner=owner, spec=spec, idempotency_key=None)
                other_writes.append(event_latency(receiver, job_record.id, "queued"))
                time.sleep(random.uniform(0.0, 0.3))  # out of step with the sender's poll
        body = json.dumps({"type": "job.status", "timestamp": "x" * 32, "data": {"job_id": "y" * 36}}).encode()
        baseline = []
        with httpx.Client(timeout=10) as bare:
            for index in range(count):
                probe = f"probe-{index}"
                started = time.time()
                bare.post(receiver.url, content=body, headers={"x-probe": probe, "content-type": "application/json"})
                baseline.append(receiver.seen[probe][0] - started)
        engine.dispose()
    finally:
        service.close()
        receiver.server.shutdown()
        if database:
            drop_postgres_database(database)
    base_median, base_p95 = figures(baseline)
    print(f"webhook latency, state change -> receipt ({args.backend}, {count} events a path)")
    print(f"{'path':<34} {'median ms':>10} {'p95 ms':>10} {'median / baseline':>18}")
    for name, samples in [
        ("bare httpx POST (baseline)", baseline),
        ("API writes (in-process wake)", api_writes),
        ("another process's writes (poll)", other_writes),
    ]:
        median, p95 = figures(samples)
        print(f"{name:<34} {median:>10.1f} {p95:>10.1f} {median / base_median:>17.1f}x")


if __name__ == "__main__":
    main()
