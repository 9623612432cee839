"""SSE fan-out: hundreds of clients on one running job across two API processes on PostgreSQL.

    python bench/sse_fanout.py [--clients 500] [--rate 10] [--seconds 20]

Makes a throwaway PostgreSQL database on 127.0.0.1:5432 (as the tests do; dropped after), starts two API processes
(`ganforge api`, no worker) on it, and runs three rounds, each on a new queued job (no worker runs, so only the
bench writes to its log):

1. listen: --clients clients, half on each process, following the job from its head (the processes LISTEN for
   appends: the default);
2. one client per process: the same with 2 clients, the baseline of store reads;
3. polling: --clients clients with GANFORGE_SSE_LISTEN=false (both processes restarted): each feed reads every
   0.2 s, the baseline of latency.

In each round a writer appends --rate events a second for --seconds through the store (as a worker's writes are),
noting the time just before each commit; when every client has every event (or 10 s after the last append) the job
is cancelled and the streams end. The clients are raw asyncio streams in this one process (uvloop when installed),
so their own loop's delays count in the latency. Prints for each round the latency from just before an event's
commit to its receipt, p50/p99/max (ms) over every client and event, the share within 1 s, the events lost
(appended but not received, summed over clients: must be 0), the load average at the round's end (the machine may
be shared: compare rounds run under a like load), and each process's store reads
(`ganforge_event_store_reads_total`) and CPU seconds (its process group's user + system time), both from the first
append to the last delivery; then the ratios: reads with --clients clients over reads with one client per process
(about 1.0: reads do not follow the number of clients), and the polling round's p50 and p99 over the listen
round's. Takes about 1.5-3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from models.db import make_engine  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from models.store import JobStore  # noqa: E402
from models.store.base import append_event  # noqa: E402
from tests.service import (  # noqa: E402
    KEYS,
    REDIS_URL,
    TINY_SPEC,
    Service,
    create_postgres_database,
    drop_postgres_database,
    service_env,
)

KEY = "key-a"
CONNECTS_AT_ONCE = 50  # connections being opened at a time: a burst of 500 overflows nothing, but starves the loop
DRAIN_SECONDS = 10.0  # how long after the last append the round waits for every client to have every event


@dataclass
class Client:
    """One follower: (seq, receipt time) of each event it got."""

    got: list[tuple[int, float]] = field(default_factory=list)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    status: int = 0
    error: str = ""


async def follow(port: int, job_id: str, after: int, client: Client) -> None:
    """GET the job's SSE stream from `after` over a raw HTTP/1.1 connection and note each event's id on receipt.

    `subscribed` is set at the stream's first block (the retry field), which the server sends once the client is
    on the job's feed."""
    writer = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            (
                f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {KEY}\r\nAccept: text/event-stream\r\nLast-Event-ID: {after}\r\n\r\n"
            ).encode()
        )
        client.status = int((await reader.readline()).split()[1])
        chunked = False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            chunked |= name.strip().lower() == "transfer-encoding" and "chunked" in value.lower()
        buffer = b""
        while True:
            if chunked:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    break
                data = (await reader.readexactly(size + 2))[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    break
            now = time.time()
            buffer += data
            while b"\n\n" in buffer:  # the service's SSE separator is "\n" (api/events.py)
                block, buffer = buffer.split(b"\n\n", 1)
                for field_line in block.split(b"\n"):
                    if field_line.startswith(b"retry:"):
                        client.subscribed.set()
                    elif field_line.startswith(b"id:"):
                        client.got.append((int(field_line[3:]), now))
    except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
        client.error = f"{type(exc).__name__}: {exc}"
    finally:
        client.subscribed.set()
        if writer is not None:
            writer.close()


def cpu_seconds(api: Service) -> float:
    """CPU seconds (user + system) used so far by the API's processes (its process group: `ganforge api`, uvicorn)."""
    assert api.api is not None
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == api.api.pid:  # its process group (start_new_session: the group of the first)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def store_reads(api: Service) -> float:
    text = httpx.get(f"{api.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=60).text
    for line in text.splitlines():
        if line.startswith("ganforge_event_store_reads_total "):
            return float(line.split()[1])
    raise RuntimeError("ganforge_event_store_reads_total not in /metrics")


@dataclass
class Result:
    name: str
    clients: int
    waits: list[float]  # seconds, every client and event
    lost: int
    reads: list[float]  # per process
    cpu: list[float]  # CPU seconds per API process over the round's appends and deliveries
    load: float  # the 1-minute load average when the round ended


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_round(
    name: str, apis: list[Service], store: JobStore, per_api: int, rate: float, seconds: float
) -> Result:
    owner = KEYS[KEY]
    job, _created = await asyncio.to_thread(
        store.create_job, owner=owner, spec=JobSpec.model_validate(TINY_SPEC), idempotency_key=None
    )
    clients = [Client() for _ in range(per_api * len(apis))]
    gate = asyncio.Semaphore(CONNECTS_AT_ONCE)

    async def start(index: int, client: Client) -> None:
        async with gate:
            task = asyncio.create_task(follow(apis[index % len(apis)].port, job.id, job.last_event, client))
            tasks.append(task)
            await asyncio.wait_for(client.subscribed.wait(), 120)

    tasks: list[asyncio.Task[None]] = []
    await asyncio.gather(*(start(i, c) for i, c in enumerate(clients)))
    refused = [c.status or c.error for c in clients if c.status != 200 or c.error]
    if refused:
        raise RuntimeError(f"{len(refused)} clients were not served: {refused[:5]}")
    await asyncio.sleep(1.0)  # the feeds' first reads are done
    before = [await asyncio.to_thread(store_reads, api) for api in apis]
    cpu_before = [cpu_seconds(api) for api in apis]

    def append(index: int) -> tuple[int, float]:
        with store.session() as session, session.begin():
            sent = time.time()
            return append_event(session, job.id, "alert", {"kind": "bench", "index": index}), sent

    sent: dict[int, float] = {}
    count = round(rate * seconds)
    started = time.monotonic()
    for index in range(count):
        await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
        seq, at = await asyncio.to_thread(append, index)
        sent[seq] = at
    deadline = time.monotonic() + DRAIN_SECONDS
    last = max(sent)
    while time.monotonic() < deadline and not all(c.got and c.got[-1][0] >= last for c in clients):
        await asyncio.sleep(0.05)
    cpu = [cpu_seconds(api) - was for api, was in zip(apis, cpu_before, strict=True)]
    reads = [await asyncio.to_thread(store_reads, api) - was for api, was in zip(apis, before, strict=True)]
    await asyncio.to_thread(store.request_cancel, job_id=job.id, owner=owner)
    done, pending = await asyncio.wait(tasks, timeout=30)
    for task in pending:
        task.cancel()
    waits = sorted(at - sent[seq] for c in clients for seq, at in c.got if seq in sent)
    lost = sum(len(sent.keys() - {seq for seq, _ in c.got}) for c in clients)
    return Result(name, len(clients), waits, lost, reads, cpu, os.getloadavg()[0])


def start_apis(env: dict[str, str], data_dir: Path, count: int = 2) -> list[Service]:
    apis = []
    for index in range(count):
        folder = data_dir / f"api-{index}-{time.monotonic_ns()}"  # each process's log apart
        folder.mkdir()
        apis.append(Service(env=env, data_dir=folder))
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(Service.start_api, apis))
    return apis


def report(result: Result) -> str:
    waits = result.waits
    within = sum(w <= 1.0 for w in waits) / len(waits) if waits else 0.0
    ms = [percentile(waits, q) * 1000 for q in (0.5, 0.99)] + [waits[-1] * 1000] if waits else [0.0] * 3
    reads = ", ".join(f"{r:.0f}" for r in result.reads)
    cpu = ", ".join(f"{c:.1f}" for c in result.cpu)
    return (
        f"{result.name:<38} {result.clients:>7} {ms[0]:>7.0f} {ms[1]:>7.0f} {ms[2]:>7.0f} {within:>7.1%} "
        f"{result.lost:>5} {result.load:>5.1f}  {reads:<12} {cpu}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=500, help="clients in the listen and polling rounds (even)")
    parser.add_argument("--rate", type=float, default=10.0, help="events appended per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the writer appends, per round")
    args = parser.parse_args()
    per_api = max(1, args.clients // 2)
    data_dir = Path(tempfile.mkdtemp(prefix="ganforge-fanout-bench-"))
    database, url = create_postgres_database(migrated=True)
    # Every client is one owner's: the per-owner cap counts one process's streams.
    env = service_env(data_dir, url, REDIS_URL, GANFORGE_MAX_SSE_PER_OWNER=str(per_api + 10))
    engine = make_engine(url)
    store = JobStore(engine)
    apis: list[Service] = []
    results: list[Result] = []
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        apis = start_apis(env, data_dir)
        results.append(runner(run_round("listen (NOTIFY)", apis, store, per_api, args.rate, args.seconds)))
        results.append(runner(run_round("listen, 1 client per process", apis, store, 1, args.rate, args.seconds)))
        for api in apis:
            api.close()
        apis = start_apis({**env, "GANFORGE_SSE_LISTEN": "false"}, data_dir)
        polling = runner(
            run_round("polling (GANFORGE_SSE_LISTEN=false)", apis, store, per_api, args.rate, args.seconds)
        )
        results.append(polling)
    finally:
        for api in apis:
            api.close()
        engine.dispose()
        drop_postgres_database(database)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    count = round(args.rate * args.seconds)
    print(
        f"2 API processes on PostgreSQL, one job, {args.rate:g} events/s for {args.seconds:g} s ({count} events a "
        f"round); load average {load} on {os.cpu_count()} cores"
    )
    print(
        f"{'round':<38} {'clients':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'<= 1 s':>7} {'lost':>5} {'load':>5}  "
        "reads/process CPU s/process"
    )
    for result in results:
        print(report(result))
    listen, single, polling = results
    ratios = ", ".join(
        f"{many / one:.2f}" if one else "n/a" for many, one in zip(listen.reads, single.reads, strict=True)
    )
    print(f"store reads, {listen.clients} clients / 1 client per process: {ratios}")
    if listen.waits and polling.waits:
        p50 = statistics.median(polling.waits) / statistics.median(listen.waits)
        p99 = percentile(polling.waits, 0.99) / percentile(listen.waits, 0.99)
        print(f"latency, polling / listen: p50 x{p50:.1f}, p99 x{p99:.1f}")
    if any(result.lost for result in results):
        sys.exit(f"events lost: {[result.lost for result in results]}")


if __name__ == "__main__":
    main()
