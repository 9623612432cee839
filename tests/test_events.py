"""Server-Sent Events against a real uvicorn and worker: streams end, never spin, and resume exactly."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from models.records import DB_INT_MAX
from tests.service import Service, wait_for

MAX_STORE_READS_PER_SECOND = 12.0  # one poller at 5 reads/s when idle, plus a read per batch the worker writes


def spec(steps: int, metrics: int = 10) -> dict[str, Any]:
    return {
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp", "hidden": 32, "depth": 2},
        "loss": {"name": "nsgan"},
        "training": {"steps": steps, "batch_size": 32},
        "every": {"metrics": metrics, "samples": max(50, steps // 200), "checkpoint": max(50, steps // 200)},
    }


@dataclass
class Stream:
    """What one SSE client received."""

    status: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    retry: int | None = None
    ended: bool = False

    @property
    def ids(self) -> list[int]:
        return [event["id"] for event in self.events]


def read_stream(
    client: httpx.Client, job_id: str, stop: threading.Event | None = None, headers: dict[str, str] | None = None
) -> Stream:
    """Read a job's stream to its end (or until `stop` is set); each event is {"id", "event", "data"}."""
    stream = Stream()
    current: dict[str, Any] = {}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        stream.status = response.status_code
        for line in response.iter_lines():
            if line.startswith("retry: "):
                stream.retry = int(line[7:])
            elif line.startswith("id: "):
                current = {"id": int(line[4:])}
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
                stream.events.append(current)
            if stop is not None and stop.is_set():
                return stream
        stream.ended = True
    return stream


def store_reads(service: Service) -> float:
    for line in httpx.get(f"{service.url}/metrics", headers={"Authorization": "Bearer key-a"}).text.splitlines():
        if line.startswith("ganforge_event_store_reads_total "):
            return float(line.split()[1])
    raise AssertionError("ganforge_event_store_reads_total not in /metrics")


@pytest.fixture(scope="module")
def finished(service: Service) -> tuple[str, Stream]:
    """A job that has succeeded, and its whole stream as a first follower read it."""
    with service.client() as client:
        job = client.post("/v1/jobs", json=spec(100)).json()
        wait_for(client, job["id"], ("succeeded",))
        return job["id"], read_stream(client, job["id"])


def test_a_follower_gets_every_event_once_in_order_and_the_stream_ends(finished: tuple[str, Stream]) -> None:
    _, stream = finished
    assert stream.status == 200 and stream.ended and stream.retry == 1000
    assert stream.ids == list(range(1, len(stream.ids) + 1))
    assert {"status", "metrics", "sample", "checkpoint"} <= {event["event"] for event in stream.events}
    assert stream.events[-1]["event"] == "status" and stream.events[-1]["data"]["to"] == "succeeded"


def test_a_finished_jobs_stream_answers_at_once(service: Service, finished: tuple[str, Stream]) -> None:
    job_id, whole = finished
    final = whole.ids[-1]
    with service.client() as client:
        # at or past the end: 204 No Content, which tells EventSource to stop reconnecting
        for position in (final, final + 1, 10**12, DB_INT_MAX):
            started = time.monotonic()
            response = client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(position)})
            assert response.status_code == 204 and response.content == b"", (position, response.text)
            assert time.monotonic() - started < 1.0
            assert client.get(f"/v1/jobs/{job_id}/events", params={"after": position}).status_code == 204
            print(
                f"Last-Event-ID {position} of a finished job (final id {final}): 204 in "
                f"{(time.monotonic() - started) * 1000:.0f} ms"
            )
        # behind the end: the missed events, then the end
        started = time.monotonic()
        resumed = read_stream(client, job_id, headers={"Last-Event-ID": str(final - 3)})
        assert time.monotonic() - started < 1.0
        assert resumed.status == 200 and resumed.ended and resumed.ids == [final - 2, final - 1, final]
        assert resumed.events == whole.events[-3:]
        middle = whole.ids[len(whole.ids) // 2]
        assert read_stream(client, job_id, headers={"Last-Event-ID": str(middle)}).events == whole.events[middle:]
    # nothing keeps reading the store for the finished job once its clients are answered
    before = store_reads(service)
    time.sleep(1.0)
    assert store_reads(service) == before


@pytest.mark.parametrize(
    "value",
    [b"\xb2", "²".encode(), "١٢".encode(), b"-1", b"+1", b"1e3", b"1.0", b"1 2", b"0x10", b"abc", b"", b"1_000"]
    + [str(v).encode() for v in (DB_INT_MAX + 1, 2**64, 10**20)],
)
def test_a_last_event_id_that_is_not_a_plain_integer_in_range_is_422(
    service: Service, finished: tuple[str, Stream], value: bytes
) -> None:
    job_id, _ = finished
    with service.client() as client:
        response = client.get(f"/v1/jobs/{job_id}/events", headers={b"Last-Event-ID": value})
        assert response.status_code == 422, response.text
        assert "header.last-event-id" in {detail["field"] for detail in response.json()["error"]["details"]}


def wait_until_training(client: httpx.Client, job_id: str, timeout: float = 60.0) -> None:
    """Until the job is running and has written progress, so events flow every metrics flush."""
    wait_for(client, job_id, ("running",))
    deadline = time.monotonic() + timeout
    while client.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] == 0:
        assert time.monotonic() < deadline, "the job wrote no progress"
        time.sleep(0.1)


def follow_in_thread(
    service: Service, job_id: str, stop: threading.Event, position: int | None = None
) -> tuple[threading.Thread, list[Stream]]:
    """A follower reading the job's stream in a thread (from `position` as its Last-Event-ID); its Stream lands
    in the list when the stream ends."""
    headers = {"Last-Event-ID": str(position)} if position is not None else None
    result: list[Stream] = []

    def run() -> None:
        with service.client() as client:
            result.append(read_stream(client, job_id, stop, headers))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_a_position_past_a_running_jobs_head_is_treated_as_the_head(service: Service) -> None:
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=spec(1_000_000)).json()["id"]
        wait_until_training(client, job_id)
        stop = threading.Event()
        # the reconnect of a client that saw more than this log holds (another deployment's ids, a typo) ...
        ahead, ahead_result = follow_in_thread(service, job_id, stop, 10**12)
        time.sleep(0.5)
        # ... and a normal follower of the same job, on the same per-job feed
        normal, normal_result = follow_in_thread(service, job_id, stop)
        time.sleep(1.5)
        before, started = store_reads(service), time.monotonic()
        time.sleep(3.0)
        rate = (store_reads(service) - before) / (time.monotonic() - started)
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        ahead.join(timeout=30)
        normal.join(timeout=30)
        stop.set()
    assert not ahead.is_alive() and not normal.is_alive(), "a stream did not end after the job's final status"
    (past,), (whole,) = ahead_result, normal_result
    assert whole.status == 200 and whole.ended and whole.ids == list(range(1, len(whole.ids) + 1))
    assert whole.events[-1]["data"]["to"] == "cancelled"
    # the past-the-head client got the events written after it connected: the tail of the whole log, then the end
    assert past.status == 200 and past.ended and len(past.ids) >= 3, past.ids
    assert past.events == whole.events[whole.ids.index(past.ids[0]) :]
    print(f"past-the-head follower + a normal one: {rate:.1f} store reads/s, {len(past.ids)} events delivered to it")
    assert rate <= MAX_STORE_READS_PER_SECOND, f"{rate:.1f} store reads/s: a follower spins"


def test_many_followers_joining_at_different_positions_share_one_poller(service: Service) -> None:
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=spec(1_000_000)).json()["id"]
        wait_until_training(client, job_id)
        time.sleep(1.0)  # some events to be behind
        stop = threading.Event()
        followers = [follow_in_thread(service, job_id, stop, position) for position in (None, 1, 2, 10**9, 0, 10**15)]
        time.sleep(1.5)
        before, started = store_reads(service), time.monotonic()
        time.sleep(2.0)
        rate = (store_reads(service) - before) / (time.monotonic() - started)
        client.post(f"/v1/jobs/{job_id}/cancel")
        for thread, _ in followers:
            thread.join(timeout=30)
        stop.set()
    streams = [result[0] for _, result in followers]
    assert all(stream.ended and stream.events[-1]["data"]["to"] == "cancelled" for stream in streams)
    whole = streams[0]
    assert whole.ids == list(range(1, len(whole.ids) + 1))
    for stream in streams[1:]:
        assert stream.events == whole.events[whole.ids.index(stream.ids[0]) :]
    assert streams[1].ids[0] == 2 and streams[2].ids[0] == 3
    print(f"six followers at positions 0, 1, 2, 1e9, 0, 1e15: {rate:.1f} store reads/s")
    assert rate <= MAX_STORE_READS_PER_SECOND, f"{rate:.1f} store reads/s with six followers"


def test_when_the_last_follower_disconnects_the_job_is_no_longer_polled(service: Service) -> None:
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=spec(1_000_000)).json()["id"]
        wait_until_training(client, job_id)
        stop = threading.Event()
        followers = [follow_in_thread(service, job_id, stop, position) for position in (None, 10**12)]
        time.sleep(1.5)
        stop.set()  # each client closes its connection at its next line
        for thread, result in followers:
            thread.join(timeout=10)
            assert result and result[0].status == 200 and not result[0].ended and result[0].events
        time.sleep(1.0)  # the server notices the disconnects; the poller stops at its next round
        before = store_reads(service)
        time.sleep(1.5)
        polled = store_reads(service) - before
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        wait_for(client, job_id, ("cancelled",))
    assert polled == 0, f"{polled} store reads for a job nobody follows"
