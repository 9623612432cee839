"""SSE fan-out across two API processes on one PostgreSQL: a commit that appends to a job's log is announced with
NOTIFY, each API process's one LISTEN connection wakes its feed for the job, and the feed reads once for all of
its clients (api/events.py, models/store/notify.py).

The events are appended straight through the store (as a worker's writes are), so their number and timing are
the test's. The safety poll is 5 s (api/events.py SAFETY_POLL_SECONDS): deliveries well under a second can only
come from the notifications.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest

from api.events import SAFETY_POLL_SECONDS
from models.db import make_engine
from models.spec import JobSpec
from models.store import JobStore, notify
from models.store.base import append_event
from models.store.notify import APPLICATION_NAME, CHANNEL, EventListener
from tests.service import (
    KEYS,
    REDIS_URL,
    TINY_SPEC,
    Service,
    create_postgres_database,
    drop_postgres_database,
    service_env,
)

CLIENTS = 40  # across both API processes
EVENTS = 20  # appended per measured round
WRITE_GAP_SECONDS = 0.1  # between appends: apart enough that a feed reads each alone, unless the machine stalls
OWNER = KEYS["key-a"]
READ_SLACK = 2  # reads a round may make besides those its appends caused: a safety poll, a wake-up that found nothing
# Reads with 20 clients a process over reads with 1, at most (a feed batches appends when a read is slow, more in one
# round than in another); a read per client would make it 20.
READ_RATIO_MAX = 1.25
# The target is every event within 1 s; a test on a shared 2-core machine holds 95% of them to it and
# every one to 2 s. Without the notifications the feeds would read at the 5 s safety poll: 3-5 s each.
LATENCY_LIMIT_SECONDS = 1.0
LATENCY_MAX_SECONDS = 2.0
LISTENER_UP = "ganforge_event_listener_up"


@dataclass
class Deployment:
    apis: tuple[Service, Service]
    store: JobStore
    database: str
    url: str


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Two API processes (no worker) with the same settings on one fresh PostgreSQL database, and its store."""
    folder = tmp_path_factory.mktemp("fanout")
    database, url = create_postgres_database(migrated=True)
    # The per-owner cap counts one process's streams: every client here is one owner's.
    env = service_env(folder, url, REDIS_URL, GANFORGE_MAX_SSE_PER_OWNER=str(CLIENTS))
    (folder / "second").mkdir()
    # The same settings and data dir; the second keeps its log apart.
    apis = (Service(env=env, data_dir=folder), Service(env=env, data_dir=folder / "second"))
    engine = make_engine(url)
    try:
        for api in apis:
            api.start_api()
        yield Deployment(apis, JobStore(engine), database, url)
    finally:
        for api in apis:
            api.close()
        engine.dispose()
        drop_postgres_database(database)


@dataclass
class Follower:
    """One SSE client: the ids it got, each event's receipt time (time.time()), whether its stream ended."""

    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    ids: list[int] = field(default_factory=list)
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    status: int = 0
    ended: bool = False


async def follow(client: httpx.AsyncClient, job_id: str, after: int, follower: Follower) -> None:
    """Read the job's stream from `after` to its end; `subscribed` is set at the retry field, which the server sends
    once the stream is on the job's feed."""
    headers = {"Last-Event-ID": str(after)}
    async with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        follower.status = response.status_code
        async for line in response.aiter_lines():
            if line.startswith("retry: "):
                follower.subscribed.set()
            elif line.startswith("id: "):
                follower.ids.append(int(line[4:]))
            elif line.startswith("data: "):
                follower.received.append((time.time(), json.loads(line[6:])))
        follower.ended = True
    follower.subscribed.set()  # a stream refused or ended at once: nothing to wait for


def store_reads(api: Service) -> float:
    return metric(api, "ganforge_event_store_reads_total")


def metric(api: Service, name: str) -> float:
    text = httpx.get(f"{api.url}/metrics", headers={"Authorization": "Bearer key-a"}, timeout=30).text
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def new_job(store: JobStore) -> tuple[str, int]:
    """A queued job (no worker runs here, so nothing else writes to its log) and the head of its log."""
    job, _created = store.create_job(owner=OWNER, spec=JobSpec.model_validate(TINY_SPEC), idempotency_key=None)
    return job.id, job.last_event


def append(store: JobStore, job_id: str, index: int) -> int:
    """Append one event stamped with the time just before its commit; its seq."""
    with store.session() as session, session.begin():
        return append_event(session, job_id, "alert", {"kind": "fanout-test", "index": index, "sent": time.time()})


@dataclass
class Round:
    followers: list[Follower]
    reads: list[float]  # per API process, while the events were appended and delivered
    seqs: list[int]  # of the appended events
    final: int  # the cancel's status event


async def measured_round(deployment: Deployment, per_api: int, events: int = EVENTS) -> Round:
    """`per_api` clients on each API process follow a new job; `events` are appended 10 a second and the job is
    cancelled; returns what each client got and each process's store reads from the first append to the last
    delivery (its clients subscribed and their feeds' first reads done before)."""
    store = deployment.store
    job_id, head = await asyncio.to_thread(new_job, store)
    limits = httpx.Limits(max_connections=per_api + 4)
    clients = [
        httpx.AsyncClient(base_url=api.url, headers={"Authorization": "Bearer key-a"}, timeout=60, limits=limits)
        for api in deployment.apis
    ]
    followers = [Follower() for _ in range(per_api * len(clients))]
    tasks = [
        asyncio.create_task(follow(clients[i % len(clients)], job_id, head, follower))
        for i, follower in enumerate(followers)
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(f.subscribed.wait() for f in followers)), 60)
        assert all(f.status == 200 and not f.ended for f in followers), [f.status for f in followers]
        await asyncio.sleep(0.5)  # each feed's first read (at the head: nothing) is done
        before = [await asyncio.to_thread(store_reads, api) for api in deployment.apis]
        seqs = []
        for index in range(events):
            seqs.append(await asyncio.to_thread(append, store, job_id, index))
            await asyncio.sleep(WRITE_GAP_SECONDS)
        deadline = time.monotonic() + 2 * SAFETY_POLL_SECONDS
        while any(len(f.ids) < events for f in followers) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        reads = [
            await asyncio.to_thread(store_reads, api) - was for api, was in zip(deployment.apis, before, strict=True)
        ]
        cancelled = await asyncio.to_thread(store.request_cancel, job_id=job_id, owner=OWNER)
        assert cancelled is not None
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        return Round(followers, reads, seqs, cancelled.last_event)
    finally:
        for task in tasks:
            task.cancel()
        for client in clients:
            await client.aclose()


def latencies(followers: list[Follower]) -> list[float]:
    """Seconds from just before each appended event's commit to its receipt, for every client and event."""
    return [at - data["sent"] for f in followers for at, data in f.received if "sent" in data]


def test_every_client_on_both_processes_gets_every_event_in_order_and_reads_do_not_grow_with_clients(
    deployment: Deployment,
) -> None:
    few = asyncio.run(measured_round(deployment, per_api=1))
    many = asyncio.run(measured_round(deployment, per_api=CLIENTS // 2))
    for result in (few, many):
        assert result.seqs == list(range(result.seqs[0], result.seqs[0] + EVENTS))
        for follower in result.followers:
            assert follower.ended, "a stream did not end after the job's final status"
            assert follower.ids == [*result.seqs, result.final]
            assert follower.received[-1][1]["to"] == "cancelled"
    waits = sorted(latencies(many.followers))
    assert len(waits) == CLIENTS * EVENTS
    print(
        f"{CLIENTS} clients on 2 API processes, {EVENTS} events at 10/s: commit -> receipt median "
        f"{statistics.median(waits) * 1000:.0f} ms, p95 {waits[int(0.95 * len(waits))] * 1000:.0f} ms, max "
        f"{waits[-1] * 1000:.0f} ms; store reads per process "
        f"{many.reads} against {few.reads} with 1 client each"
    )
    p95 = waits[int(0.95 * len(waits))]
    assert p95 < LATENCY_LIMIT_SECONDS, f"95th percentile {p95:.2f} s: the feeds were not woken by the appends"
    assert waits[-1] < LATENCY_MAX_SECONDS, f"an event took {waits[-1]:.2f} s to reach its client"
    for few_reads, many_reads in zip(few.reads, many.reads, strict=True):
        assert 1 <= many_reads <= EVENTS + READ_SLACK, many.reads
        assert many_reads <= few_reads * READ_RATIO_MAX + READ_SLACK, (many.reads, few.reads)


def listener_pids(url: str) -> set[int]:
    """The backends of the API processes' LISTEN connections on `url`'s database."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
            (APPLICATION_NAME,),
        ).fetchall()
    return {int(pid) for (pid,) in rows}


def test_a_lost_listener_is_replaced_and_followers_miss_nothing_meanwhile(deployment: Deployment) -> None:
    before = listener_pids(deployment.url)
    assert len(before) == 2, before  # one per API process

    async def scenario() -> tuple[list[Follower], list[int], int, set[int], list[float]]:
        store = deployment.store
        job_id, head = await asyncio.to_thread(new_job, store)
        clients = [
            httpx.AsyncClient(base_url=api.url, headers={"Authorization": "Bearer key-a"}, timeout=60)
            for api in deployment.apis
        ]
        followers = [Follower(), Follower()]
        tasks = [asyncio.create_task(follow(c, job_id, head, f)) for c, f in zip(clients, followers, strict=True)]
        try:
            await asyncio.wait_for(asyncio.gather(*(f.subscribed.wait() for f in followers)), 60)
            admin = deployment.url.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(admin, autocommit=True) as connection:
                connection.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s AND datname = current_database()",
                    (APPLICATION_NAME,),
                )
            # Appended while the listeners are down or reconnecting: the feeds poll meanwhile.
            seqs = [await asyncio.to_thread(append, store, job_id, index) for index in range(5)]
            deadline = time.monotonic() + 30
            while len(after := listener_pids(deployment.url)) < 2 or after & before:
                assert time.monotonic() < deadline, f"the listeners did not come back: {after} (were {before})"
                await asyncio.sleep(0.1)
            while not all(await asyncio.to_thread(lambda: [metric(api, LISTENER_UP) for api in deployment.apis])):
                assert time.monotonic() < deadline, "a process does not say its listener is up"
                await asyncio.sleep(0.1)
            received_before = [len(f.received) for f in followers]
            for index in range(5, 10):  # the new listeners wake the feeds: well under the 5 s safety poll
                seqs.append(await asyncio.to_thread(append, store, job_id, index))
                await asyncio.sleep(0.2)
            cancelled = await asyncio.to_thread(store.request_cancel, job_id=job_id, owner=OWNER)
            assert cancelled is not None
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
            late = [
                at - data["sent"]
                for f, n in zip(followers, received_before, strict=True)
                for at, data in f.received[n:]
                if "sent" in data
            ]
            return followers, seqs, cancelled.last_event, after, late
        finally:
            for task in tasks:
                task.cancel()
            for client in clients:
                await client.aclose()

    followers, seqs, final, after, late = asyncio.run(scenario())
    for follower in followers:
        assert follower.ended and follower.ids == [*seqs, final]
    assert len(late) == 2 * 5
    print(f"listeners {sorted(before)} terminated, replaced by {sorted(after)}; after: max {max(late) * 1000:.0f} ms")
    assert max(late) < LATENCY_MAX_SECONDS and statistics.median(late) < LATENCY_LIMIT_SECONDS, late


def test_a_notification_is_sent_at_commit_only(deployment: Deployment) -> None:
    """NOTIFY in the appending transaction: heard after its commit, never for a rollback."""
    store = deployment.store
    job_id, head = new_job(store)
    plain = deployment.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        with store.session() as session:
            with session.begin():
                seq = append_event(session, job_id, "alert", {"kind": "fanout-test"})
                assert list(listener.notifies(timeout=0.3)) == [], "heard before the commit"
            heard = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
            assert heard == [f"{job_id}:{seq}"] and seq == head + 1
            transaction = session.begin()
            append_event(session, job_id, "alert", {"kind": "fanout-test"})
            transaction.rollback()
        assert list(listener.notifies(timeout=0.5)) == [], "heard for a rolled-back append"


def test_the_listener_hears_its_own_probes_and_stays_up(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection check (a NOTIFY to itself, heard back) passes on a plain connection: no reconnects."""
    monkeypatch.setattr(notify, "CHECK_SECONDS", 0.1)
    probes: list[str] = []
    probe = EventListener._probe

    async def counted(self: EventListener, connection: Any, token: str) -> None:
        await probe(self, connection, token)
        probes.append(token)

    monkeypatch.setattr(EventListener, "_probe", counted)
    changes: list[bool] = []
    heard: list[tuple[str, int]] = []

    async def scenario() -> tuple[str, int]:
        listener = EventListener(deployment.store.engine, lambda job, seq: heard.append((job, seq)), changes.append)
        listener.start()
        try:
            deadline = time.monotonic() + 10
            while not listener.live:
                assert time.monotonic() < deadline, "the listener did not come up"
                await asyncio.sleep(0.02)
            await asyncio.sleep(1.0)
            job_id, _head = await asyncio.to_thread(new_job, deployment.store)
            seq = await asyncio.to_thread(append, deployment.store, job_id, 0)
            while (job_id, seq) not in heard:
                assert time.monotonic() < deadline, "the append was not heard"
                await asyncio.sleep(0.02)
            return job_id, seq
        finally:
            await listener.stop()

    job_id, seq = asyncio.run(scenario())
    assert len(probes) >= 5, probes
    assert changes == [True, False], changes  # up once, down only when stopped
    assert (job_id, seq - 1) in heard  # the job's `submitted` event, appended by create_job
