"""The Python SDK (`ganforge.client`) against the real service on both backends, sync and async.

One tiny job per backend is submitted once and followed live through a TCP proxy that is cut every 0.3 s (every
event must still arrive exactly once and in order); the README flow then reads that job through `Client`, and a
second tiny job goes through `AsyncClient` end to end. Retries are shown against a small local HTTP server that
answers 503 / 429 on cue.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from ganforge.client import (
    AsyncClient,
    Client,
    Conflict,
    ConnectionFailed,
    Event,
    Metrics,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    UnexpectedResponse,
    ValidationFailed,
)
from models.spec import JobSpec
from tests.conftest import api_only
from tests.drain import job_store
from tests.service import KEYS, TINY_SPEC, Service, free_port
from tests.tcp_proxy import TcpProxy

KEY = "key-a"
PNG = b"\x89PNG\r\n\x1a\n"
NPY = b"\x93NUMPY"


def tiny_spec(steps: int = 200, **extra: Any) -> dict[str, Any]:
    """ring8, a small MLP, a sample and a checkpoint every 100 steps: a few seconds of CPU."""
    return {
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp", "hidden": 32, "depth": 2},
        "loss": {"name": "nsgan"},
        "training": {"steps": steps, "batch_size": 64},
        "every": {"metrics": 10, "samples": steps // 2, "checkpoint": steps // 2},
        **extra,
    }


@dataclass
class Followed:
    """What one follower of the live job received, and when."""

    events: list[Event] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    error: BaseException | None = None

    def add(self, event: Event) -> None:
        self.events.append(event)
        self.times.append(time.monotonic())


@dataclass
class Live:
    job_id: str
    sync: Followed
    aio: Followed
    cuts: list[float]


@pytest.fixture(scope="module")
def live(service: Service) -> Iterator[Live]:
    """The shared job: submitted, then followed from its start to its end by a sync and an async client, both
    through a proxy that breaks every open connection every 0.1 s (and briefly refuses new ones). A connection cut
    before it brought an event counts toward `retries`, and the job may sit queued for a while: hence 200."""
    proxy = TcpProxy(service.port)
    proxy.start()
    url = f"http://127.0.0.1:{proxy.port}"
    with Client(service.url, KEY) as client:
        job = client.submit(tiny_spec(tags={"suite": "sdk"}))
    sync, aio = Followed(), Followed()

    def follow_sync() -> None:
        try:
            with Client(url, KEY, retries=200, backoff=0.05) as client:
                for event in client.follow(job.id):
                    sync.add(event)
        except BaseException as exc:
            sync.error = exc

    async def follow_async() -> None:
        try:
            async with AsyncClient(url, KEY, retries=200, backoff=0.05) as client:
                async for event in client.follow(job.id):
                    aio.add(event)
        except BaseException as exc:
            aio.error = exc

    threads = [threading.Thread(target=follow_sync), threading.Thread(target=lambda: asyncio.run(follow_async()))]
    for thread in threads:
        thread.start()
    cuts: list[float] = []
    deadline = time.monotonic() + 120
    while any(thread.is_alive() for thread in threads) and time.monotonic() < deadline:
        # Every 0.1 s: on an idle machine the job's events flow for well under a second.
        time.sleep(0.1)
        proxy.cut()
        cuts.append(time.monotonic())
        time.sleep(0.02)
        proxy.start()
    proxy.cut()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads), service.logs()
    yield Live(job.id, sync, aio, cuts)


def test_follow_across_cut_connections_yields_every_event_once_in_order(service: Service, live: Live) -> None:
    with Client(service.url, KEY) as client:
        log = list(client.follow(live.job_id))  # the whole log, replayed after the end
    ids = [event.id for event in log]
    assert ids == list(range(1, len(log) + 1)) and log[-1].final
    assert [e.type for e in log].count("sample") == 2 and [e.type for e in log].count("checkpoint") == 2
    for name, followed in (("sync", live.sync), ("async", live.aio)):
        assert followed.error is None, f"{name}: {followed.error!r}"
        assert [(e.id, e.type, e.data) for e in followed.events] == [(e.id, e.type, e.data) for e in log], name
        first, last = followed.times[0], followed.times[-1]
        cut_mid_stream = [t for t in live.cuts if first < t < last]
        assert len(cut_mid_stream) >= 2, f"{name}: the stream was not cut while events flowed ({live.cuts})"
    # A follower that starts after event 3 gets the rest; past the end of a finished job's log: nothing.
    with Client(service.url, KEY) as client:
        assert [e.id for e in client.follow(live.job_id, after=3)] == ids[3:]
        assert list(client.events(live.job_id, after=ids[-1])) == []


def test_follow_of_a_finished_job_replays_events_written_after_its_final_status(service: Service) -> None:
    # An integration (the MLflow mirror) has its last word after the final status: a new user's `ganforge events`
    # stopped at the status and never showed it.
    store = job_store(service)
    job, _ = store.create_job(owner=KEYS[KEY], spec=JobSpec.model_validate(TINY_SPEC), idempotency_key=None)
    store.request_cancel(job_id=job.id, owner=KEYS[KEY])
    after = store.add_integration_event(job_id=job.id, data={"integration": "mlflow", "problem": "late"})
    with Client(service.url, KEY) as client:
        log = list(client.follow(job.id))
    assert [e.type for e in log][-2:] == ["status", "integration"] and log[-2].final and log[-1].id == after

    async def follow_async() -> list[int]:
        async with AsyncClient(service.url, KEY) as client:
            return [event.id async for event in client.follow(job.id)]

    assert asyncio.run(follow_async()) == [e.id for e in log]


def test_readme_flow_sync(service: Service, live: Live, tmp_path: Path) -> None:
    with Client(service.url, KEY) as client:
        job = client.wait(live.job_id, timeout=60)
        assert (job.status, job.finished, job.progress.step, job.progress.total_steps) == ("succeeded", True, 200, 200)
        assert job.tags == {"suite": "sdk"} and job.spec["loss"]["name"] == "nsgan"
        assert job.created_at.tzinfo is not None and {"loss_d", "loss_g"} <= set(job.latest_metrics)

        metrics = client.metrics(job.id, ["loss_d", "loss_g"])
        assert set(metrics.series) == {"loss_d", "loss_g"}
        loss_d = metrics["loss_d"]
        assert loss_d.steps == list(range(10, 201, 10)) and len(loss_d.values) == 20 and not loss_d.downsampled
        assert client.metrics(job.id, "loss_d", since_step=150).series["loss_d"].steps == [150, 160, 170, 180, 190, 200]
        assert client.metrics(job.id, max_points=4)["loss_g"].downsampled
        long = metrics.to_pandas()
        assert list(long.columns) == ["series", "step", "value"] and len(long) == 40
        assert long[long.series == "loss_d"].value.tolist() == loss_d.values
        wide = metrics.to_pandas(wide=True)
        assert list(wide.columns) == ["loss_d", "loss_g"] and wide.index.tolist() == loss_d.steps
        assert wide["loss_g"].tolist() == metrics["loss_g"].values

        samples = client.samples(job.id)
        assert [s.step for s in samples] == [100, 200] and samples[0].evaluation is not None
        assert client.sample_png(job.id, 100).startswith(PNG)
        raw = client.sample_npy(job.id, samples[-1].step)
        assert raw.startswith(NPY) and np.load(io.BytesIO(raw)).shape == (samples[-1].count, 2)
        assert client.sample_npy(job.id) == raw  # "latest"

        checkpoints = client.checkpoints(job.id)
        assert [c.step for c in checkpoints] == [100, 200]
        calls: list[tuple[int, int | None]] = []
        path = client.download_checkpoint(
            job.id, path=tmp_path, progress=lambda done, total: calls.append((done, total))
        )
        assert path == tmp_path / f"{job.id}-200.safetensors" and path.stat().st_size == checkpoints[-1].size_bytes
        assert calls and calls[-1] == (checkpoints[-1].size_bytes, checkpoints[-1].size_bytes)
        assert [done for done, _ in calls] == sorted(done for done, _ in calls)
        (tmp_path / "sub").mkdir()
        named = client.download_checkpoint(job.id, 100, tmp_path / "sub" / "g100.safetensors")
        assert named.read_bytes()[8:9] == b"{"  # safetensors: an 8-byte header length, then its JSON header
        assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["sub", "g100.safetensors", path.name])

        catalog = client.catalog()
        assert "nsgan" in json.dumps(catalog) and "mlp" in json.dumps(catalog)


def test_validate_names_the_field_and_takes_every_spec_form(service: Service, tmp_path: Path) -> None:
    spec = tiny_spec()
    with Client(service.url, KEY) as client:
        filled = client.validate(spec)
        assert filled["loss"]["name"] == "nsgan" and "lr_d" in filled["loss"] and filled["training"]["steps"] == 200
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        assert client.validate(str(tmp_path / "spec.yaml")) == filled
        assert client.validate(tmp_path / "spec.json") == filled
        assert client.validate(JobSpec.model_validate(spec)) == filled
        with pytest.raises(ValidationFailed) as refused:
            client.validate({**spec, "loss": {"name": "wgan-gq"}})
        assert refused.value.status == 422 and "loss.name" in [f.field for f in refused.value.fields]
        assert "loss.name" in str(refused.value)
        with pytest.raises(ValidationFailed) as bad_number:
            client.submit({**spec, "training": {"steps": -5}})
        assert [f.field for f in bad_number.value.fields] == ["training.steps"]
        with pytest.raises(ValueError, match="ends in .yaml, .yml or .json"):
            client.validate(str(tmp_path / "spec.txt"))


def test_not_found_leaves_no_file(service: Service, live: Live, tmp_path: Path) -> None:
    with Client(service.url, KEY) as client:
        for call in (
            lambda: client.get("no-such-job"),
            lambda: client.metrics("no-such-job"),
            lambda: client.sample_png(live.job_id, 7),
            lambda: client.download_checkpoint("no-such-job", path=tmp_path / "x.safetensors"),
            lambda: client.download_checkpoint(live.job_id, 123, path=tmp_path),
            lambda: client.datasets.get("no-such-data-set"),
        ):
            with pytest.raises(NotFound) as missing:
                call()
            assert missing.value.status == 404 and missing.value.code == "not_found"
        assert list(tmp_path.iterdir()) == []
        # A folder that does not exist is a typo to report, not one to create.
        with pytest.raises(FileNotFoundError, match="no such directory"):
            client.download_checkpoint(live.job_id, path=tmp_path / "typo" / "g.safetensors")
        assert list(tmp_path.iterdir()) == []
        # The file gets the mode of any new file under the umask, not mkstemp's 0600.
        previous = os.umask(0o022)
        try:
            written = client.download_checkpoint(live.job_id, path=tmp_path / "g.safetensors")
        finally:
            os.umask(previous)
        assert written.stat().st_mode & 0o777 == 0o644


def test_datasets_idempotency_conflicts_cancel_and_list(service: Service, live: Live, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "blobs.npz", x=rng.normal(size=(600, 2)).astype(np.float32))
    with Client(service.url, KEY) as client:
        sent: list[tuple[int, int | None]] = []
        dataset = client.datasets.upload(
            tmp_path / "blobs.npz", "blobs", progress=lambda done, total: sent.append((done, total))
        )
        size = (tmp_path / "blobs.npz").stat().st_size
        assert (dataset.name, dataset.format, dataset.info["kind"]) == ("blobs", "npz", "points")
        assert sent[-1] == (size, size)
        assert client.datasets.upload(tmp_path / "blobs.npz").id == dataset.id  # same content, same data set
        assert client.datasets.get(dataset.id).content_hash == dataset.content_hash
        assert dataset.id in [d.id for d in client.datasets.list(limit=1)]
        assert client.datasets.preview_png(dataset.id).startswith(PNG)
        with pytest.raises(ValidationFailed) as bad_resize:
            client.datasets.upload(tmp_path / "blobs.npz", resize=3)
        assert [f.field for f in bad_resize.value.fields] == ["resize"]

        # Long enough that it is still queued or running when the deletes below arrive.
        spec = tiny_spec(5000, dataset={"id": dataset.id})
        uses = client.submit(spec, idempotency_key="sdk-uses-blobs")
        assert client.submit(spec, idempotency_key="sdk-uses-blobs").id == uses.id  # a retry: the same job
        with pytest.raises(Conflict) as reused:
            client.submit({**spec, "name": "other"}, idempotency_key="sdk-uses-blobs")
        assert reused.value.code == "idempotency_conflict"
        with pytest.raises(Conflict) as in_use:
            client.datasets.delete(dataset.id)
        assert in_use.value.code == "dataset_in_use" and uses.id in in_use.value.message

        with pytest.raises(TimeoutError):
            client.wait(uses.id, timeout=0.3)
        assert client.cancel(uses.id).status in ("cancelling", "cancelled")
        assert client.wait(uses.id, timeout=60).status == "cancelled"
        assert client.cancel(uses.id).status == "cancelled"  # cancelling a cancelled job returns it
        with pytest.raises(Conflict) as finished:
            client.cancel(live.job_id)
        assert finished.value.code == "already_finished"
        client.datasets.delete(dataset.id)
        with pytest.raises(NotFound):
            client.datasets.get(dataset.id)

        # More jobs than one page: the iterator follows next_cursor, newest first.
        everyone = list(client.list(limit=1))
        assert len(everyone) >= 2 and len({j.id for j in everyone}) == len(everyone)
        assert [j.created_at for j in everyone] == sorted((j.created_at for j in everyone), reverse=True)
        assert uses.id in [j.id for j in client.list(status="cancelled", limit=1)]
        assert all(j.status == "succeeded" for j in client.list(status="succeeded", limit=1))
        assert [j.id for j in client.list(tag="suite:sdk")] == [live.job_id]


def test_readme_flow_async(service: Service, tmp_path: Path) -> None:
    async def flow() -> None:
        async with AsyncClient(service.url, KEY) as client:
            filled = await client.validate(tiny_spec(100))
            assert filled["training"]["steps"] == 100
            job = await client.submit(tiny_spec(100))
            assert job.status == "queued" and not job.finished
            events = [event async for event in client.follow(job.id)]
            assert [e.id for e in events] == list(range(1, len(events) + 1)) and events[-1].final
            assert events[-1].data["to"] == "succeeded"
            done = await client.wait(job.id, timeout=30)
            assert done.status == "succeeded" and (await client.get(job.id)).progress.step == 100
            assert job.id in [j.id async for j in client.list(status="succeeded", limit=1)]
            metrics = await client.metrics(job.id, ["loss_g"])
            assert isinstance(metrics, Metrics) and metrics["loss_g"].steps[-1] == 100
            samples = await client.samples(job.id)
            assert [s.step for s in samples] == [50, 100]
            assert (await client.sample_png(job.id, 50)).startswith(PNG)
            assert (await client.sample_npy(job.id, "latest")).startswith(NPY)
            calls: list[tuple[int, int | None]] = []
            path = await client.download_checkpoint(
                job.id, path=tmp_path / "g.safetensors", progress=lambda d, t: calls.append((d, t))
            )
            assert path.stat().st_size == (await client.checkpoints(job.id))[-1].size_bytes == calls[-1][0]
            with pytest.raises(NotFound):
                await client.download_checkpoint(job.id, 999, path=tmp_path / "none.safetensors")
            assert not (tmp_path / "none.safetensors").exists()
            with pytest.raises(ValidationFailed) as refused:
                await client.submit({**tiny_spec(), "loss": {"name": "nsgann"}})
            assert "loss.name" in [f.field for f in refused.value.fields]
            np.savez(tmp_path / "rows.npz", x=np.random.default_rng(1).normal(size=(300, 2)))
            dataset = await client.datasets.upload(tmp_path / "rows.npz", name="rows")
            assert dataset.id in [d.id async for d in client.datasets.list()]
            await client.datasets.delete(dataset.id)
            with pytest.raises(NotFound):
                await client.datasets.get(dataset.id)

    asyncio.run(flow())


def test_a_wrong_or_missing_key_is_unauthorized(tmp_path: Path) -> None:
    with api_only("embedded", tmp_path, GANFORGE_API_KEYS="k1=team-a") as deployment:
        for key in ("wrong", ""):
            with Client(deployment.url, key) as client, pytest.raises(Unauthorized) as refused:
                list(client.list())
            assert refused.value.status == 401 and refused.value.code == "unauthorized"
        with Client(deployment.url, "k1") as client:
            assert list(client.list()) == []

        async def wrong() -> None:
            async with AsyncClient(deployment.url, "wrong") as client:
                with pytest.raises(Unauthorized):
                    await client.catalog()

        asyncio.run(wrong())


# ---------------------------------------------------------------------------------------------------- retries


class Scripted(ThreadingHTTPServer):
    """A local HTTP server that answers each path from a script of (status, headers, body), then 200 {}."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.scripts: dict[str, list[tuple[int, dict[str, str], Any]]] = {}
        self.seen: list[tuple[str, str, float, dict[str, str]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _, _ in self.seen if (m, p) == (method, path))


class Handler(BaseHTTPRequestHandler):
    server: Scripted

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        path = self.path.split("?")[0]
        self.server.seen.append((self.command, path, time.monotonic(), dict(self.headers)))
        script = self.server.scripts.get(f"{self.command} {path}", [])
        status, headers, body = script.pop(0) if script else (200, {}, {})
        data = body if isinstance(body, bytes) else json.dumps(body).encode()  # bytes: sent as they are
        self.send_response(status)
        for name, value in {"content-type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def error(code: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": code, "details": []}}


JOB = {
    "id": "j1",
    "name": "",
    "status": "queued",
    "owner": "anonymous",
    "spec": {},
    "tags": {},
    "progress": {"step": 0, "total_steps": 10, "steps_per_sec": None, "eta_seconds": None},
    "latest_metrics": {},
    "attempt": 1,
    "max_attempts": 3,
    "error": None,
    "created_at": "2026-01-01T00:00:00Z",
    "a_field_from_a_newer_api": 1,
}


def test_safe_requests_are_retried_on_503_and_429_with_retry_after(scripted: Scripted) -> None:
    scripted.scripts["GET /v1/jobs/j1"] = [(503, {}, error("unavailable")), (200, {}, JOB)]
    scripted.scripts["GET /v1/catalog"] = [(429, {"retry-after": "1"}, error("slow_down")), (200, {}, {"losses": []})]
    scripted.scripts["POST /v1/jobs"] = [(502, {}, error("bad_gateway")), (201, {}, JOB), (201, {}, JOB)]
    with Client(scripted.url, retries=3, backoff=0.01) as client:
        assert client.get("j1").id == "j1" and scripted.count("GET", "/v1/jobs/j1") == 2
        started = time.monotonic()
        assert client.catalog() == {"losses": []}
        asked, answered = [t for m, p, t, _ in scripted.seen if p == "/v1/catalog"]
        assert answered - asked >= 1.0 and time.monotonic() - started < 5
        # A submit carries a fresh Idempotency-Key, so it is retried, with the same key.
        assert client.submit({"any": "spec"}).id == "j1"
        keys = [h.get("Idempotency-Key") for m, p, _, h in scripted.seen if (m, p) == ("POST", "/v1/jobs")]
        assert len(keys) == 2 and keys[0] == keys[1] and keys[0] and len(keys[0]) == 36
        assert client.submit({"any": "spec"}).id == "j1"
        third = [h["Idempotency-Key"] for m, p, _, h in scripted.seen if (m, p) == ("POST", "/v1/jobs")][-1]
        assert third != keys[0]  # one key per call

        # Retries give up: the last answer is raised.
        scripted.scripts["GET /v1/jobs/j2"] = [(500, {}, error("internal_error"))] * 4
        with pytest.raises(ServerError) as failed:
            client.get("j2")
        assert failed.value.status == 500 and scripted.count("GET", "/v1/jobs/j2") == 4
        scripted.scripts["GET /v1/jobs/j3"] = [(429, {"retry-after": "0"}, error("slow_down"))] * 4
        with pytest.raises(RateLimited) as limited:
            client.get("j3")
        assert limited.value.retry_after == 0 and scripted.count("GET", "/v1/jobs/j3") == 4


def test_something_else_at_the_url_is_an_unexpected_response(scripted: Scripted) -> None:
    """Not JSON, or JSON of another shape (another service, a proxy's page): one clear error, never pydantic's."""
    scripted.scripts["GET /v1/jobs/j1"] = [(200, {"content-type": "text/html"}, b"<html>a login page</html>")] * 2
    scripted.scripts["GET /v1/jobs"] = [(200, {}, {"jobs": [{"id": 1}], "next_cursor": None})]
    scripted.scripts["GET /v1/catalog"] = [(200, {}, [1, 2])]
    scripted.scripts["POST /v1/jobs"] = [(200, {}, {"valid": True})]
    with Client(scripted.url, retries=0) as client:
        calls: list[Callable[[], object]] = [
            lambda: client.get("j1"),
            lambda: list(client.list()),
            client.catalog,
            lambda: client.validate({"any": "spec"}),
        ]
        for call in calls:
            with pytest.raises(UnexpectedResponse, match="not a ganforge answer"):
                call()
    # The command line says where it looked, in one line, with exit status 5.
    shown = subprocess.run(
        [sys.executable, "-m", "ganforge", "--url", scripted.url, "show", "j1"], capture_output=True, text=True
    )
    assert shown.returncode == 5 and "Traceback" not in shown.stderr, shown.stderr
    assert f"is {scripted.url} a ganforge service?" in shown.stderr


def test_unsafe_requests_and_other_4xx_are_not_retried(scripted: Scripted, tmp_path: Path) -> None:
    (tmp_path / "d.npz").write_bytes(b"not really")
    scripted.scripts["POST /v1/datasets"] = [(503, {}, error("unavailable")), (201, {}, {})]
    scripted.scripts["DELETE /v1/datasets/d1"] = [(503, {}, error("unavailable"))]
    scripted.scripts["GET /v1/jobs/j1"] = [(404, {}, error("not_found")), (200, {}, JOB)]
    scripted.scripts["POST /v1/jobs"] = [(409, {}, error("idempotency_conflict")), (201, {}, JOB)]
    with Client(scripted.url, retries=3, backoff=0.01) as client:
        with pytest.raises(ServerError):
            client.datasets.upload(tmp_path / "d.npz")  # a POST without Idempotency-Key: sent once
        assert scripted.count("POST", "/v1/datasets") == 1
        with pytest.raises(ServerError):
            client.datasets.delete("d1")
        assert scripted.count("DELETE", "/v1/datasets/d1") == 1
        with pytest.raises(NotFound):
            client.get("j1")
        assert scripted.count("GET", "/v1/jobs/j1") == 1
        with pytest.raises(Conflict):
            client.submit({"any": "spec"})
        assert scripted.count("POST", "/v1/jobs") == 1

    async def async_side() -> None:
        scripted.scripts["GET /v1/jobs/j4"] = [(503, {}, error("unavailable")), (200, {}, {**JOB, "id": "j4"})]
        async with AsyncClient(scripted.url, retries=2, backoff=0.01) as client:
            job = await client.get("j4")
            assert job.id == "j4" and job.a_field_from_a_newer_api == 1  # type: ignore[attr-defined]
        assert scripted.count("GET", "/v1/jobs/j4") == 2

    asyncio.run(async_side())


def test_nothing_listening_is_connection_failed_after_retries() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.01) as client:
        started = time.monotonic()
        with pytest.raises(ConnectionFailed, match="could not reach http://127.0.0.1"):
            client.get("j1")
        assert time.monotonic() - started < 5


def test_metrics_to_pandas_without_pandas_is_a_clear_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = Metrics(job_id="j", series={"loss_d": {"steps": [1], "values": [0.5], "downsampled": False}})  # type: ignore[dict-item]
    monkeypatch.setitem(__import__("sys").modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        metrics.to_pandas()


def test_client_settings_come_from_arguments_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANFORGE_URL", "http://example.invalid:9000/")
    monkeypatch.setenv("GANFORGE_API_KEY", "from-env")
    with Client() as client:
        assert client.base_url == "http://example.invalid:9000" and client.config.api_key == "from-env"
    with Client("http://127.0.0.1:1", "given") as client:
        assert client.base_url == "http://127.0.0.1:1" and client.config.api_key == "given"
    monkeypatch.delenv("GANFORGE_URL")
    with Client() as client:
        assert client.base_url == "http://127.0.0.1:8000"
    with pytest.raises(ValueError, match="http"):
        Client("ftp://somewhere")


# ---------------------------------------------------------------------------------------------- hostile servers
# A wrong or hostile server (another service, a proxy, an attacker at the URL) must never make the SDK write where
# it chose, take a page for a file, spin, hang, fill memory, or echo a secret.

SAFETENSORS = (2).to_bytes(8, "little") + b"{}"  # the smallest safetensors file: an empty JSON header
STATE = b"PK\x03\x04rest of a torch zip"
OCTETS = {"content-type": "application/octet-stream"}
HTML = {"content-type": "text/html; charset=utf-8"}
SSE = {"content-type": "text/event-stream; charset=utf-8"}
LOGIN_PAGE = b"<!doctype html><html><body>Please log in</body></html>"


class RawServer:
    """A TCP server that reads each request's head and then hands the socket to `respond(sock, number)`: for
    answers http.server cannot give (an endless body, none at all). Records each request head."""

    def __init__(self, respond: Callable[[Any], None]) -> None:
        import socket

        self.respond = respond
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: Any) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            self.requests.append(head)
            try:
                self.respond(conn)
            except OSError:
                pass  # the client hung up: what these tests want

    def close(self) -> None:
        self.sock.close()


class Stop(Exception):
    """Raised by an on_retry callback to end a test at the first announced wait."""


def test_a_download_keeps_to_safe_file_names(scripted: Scripted, tmp_path: Path) -> None:
    unsafe = [".bashrc", "../escape.safetensors", "..", "a/b", "a\\b", "-rf", "x" * 300, "ok\x7fname", ""]
    path = "/v1/jobs/j1/checkpoints/latest"
    scripted.scripts[f"GET {path}"] = [
        (200, {**OCTETS, "content-disposition": f'attachment; filename="{name}"'}, SAFETENSORS) for name in unsafe
    ] + [(200, {**OCTETS, "content-disposition": 'attachment; filename="j1-7.safetensors"'}, SAFETENSORS)]
    with Client(scripted.url, retries=0) as client:
        for name in unsafe:
            target = client.download_checkpoint("j1", path=tmp_path)
            assert target == tmp_path / "j1-latest.safetensors", name
            assert sorted(p.name for p in tmp_path.iterdir()) == ["j1-latest.safetensors"], name
            target.unlink()
        assert client.download_checkpoint("j1", path=tmp_path) == tmp_path / "j1-7.safetensors"
    assert not (tmp_path.parent / "escape.safetensors").exists()


def test_an_answer_that_is_not_the_file_asked_for_writes_nothing(scripted: Scripted, tmp_path: Path) -> None:
    """A page (wrong Content-Type, or the right one over another body) or any redirect is UnexpectedResponse."""
    checkpoint, png, npy = (
        "/v1/jobs/j1/checkpoints/latest",
        "/v1/jobs/j1/samples/latest.png",
        "/v1/jobs/j1/samples/latest.npy",
    )
    preview = "/v1/datasets/d1/preview.png"
    wrong = [
        (200, HTML, LOGIN_PAGE),
        (200, {"content-type": "application/json"}, {"error": "no"}),
        (200, {}, b""),  # no content type at all... Scripted sends application/json
        (301, {"location": "http://elsewhere/login"}, b""),
        (302, {"location": "/login"}, LOGIN_PAGE),
        (307, {"location": "/v1/jobs/j1/checkpoints/latest"}, b""),
        (308, {}, b""),
    ]
    scripted.scripts[f"GET {checkpoint}"] = [*wrong, (200, OCTETS, LOGIN_PAGE), (200, OCTETS, b"")]
    scripted.scripts[f"GET {png}"] = [*wrong, (200, {"content-type": "image/png"}, LOGIN_PAGE)]
    scripted.scripts[f"GET {npy}"] = [*wrong, (200, OCTETS, PNG + b"...")]
    scripted.scripts[f"GET {preview}"] = [*wrong, (200, {"content-type": "image/png"}, NPY + b"...")]
    scripted.scripts["GET /v1/jobs/j1"] = [(302, {"location": "/login"}, b""), (304, {}, b"")]
    with Client(scripted.url, retries=3, backoff=0.01) as client:
        for _ in range(len(wrong) + 2):
            with pytest.raises(UnexpectedResponse, match="not a ganforge answer"):
                client.download_checkpoint("j1", path=tmp_path, file="weights")
        for _ in range(len(wrong) + 1):
            with pytest.raises(UnexpectedResponse, match="not a ganforge answer"):
                client.sample_png("j1")
            with pytest.raises(UnexpectedResponse, match="not a ganforge answer"):
                client.sample_npy("j1")
            with pytest.raises(UnexpectedResponse, match="not a ganforge answer"):
                client.datasets.preview_png("d1")
        for _ in range(2):
            with pytest.raises(UnexpectedResponse, match="redirect"):
                client.get("j1")
        assert list(tmp_path.iterdir()) == []  # nothing written, not even a partial file
        # Each was asked once: a redirect is neither followed nor retried.
        assert scripted.count("GET", checkpoint) == len(wrong) + 2 and scripted.count("GET", "/v1/jobs/j1") == 2
        # What the API does send is taken, and the request says what it accepts.
        scripted.scripts[f"GET {png}"] = [(200, {"content-type": "image/png"}, PNG + b"rest")]
        scripted.scripts[f"GET {npy}"] = [(200, OCTETS, NPY + b"rest")]
        scripted.scripts["GET /v1/jobs/j1/checkpoints/3"] = [(200, OCTETS, STATE)]
        assert client.sample_png("j1") == PNG + b"rest" and client.sample_npy("j1") == NPY + b"rest"
        assert client.download_checkpoint("j1", 3, tmp_path / "s.pt", file="state").read_bytes() == STATE
        assert [h.get("Accept") for m, p, _, h in scripted.seen if p == png][-1] == "image/png"

    async def async_side() -> None:
        scripted.scripts[f"GET {checkpoint}"] = [(200, HTML, LOGIN_PAGE), (302, {"location": "/"}, b"")]
        scripted.scripts[f"GET {png}"] = [(200, {"content-type": "image/png"}, LOGIN_PAGE)]
        async with AsyncClient(scripted.url, retries=0) as client:
            for _ in range(2):
                with pytest.raises(UnexpectedResponse, match="not a ganforge answer"):
                    await client.download_checkpoint("j1", path=tmp_path)
            with pytest.raises(UnexpectedResponse, match="not a png file"):
                await client.sample_png("j1")
        assert list(tmp_path.iterdir()) == [tmp_path / "s.pt"]

    asyncio.run(async_side())


EVENTS = "/v1/jobs/j1/events"


def sse_event(number: int, kind: str = "metrics", **data: Any) -> bytes:
    return f"id: {number}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()


@pytest.mark.timeout(60)
def test_follow_gives_up_on_streams_that_bring_nothing(scripted: Scripted) -> None:
    """retry: 0 then close, an empty stream, a stream replaying what we have, a page: no endless reconnecting."""
    told: list[str] = []
    with Client(scripted.url, retries=3, backoff=0.01, on_retry=told.append) as client:
        for body in (b"retry: 0\n\n", b"", b": just a comment\n\n", b"retry: -5\n\ndata: {}\n\n"):
            scripted.scripts[f"GET {EVENTS}"] = [(200, SSE, body)] * 50
            before, started = scripted.count("GET", EVENTS), time.monotonic()
            with pytest.raises(ConnectionFailed, match="4 times in a row without a new event"):
                list(client.follow("j1"))
            assert scripted.count("GET", EVENTS) - before == 4, body  # the first try and `retries` more
            assert 0.3 <= time.monotonic() - started < 5, body  # each wait at least 0.1 s, never a busy loop
        assert told[-1] == "the event stream of job j1 ended: reconnecting in 0.1 s"
        # A stream that only replays what was yielded counts as bringing nothing; a new event starts the count again.
        first = b"retry: 100\n\n" + sse_event(1, since="start")
        scripted.scripts[f"GET {EVENTS}"] = (
            [(200, SSE, first)] * 3 + [(200, SSE, first + sse_event(2))] + [(200, SSE, first)] * 50
        )
        got: list[int] = []
        with pytest.raises(ConnectionFailed):
            for event in client.follow("j1"):
                got.append(event.id)
        assert got == [1, 2] and scripted.count("GET", EVENTS) == 16 + 4 + 4
        # A page where the stream should be is UnexpectedResponse at once: no reconnecting.
        scripted.scripts[f"GET {EVENTS}"] = [(200, HTML, LOGIN_PAGE)] * 50
        before = scripted.count("GET", EVENTS)
        with pytest.raises(UnexpectedResponse, match="expected text/event-stream"):
            list(client.follow("j1"))
        assert scripted.count("GET", EVENTS) == before + 1
        scripted.scripts[f"GET {EVENTS}"] = [(302, {"location": "/login"}, b"")] * 50
        with pytest.raises(UnexpectedResponse, match="redirect"):
            list(client.follow("j1"))

    async def async_side() -> None:
        scripted.scripts[f"GET {EVENTS}"] = [(200, SSE, b"retry: 0\n\n")] * 50
        async with AsyncClient(scripted.url, retries=2, backoff=0.01) as client:
            with pytest.raises(ConnectionFailed, match="3 times in a row"):
                async for _ in client.follow("j1"):
                    pass
            scripted.scripts[f"GET {EVENTS}"] = [(200, HTML, LOGIN_PAGE)]
            with pytest.raises(UnexpectedResponse, match="expected text/event-stream"):
                async for _ in client.follow("j1"):
                    pass

    asyncio.run(async_side())


def test_the_servers_retry_is_clamped(scripted: Scripted) -> None:
    """retry: 999999999999 would sleep for ever, retry: 0 would spin: the wait stays within 0.1-30 s."""
    told: list[str] = []

    def stop(message: str) -> None:
        told.append(message)
        raise Stop

    for retry, shown in ((b"999999999999", "30.0"), (b"0", "0.1"), (b"250", "0.2")):
        told.clear()
        scripted.scripts[f"GET {EVENTS}"] = [(200, SSE, b"retry: " + retry + b"\n\n")]
        with Client(scripted.url, retries=3, on_retry=stop) as client, pytest.raises(Stop):
            list(client.follow("j1"))
        assert told == [f"the event stream of job j1 ended: reconnecting in {shown} s"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shape", ["one endless line", "endless lines of one event"])
def test_an_endless_event_is_refused_not_held_in_memory(shape: str) -> None:
    total = 64 * 1024 * 1024
    sent: list[int] = []

    def respond(conn: Any) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\nid: 1\n")
        piece = b"data: " + b"x" * 65536 if shape == "one endless line" else b"data: xxxxxxxxxxxxxxxxxx\n" * 2000
        done = 0
        while done < total:
            conn.sendall(piece)
            done += len(piece)
            sent.append(done)

    server = RawServer(respond)
    try:
        for client_type in ("sync", "async"):
            sent.clear()
            if client_type == "sync":
                with Client(server.url, retries=0) as client, pytest.raises(UnexpectedResponse, match="over 8388608"):
                    list(client.follow("j1"))
            else:

                async def follow() -> None:
                    async with AsyncClient(server.url, retries=0) as client:
                        async for _ in client.follow("j1"):
                            pass

                with pytest.raises(UnexpectedResponse, match="over 8388608"):
                    asyncio.run(follow())
            time.sleep(0.2)
            assert sent[-1] < total / 2, client_type  # the client hung up soon after the limit
    finally:
        server.close()


def test_secrets_stay_out_of_messages(scripted: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("s3cr3tkey\nX-Evil: 1", "s3cr3tkey\r", "s3cr3t key", "s3cr3tkëy", " s3cr3tkey", "s3cr3tkey\x00"):
        for make in (Client, AsyncClient):
            with pytest.raises(ValueError, match="the API key .* contains characters a header cannot carry") as bad:
                make(scripted.url, key)
            assert "s3cr3t" not in str(bad.value) and "s3cr3t" not in repr(bad.value)
    monkeypatch.setenv("GANFORGE_API_KEY", "s3cr3tkey\nX-Evil: 1")
    with pytest.raises(ValueError, match="GANFORGE_API_KEY") as bad:
        Client(scripted.url)
    assert "s3cr3t" not in str(bad.value)
    monkeypatch.delenv("GANFORGE_API_KEY")
    assert scripted.seen == []  # refused before anything was sent

    # A password in the URL is masked wherever the SDK shows the URL.
    told: list[str] = []
    port = free_port()
    with Client(f"http://bob:s3cr3t@127.0.0.1:{port}", retries=1, backoff=0.01, on_retry=told.append) as client:
        assert repr(client) == f"Client('http://bob:***@127.0.0.1:{port}')"
        with pytest.raises(ConnectionFailed, match="could not reach") as failed:
            client.get("j1")
        assert "s3cr3t" not in str(failed.value)
    for url in ("http://bob:s3cr3t@[::1", "ftp://bob:s3cr3t@host", "http://bob:s3cr3t@host:abc"):
        with pytest.raises(ValueError, match="bob:\\*\\*\\*@") as bad:
            Client(url)
        assert "s3cr3t" not in str(bad.value)
    assert told and not any("s3cr3t" in line for line in told)
    shown = f"http://bob:s3cr3t@{scripted.url.removeprefix('http://')}"
    scripted.scripts["GET /v1/jobs/j1"] = [(302, {"location": "/login"}, b"")]
    with Client(shown, retries=0) as client, pytest.raises(UnexpectedResponse) as odd:
        client.get("j1")
    assert "s3cr3t" not in str(odd.value)


def test_bad_urls_and_arguments_are_value_errors_before_anything_is_sent(scripted: Scripted) -> None:
    """The command line maps a ValueError from the SDK to exit 2: every bad input is one, naming what is wrong."""
    for url, says in (
        ("ftp://x", "http:// or https://"),
        ("http://[::1", "not a valid URL"),
        ("http://", "with a host"),
        ("http://host:99999", "port"),
        ("http://a host", "with a host"),
        ("http://host/\x00", "not a valid URL"),
        ("http://host/?q=1", "query"),
        ("localhost:8000", "http:// or https://"),
    ):
        for make in (Client, AsyncClient):
            with pytest.raises(ValueError, match=f"base_url.*{says}"):
                make(url)
    for value, says in ((0, "timeout"), (float("nan"), "timeout")):
        with pytest.raises(ValueError, match=says):
            Client(scripted.url, timeout=value)
    with Client(scripted.url) as client:
        with pytest.raises(ValueError, match="job_id is 100000 characters long"):
            client.get("j" * 100_000)
        with pytest.raises(ValueError, match="job_id contains a control character"):
            client.cancel("j1\nX-Evil: 1")
        with pytest.raises(ValueError, match="job_id must be a non-empty string"):
            list(client.follow(""))
        with pytest.raises(ValueError, match="dataset_id is 300 characters long"):
            client.datasets.delete("d" * 300)
        with pytest.raises(ValueError, match="invalid URL"):
            list(client.list(tag="t:" + "x" * 100_000))
        with pytest.raises(ValueError, match="step"):
            client.sample_png("j1", step="../../x")
    assert scripted.seen == []


def test_on_retry_tells_every_wait_and_connecting_times_out_apart_from_reading(scripted: Scripted) -> None:
    told: list[str] = []
    scripted.scripts["GET /v1/jobs/j1"] = [(503, {}, error("unavailable")), (200, {}, JOB)]
    scripted.scripts["GET /v1/catalog"] = [(429, {"retry-after": "1"}, error("slow_down")), (200, {}, {})]
    with Client(scripted.url, retries=2, backoff=0.2, on_retry=told.append) as client:
        client.get("j1")
        client.catalog()
        assert client._http.timeout.connect == 5.0 and client._http.timeout.read == 30.0
    assert len(told) == 2 and told[1] == "rate limited: waiting 1 s (GET /v1/catalog)"
    assert told[0].startswith("retrying GET /v1/jobs/j1 in 0.") and told[0].endswith(" s (503)")

    # A server that accepts and never answers: each silent wait is told, not two minutes of nothing.
    silent = RawServer(lambda _: time.sleep(1.5))
    try:
        told.clear()
        started = time.monotonic()
        with Client(silent.url, timeout=0.3, retries=2, backoff=0.01, on_retry=told.append) as client:
            with pytest.raises(ConnectionFailed, match="could not reach"):
                client.get("j1")
        assert time.monotonic() - started < 3 and len(told) == 2
        assert all(line.startswith("retrying GET /v1/jobs/j1 in ") and "ReadTimeout" in line for line in told), told

        async def async_side() -> None:
            told.clear()
            async with AsyncClient(silent.url, timeout=0.3, retries=1, backoff=0.01, on_retry=told.append) as client:
                assert client._http.timeout.connect == 0.3  # never longer than the timeout asked for
                with pytest.raises(ConnectionFailed):
                    await client.get("j1")
            assert len(told) == 1 and "ReadTimeout" in told[0]

        asyncio.run(async_side())
    finally:
        silent.close()


def test_text_the_server_chose_cannot_drive_the_terminal(scripted: Scripted) -> None:
    """Escape sequences in an error answer, a content type or an event's type are shown escaped, never raw."""
    nasty = "\x1b[2J\x1b]0;owned\x07\x9b31m"
    body = {"error": {"code": f"bad{nasty}", "message": f"no{nasty}", "details": [{"field": nasty, "message": nasty}]}}
    scripted.scripts["POST /v1/jobs"] = [(422, {}, body)]
    scripted.scripts["GET /v1/jobs/j1"] = [(404, {"content-type": "text/plain"}, f"gone{nasty}".encode())]
    scripted.scripts[f"GET {EVENTS}"] = [(200, SSE, f"id: 1\nevent: st{nasty}\ndata: {{}}\n\n".encode())]
    with Client(scripted.url, retries=0) as client:
        with pytest.raises(ValidationFailed) as refused:
            client.validate({"any": "spec"})
        with pytest.raises(NotFound) as missing:
            client.get("j1")
        with pytest.raises(UnexpectedResponse, match="not a ganforge event") as odd:
            list(client.follow("j1"))
    for error in (refused.value, missing.value, odd.value):
        text = str(error) + repr(error.fields) + str(error.code)
        assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text, text
    assert refused.value.fields[0].message == "\\x1b[2J\\x1b]0;owned\\x07\\x9b31m"
    with pytest.raises(ValueError, match="backoff"):
        Client(scripted.url, backoff=-1)


def test_a_spec_file_is_read_within_the_limits_the_cli_keeps(tmp_path: Path) -> None:
    """The SDK reads spec files with the CLI's reader: a YAML alias bomb or a deep file is refused before sending."""
    bomb = tmp_path / "bomb.yaml"
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb.write_text("\n".join([*levels, "tags: {x: *a9}"]) + "\n")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with Client("http://127.0.0.1:9", retries=0) as client:  # nothing listens there: nothing may be sent
        started = time.monotonic()
        with pytest.raises(ValueError, match="anchors and aliases"):
            client.submit(bomb)
        with pytest.raises(ValueError, match="nested deeper"):
            client.validate(deep)
        assert time.monotonic() - started < 5


def test_a_429_with_a_long_retry_after_is_raised_at_once_with_the_services_message(scripted: Scripted) -> None:
    """An hourly quota's 429 (Retry-After 3526) is not waited out: RateLimited at once, the message as sent; a short
    one is waited out; max_retry_after (a client option, default 60 s) sets where long starts."""
    quota = "uploads_per_hour quota: 2 data sets uploaded in the last hour of 2 allowed; the next fits in 3526 s"
    refused = {"error": {"code": "quota_exceeded", "message": quota, "details": []}}
    scripted.scripts["GET /v1/catalog"] = [(429, {"retry-after": "3526"}, refused)] * 2
    scripted.scripts["GET /v1/jobs/j1"] = [(429, {"retry-after": "1"}, error("slow_down"))] * 4 + [(200, {}, JOB)]
    heard: list[str] = []
    with Client(scripted.url, retries=3, backoff=0.01, on_retry=heard.append) as client:
        started = time.monotonic()
        with pytest.raises(RateLimited) as limited:
            client.catalog()
        assert time.monotonic() - started < 2 and scripted.count("GET", "/v1/catalog") == 1 and not heard
        assert limited.value.retry_after == 3526 and quota in limited.value.message
    with Client(scripted.url, retries=3, backoff=0.01, max_retry_after=0.5) as client:
        with pytest.raises(RateLimited):
            client.get("j1")  # 1 s is over this client's 0.5 s
        assert scripted.count("GET", "/v1/jobs/j1") == 1

    async def long_wait() -> None:
        async with AsyncClient(scripted.url, retries=3, backoff=0.01) as client:
            with pytest.raises(RateLimited):
                await client.catalog()

    asyncio.run(long_wait())
    assert scripted.count("GET", "/v1/catalog") == 2
    with pytest.raises(ValueError, match="max_retry_after"):
        Client(scripted.url, max_retry_after=-1)
