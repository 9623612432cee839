"""Metric ingest: points/s of the store's write path against a bare bulk load of the same rows, and a writer fleet.

    python bench/ingest.py [--points 400000] [--batch 8000] [--database postgres|sqlite|both]
                           [--fleet 50] [--fleet-seconds 10] [--rounds 2] [--steps-per-sec 200]
                           [--metrics-every 1]

1. One worker's writes: `JobStore.record_progress` (what the lease keeper calls every flush: the lease check,
   the metric chunks, the `metrics` events and the progress, one transaction) with batches of `--batch` points
   (8 series), against, in the same run, the same rows as one row per point (job_id, name, step, value; the
   layout before migration 0009, primary key included) loaded with a bare `COPY ... FROM STDIN` per batch on
   PostgreSQL, and a bare `executemany` INSERT per batch on SQLite. Prints points/s and the ratio.
2. The fleet (PostgreSQL): `--fleet` worker processes, each holding a claimed job, run a simulated training loop
   (a 1/steps-per-sec wait standing for the GPU, then 8 metric values recorded every `--metrics-every` steps
   (every step by default; the spec's default is 10) and a tick, as worker/sink.py does) behind a real
   LeaseKeeper (worker/lease.py, flush every second, each keeper's second at a random offset). The same
   processes alternate, in `--rounds` rounds of ABBA order, `--fleet-seconds` in all of each kind: "writing"
   (the keeper's `record_progress` commits to PostgreSQL) and "not writing" (the same keeper, buffer, thread
   and flush schedule; the store call is a no-op that drops the batch). Every process closes its keeper (its
   last commit done) before the next phase starts. Writing / not writing is the writes' cost on the step; the
   cost of that many processes sharing the machine's cores is in both.
   Per kind: step time (mean, p50, p99, the worst worker's p99), the store call's latency as the keepers see
   it (p50, p99: the commit, or the no-op), the flush thread's CPU per call, the points/s the store took, the
   steps that overlap their own keeper's store call against the others (a step that waits on its own write,
   through a lock or the GIL, shows there), the fleet's and the whole machine's busy cores (/proc/stat: the
   PostgreSQL server's work shows there when it runs on the same machine) and the load average. The same two
   phases with one process alone are printed too, as what they are: no core sharing.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migrations import upgrade  # noqa: E402
from models.db import make_engine  # noqa: E402
from models.quotas import Quotas  # noqa: E402
from models.records import JobStatus  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from models.store import JobStore, MetricPoint  # noqa: E402
from tests.service import create_postgres_database, drop_postgres_database  # noqa: E402

SPEC = JobSpec.model_validate(
    {"dataset": {"builtin": "ring8"}, "architecture": {"name": "mlp"}, "loss": {"name": "nsgan"}}
)
NAMES = ("loss_d", "loss_g", "grad_norm_d", "grad_norm_g", "d_real", "d_fake", "lr_d", "lr_g")
BARE_TABLE = """CREATE TABLE bare_metrics (job_id VARCHAR(36) NOT NULL, name VARCHAR(64) NOT NULL,
    step BIGINT NOT NULL, value DOUBLE PRECISION NOT NULL, PRIMARY KEY (job_id, name, step))"""
WRITING, NOT_WRITING = "writing", "not writing"
KINDS = (WRITING, NOT_WRITING)


def claimed_job(store: JobStore, worker: str) -> tuple[str, int]:
    job, _ = store.create_job(owner=f"bench-{worker}", spec=SPEC, idempotency_key=None)
    while True:
        claimed = store.claim_next(worker=worker, quotas_of=lambda _owner: Quotas())
        assert claimed is not None, "a queued job to claim"
        if claimed.id == job.id:
            return job.id, claimed.lease_token


def batches(points: int, batch: int) -> list[list[MetricPoint]]:
    rng = np.random.default_rng(0)
    steps_per_batch = batch // len(NAMES)
    out, step = [], 0
    while step * len(NAMES) < points:
        values = rng.standard_normal((steps_per_batch, len(NAMES))).tolist()
        out.append(
            [MetricPoint(name, step + i, row[j]) for i, row in enumerate(values) for j, name in enumerate(NAMES)]
        )
        step += steps_per_batch
    return out


def one_worker(url: str, points: int, batch: int) -> None:
    upgrade(url)
    store = JobStore(make_engine(url))
    job_id, token = claimed_job(store, "w")
    work = batches(points, batch)
    total = sum(len(b) for b in work)
    started = time.perf_counter()
    for chunk in work:
        status = store.record_progress(
            job_id=job_id, worker="w", token=token, step=chunk[-1].step, steps_per_sec=None, points=chunk
        )
        assert status == "running"
    ours = total / (time.perf_counter() - started)
    postgres = store.engine.dialect.name == "postgresql"
    with store.engine.begin() as connection:
        connection.execute(text(BARE_TABLE))
    started = time.perf_counter()
    for chunk in work:
        with store.engine.begin() as connection:
            if postgres:
                buffer = io.StringIO("".join(f"{job_id}\t{p.name}\t{p.step}\t{p.value!r}\n" for p in chunk))
                raw: Any = connection.connection.driver_connection
                with (
                    raw.cursor() as cursor,
                    cursor.copy("COPY bare_metrics (job_id, name, step, value) FROM STDIN") as copy,
                ):
                    copy.write(buffer.getvalue())
            else:
                rows = [(job_id, p.name, p.step, p.value) for p in chunk]
                connection.exec_driver_sql("INSERT INTO bare_metrics VALUES (?, ?, ?, ?)", rows)
    bare = total / (time.perf_counter() - started)
    baseline = "bare COPY" if postgres else "bare executemany"
    print(
        f"{store.engine.dialect.name:>10}: {total:,} points in batches of {batch:,} | write path {ours:>10,.0f} points/s"
        f" | {baseline} {bare:>10,.0f} points/s | ratio {ours / bare:5.2f}"
    )
    store.engine.dispose()


class FleetStore(JobStore):
    """The real store with each `record_progress` timed; with `write=False` that call is a no-op.

    The no-op drops the batch and answers `running` at once, so a keeper on it keeps the same buffer,
    thread, lock and flush schedule and only the store write is gone. Each call appends
    (began, ended, the calling thread's CPU seconds, points) to `calls` (perf_counter seconds).
    """

    def __init__(self, engine: Engine, *, write: bool) -> None:
        super().__init__(engine)
        self.write = write
        self.calls: list[tuple[float, float, float, int]] = []

    def record_progress(
        self,
        *,
        job_id: str,
        worker: str,
        token: int,
        step: int,
        steps_per_sec: float | None,
        points: Sequence[MetricPoint],
    ) -> str | None:
        began, cpu = time.perf_counter(), time.thread_time()
        try:
            if not self.write:
                return JobStatus.RUNNING
            return super().record_progress(
                job_id=job_id, worker=worker, token=token, step=step, steps_per_sec=steps_per_sec, points=points
            )
        finally:
            self.calls.append((began, time.perf_counter(), time.thread_time() - cpu, len(points)))


def sleep_until(wall: float) -> None:
    time.sleep(max(0.0, wall - time.time()))


def fleet_member(
    url: str,
    job_id: str,
    token: int,
    worker: str,
    kinds: list[str],
    length: float,
    steps_per_sec: float,
    metrics_every: int,
    barrier: Any,
    start_at: Any,
    out: multiprocessing.Queue[object],
) -> None:
    """One simulated worker: for each phase in `kinds`, a fresh LeaseKeeper on a writing or a no-op FleetStore
    behind the training loop for `length` seconds from `start_at` (set by the parent between two barrier waits);
    puts each phase's step start times, step durations, store calls (perf_counter seconds), the process's CPU
    seconds in the loop and how late the loop began on `out`."""
    from worker.lease import LeaseKeeper

    engine = make_engine(url)
    with engine.connect():
        pass  # imported and connected before the clock starts
    rng = np.random.default_rng(zlib.crc32(worker.encode()))
    period = 1.0 / steps_per_sec
    step, results = 0, []
    for kind in kinds:
        barrier.wait()  # every process closed its previous keeper (its last commit done) ...
        barrier.wait()  # ... and the parent set this phase's start
        begins = start_at.value
        store = FleetStore(engine, write=kind == WRITING)
        keeper = LeaseKeeper(
            store=store, job_id=job_id, worker=worker, token=token, flush_seconds=1.0, grace_seconds=60.0
        )
        # Started up to a second early: the fleet's flushes spread over the second as a real fleet's do.
        sleep_until(begins - float(rng.uniform(0.0, 1.0)))
        keeper.start()
        sleep_until(begins)
        late = time.time() - begins
        began_at, took = [], []
        stop = time.perf_counter() + (begins + length - time.time())
        cpu = time.process_time()
        while time.perf_counter() < stop:
            began = time.perf_counter()
            time.sleep(period)  # the GPU's share of a step: the host waits
            step += 1
            if step % metrics_every == 0:
                keeper.record(step, dict(zip(NAMES, rng.standard_normal(len(NAMES)).tolist(), strict=True)))
            keeper.tick()
            ended = time.perf_counter()
            began_at.append(began)
            took.append(ended - began)
        cpu = time.process_time() - cpu
        keeper.close()
        calls = np.array(store.calls).reshape(-1, 4)
        results.append((kind, np.array(began_at), np.array(took), calls, cpu, late))
    out.put((worker, results))
    engine.dispose()


def during_flush(began: np.ndarray, took: np.ndarray, calls: np.ndarray) -> np.ndarray:
    """Which steps overlap one of their own keeper's store calls (calls never overlap: the flush lock)."""
    if not len(calls):
        return np.zeros(len(began), dtype=bool)
    starts, ends = calls[:, 0], calls[:, 1]
    last = np.searchsorted(starts, began + took) - 1  # the last call that started before the step ended
    overlap: np.ndarray = (last >= 0) & (ends[np.maximum(last, 0)] > began)
    return overlap


def pct(values: list[np.ndarray] | np.ndarray, q: float) -> float:
    joined = np.concatenate(values) if isinstance(values, list) else values
    return float(np.percentile(joined, q)) if len(joined) else float("nan")


def busy_jiffies() -> tuple[int, int]:
    """(busy, all) CPU jiffies of the whole machine since boot, from /proc/stat; (0, 0) where there is none."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def fleet(
    url: str, size: int, seconds: float, rounds: int, steps_per_sec: float, metrics_every: int
) -> dict[str, dict[str, float]]:
    """Run `size` processes through `rounds` rounds of a writing and a no-op phase (ABBA order), each phase
    `seconds / rounds` long. Per kind: step ms (mean, p50, p99, the worst worker's p99; during and outside the
    step's own keeper's store call), store call ms (p50, p99), the flush thread's CPU ms per call (p50), the
    points/s the store took, the fleet's and the machine's busy cores, the latest loop start (s), load average."""
    store = JobStore(make_engine(url))
    jobs = [(f"fleet-{size}-{i}", *claimed_job(store, f"fleet-{size}-{i}")) for i in range(size)]
    store.engine.dispose()
    length = seconds / rounds
    kinds = [kind for r in range(rounds) for kind in (KINDS if r % 2 == 0 else KINDS[::-1])]
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[object] = context.Queue()
    barrier, start_at = context.Barrier(size + 1, timeout=600), context.Value("d", 0.0)
    args = (kinds, length, steps_per_sec, metrics_every, barrier, start_at, out)
    processes = [
        context.Process(target=fleet_member, args=(url, job_id, token, worker, *args)) for worker, job_id, token in jobs
    ]
    for process in processes:
        process.start()
    machine: dict[str, list[float]] = {kind: [] for kind in KINDS}
    loads: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for kind in kinds:
        barrier.wait()  # a loaded machine starts 50 processes slowly; a slow commit closes a keeper late
        start_at.value = time.time() + 1.5  # every keeper can start its second early
        barrier.wait()
        sleep_until(start_at.value)
        first, loads_before = busy_jiffies(), os.getloadavg()[0]
        sleep_until(start_at.value + length)
        last = busy_jiffies()
        machine[kind].append((last[0] - first[0]) / max(last[1] - first[1], 1) * (os.cpu_count() or 1))
        loads[kind] += [loads_before, os.getloadavg()[0]]
    results: list[Any] = [out.get(timeout=length + 600) for _ in processes]
    for process in processes:
        process.join()
    summary = {}
    for kind in KINDS:
        took, flushing, quiet, worst, latency, cpu, points, fleet_cpu, late = [], [], [], [], [], [], 0, 0.0, 0.0
        for _worker, member in results:
            mine = [r[1:] for r in member if r[0] == kind]
            durations = np.concatenate([t for _b, t, _c, _u, _l in mine]) * 1000
            overlap = np.concatenate([during_flush(b, t, c) for b, t, c, _u, _l in mine])
            calls = np.concatenate([c for _b, _t, c, _u, _l in mine])
            took.append(durations)
            flushing.append(durations[overlap])
            quiet.append(durations[~overlap])
            worst.append(pct(durations, 99))
            latency.append((calls[:, 1] - calls[:, 0]) * 1000)
            cpu.append(calls[:, 2] * 1000)
            points += int(calls[:, 3].sum())
            fleet_cpu += sum(u for _b, _t, _c, u, _l in mine)
            late = max([late, *(lag for _b, _t, _c, _u, lag in mine)])
        steps = sum(len(t) for t in took)
        summary[kind] = {
            "mean": float(np.concatenate(took).mean()),
            "p50": pct(took, 50),
            "p99": pct(took, 99),
            "worst_p99": max(worst),
            "during_share": sum(len(f) for f in flushing) / steps,
            "during_p50": pct(flushing, 50),
            "during_p99": pct(flushing, 99),
            "outside_p50": pct(quiet, 50),
            "outside_p99": pct(quiet, 99),
            "call_p50": pct(latency, 50),
            "call_p99": pct(latency, 99),
            "calls": sum(len(x) for x in latency),
            "cpu_p50": pct(cpu, 50),
            "points_per_sec": points / seconds,
            "fleet_cores": fleet_cpu / seconds,
            "machine_cores": float(np.mean(machine[kind])),
            "late": late,
            "load_min": min(loads[kind]),
            "load_max": max(loads[kind]),
        }
    return summary


def print_fleet(label: str, summary: dict[str, dict[str, float]]) -> None:
    for kind in KINDS:
        s = summary[kind]
        store = (
            f"commit p50 {s['call_p50']:.1f} ms p99 {s['call_p99']:.1f} ms ({s['calls']:.0f} commits, flush thread "
            f"CPU p50 {s['cpu_p50']:.1f} ms each), store took {s['points_per_sec']:,.0f} points/s"
            if kind == WRITING
            else f"no-op store call p50 {s['call_p50']:.3f} ms ({s['calls']:.0f} calls, batches dropped)"
        )
        print(
            f"{label:>10}: {kind:<11} | step mean {s['mean']:.2f} ms p50 {s['p50']:.2f} ms p99 {s['p99']:.2f} ms, "
            f"worst worker's p99 {s['worst_p99']:.2f} ms | {store}"
        )
        print(
            f"{'':>10}  {'':<11} | {100 * s['during_share']:.1f} % of steps overlap their own keeper's store call: "
            f"p50 {s['during_p50']:.2f} ms p99 {s['during_p99']:.2f} ms; the others p50 {s['outside_p50']:.2f} ms "
            f"p99 {s['outside_p99']:.2f} ms | CPU: the fleet {s['fleet_cores']:.2f} cores, the machine "
            f"{s['machine_cores']:.2f} of {os.cpu_count()} | load average {s['load_min']:.1f}-{s['load_max']:.1f}"
            f" | latest loop start {1000 * s['late']:.0f} ms late"
        )
    w, n = summary[WRITING], summary[NOT_WRITING]
    print(
        f"{label:>10}: writing / not writing: step mean {w['mean'] / n['mean']:.3f}, p50 {w['p50'] / n['p50']:.3f}, "
        f"p99 {w['p99'] / n['p99']:.2f}, worst worker's p99 {w['worst_p99'] / n['worst_p99']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=400_000)
    parser.add_argument("--batch", type=int, default=8000)
    parser.add_argument("--database", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--fleet", type=int, default=50, help="writer processes at once (0: skip the fleet)")
    parser.add_argument("--fleet-seconds", type=float, default=10.0, help="seconds per kind (writing, not writing)")
    parser.add_argument("--rounds", type=int, default=2, help="writing and not-writing phases of each, alternated")
    parser.add_argument("--steps-per-sec", type=float, default=200.0)
    parser.add_argument(
        "--metrics-every",
        type=int,
        default=1,
        help="steps between metric records (1: every step; the spec's default is 10)",
    )
    args = parser.parse_args()
    if args.database in ("postgres", "both"):
        name, url = create_postgres_database()
        try:
            one_worker(url, args.points, args.batch)
            if args.fleet:
                run = (args.fleet_seconds, args.rounds, args.steps_per_sec, args.metrics_every)
                solo = fleet(url, 1, *run)
                many = fleet(url, args.fleet, *run)
                print(
                    f"{'fleet':>10}: a {1000 / args.steps_per_sec:.1f} ms step, 8 metrics every {args.metrics_every}"
                    f" step(s), a keeper flushing every 1 s; {args.fleet_seconds:.0f} s per kind in {args.rounds}"
                    " rounds, writing and not writing alternated (the same processes and loop; not writing: the"
                    " store call is a no-op)"
                )
                print_fleet(f"{args.fleet} procs", many)
                print_fleet("alone", solo)
                w, n, alone = many[WRITING], many[NOT_WRITING], solo[NOT_WRITING]
                print(
                    f"{'answer':>10}: the writes' cost on the step with {args.fleet} writers (writing / not writing):"
                    f" mean {w['mean'] / n['mean']:.3f}, p50 {w['p50'] / n['p50']:.3f}, p99 {w['p99'] / n['p99']:.2f}"
                    f" | the shared cores' cost ({args.fleet} processes not writing / one alone not writing): mean"
                    f" {n['mean'] / alone['mean']:.3f}, p50 {n['p50'] / alone['p50']:.3f}, p99"
                    f" {n['p99'] / alone['p99']:.2f} | commit p50 {w['call_p50']:.1f} ms against"
                    f" {solo[WRITING]['call_p50']:.1f} ms alone"
                )
        finally:
            drop_postgres_database(name)
    if args.database in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            one_worker(f"sqlite:///{tmp}/bench.db", args.points, args.batch)


if __name__ == "__main__":
    main()
