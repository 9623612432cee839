"""POST /v1/jobs/{id}/generate through the real service: API, one training worker and one generate worker.

One deployment (PostgreSQL + Redis) serves every test of the module: a tiny ring8 job and a tiny cgan on digits
are trained once; the generate worker answers while a long job keeps the training worker busy (its own queue).
`test_embedded_smoke` runs requests through the embedded default (SQLite, file-system broker) too.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import ValidationError
from sqlalchemy import update

import ganforge
from api.routes.generations import GenerationOut
from ganforge.cli import main
from ganforge.client import AsyncClient, Client, ValidationFailed
from ganforge.supervisor import Kept
from models.artifacts import ArtifactStore
from models.datasets import BUILTIN_DATASETS
from models.db import make_engine
from models.generation import MAX_COUNT, MAX_IMAGES, GenerateRequest, check_against_job
from models.records import Generation
from models.settings import Settings
from models.spec import JobSpec
from models.store import JobStore, utcnow
from models.store.generations import TooManyGenerations
from tests.conftest import api_only
from tests.service import Service, wait_for

POINTS = {
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 32, "depth": 2},
    "loss": {"name": "nsgan"},
    "training": {"steps": 50, "batch_size": 64, "ema_decay": None},  # no EMA: `ema: true` is refused for it
    "every": {"metrics": 25, "samples": 50, "checkpoint": 50},
}
CGAN = {
    "dataset": {"builtin": "digits", "resize": 16},
    "architecture": {"name": "dcgan", "base_channels": 8, "latent_dim": 16},
    "loss": {"name": "cgan"},
    "training": {"steps": 20, "batch_size": 16, "ema_decay": 0.9},
    "every": {"metrics": 10, "samples": 20, "checkpoint": 20},
}
LONG = {
    **POINTS,
    "training": {"steps": 1_000_000, "batch_size": 64},
    "every": {"metrics": 50, "samples": 100_000, "checkpoint": 5_000},
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@contextmanager
def _deployment(backend: str, folder: Path) -> Iterator[Service]:
    # The API waits up to 15 s for a result before its 202: a 2-core machine shared by test processes is slow.
    with api_only(backend, folder, GANFORGE_GENERATE_WAIT_SECONDS="15") as service:
        generate = service.start_generate_worker(wait=False)  # both workers start at once
        service.start_worker()
        service.wait_generate_worker(generate)
        yield service


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with _deployment("postgres", tmp_path_factory.mktemp("generate-postgres")) as service:
        yield service


@pytest.fixture(scope="module")
def jobs(deployment: Service) -> dict[str, dict[str, Any]]:
    """The two tiny jobs, trained."""
    out: dict[str, dict[str, Any]] = {}
    with deployment.client() as client:
        for name, spec in (("points", POINTS), ("cgan", CGAN)):
            created = client.post("/v1/jobs", json=spec)
            assert created.status_code == 201, created.text
            out[name] = created.json()
        for name, job in out.items():
            done = wait_for(client, job["id"], ("succeeded", "failed"), timeout=180)
            assert done["status"] == "succeeded", (done, deployment.logs())
            out[name] = done
    return out


def _npy(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-npy"
    array: np.ndarray = np.load(io.BytesIO(response.content), allow_pickle=False)
    return array


def _fields(response: httpx.Response) -> list[str]:
    return [detail["field"] for detail in response.json()["error"]["details"]]


@pytest.mark.slow
def test_points_come_back_as_many_as_asked_of_the_right_shape_and_repeat_with_the_seed(
    deployment: Service, jobs: dict[str, dict[str, Any]]
) -> None:
    job = jobs["points"]["id"]
    with deployment.client() as client:
        first = client.post(f"/v1/jobs/{job}/generate", json={"count": 37, "seed": 5})
        array = _npy(first)
        assert array.shape == (37, 2) and array.dtype == np.float32 and np.isfinite(array).all()
        again = _npy(client.post(f"/v1/jobs/{job}/generate", json={"count": 37, "seed": 5, "step": 50}))
        assert np.array_equal(array, again)
        other = _npy(client.post(f"/v1/jobs/{job}/generate", json={"count": 37, "seed": 6}))
        assert not np.array_equal(array, other)
        record = client.get(f"/v1/generations/{first.headers['x-generation-id']}").json()
        assert record["status"] == "succeeded" and record["params"]["step"] == 50 and record["params"]["ema"] is False
        assert client.get(record["result_url"]).content == first.content
        picture = client.post(f"/v1/jobs/{job}/generate", json={"count": 200, "format": "png"})
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
        assert picture.content.startswith(PNG_SIGNATURE)


@pytest.mark.slow
def test_cgan_samples_are_of_the_class_asked_for(
    deployment: Service, jobs: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The service's samples for label 3 are the ones the downloaded checkpoint's generator gives for label 3."""
    job = jobs["cgan"]["id"]
    with deployment.client() as client:
        threes = _npy(client.post(f"/v1/jobs/{job}/generate", json={"count": 12, "seed": 7, "labels": 3}))
        per_sample = _npy(
            client.post(f"/v1/jobs/{job}/generate", json={"count": 12, "seed": 7, "labels": [3] * 6 + [5] * 6})
        )
        checkpoint = client.get(f"/v1/jobs/{job}/checkpoints/latest")
        grid = client.post(f"/v1/jobs/{job}/generate", json={"count": 10, "labels": list(range(10)), "format": "png"})
    assert threes.shape == (12, 1, 16, 16)
    path = tmp_path / "g.safetensors"
    path.write_bytes(checkpoint.content)
    generator = ganforge.load_generator(path)
    assert generator.ema  # the job kept an EMA of G, and generate uses it by default
    local = generator.generate(12, seed=7, labels=3).numpy()
    np.testing.assert_allclose(threes, local, atol=1e-5)
    assert not np.allclose(generator.generate(12, seed=7, labels=4).numpy(), threes, atol=1e-3)
    np.testing.assert_allclose(per_sample[:6], threes[:6], atol=1e-5)
    assert not np.allclose(per_sample[6:], threes[6:], atol=1e-3)
    assert grid.status_code == 200 and grid.content.startswith(PNG_SIGNATURE)


@pytest.mark.slow
def test_bad_requests_are_refused_naming_the_field(deployment: Service, jobs: dict[str, dict[str, Any]]) -> None:
    points, cgan = jobs["points"]["id"], jobs["cgan"]["id"]
    with deployment.client() as client:
        cases = [
            (points, {"count": MAX_COUNT + 1}, 422, "count"),
            (cgan, {"count": MAX_IMAGES + 1}, 422, "count"),
            (points, {"count": 0}, 422, "count"),
            (points, {"count": 4, "labels": 1}, 422, "labels"),
            (cgan, {"count": 4, "labels": 10}, 422, "labels"),
            (cgan, {"count": 3, "labels": [1, 2, 99]}, 422, "labels.2"),
            (cgan, {"count": 3, "labels": [1, 2]}, 422, "labels"),
            (points, {"count": 4, "codes": {"continuous": [0.5]}}, 422, "codes"),
            (points, {"count": 4, "ema": True}, 422, "ema"),
            (points, {"count": 4, "format": "gif"}, 422, "format"),
            (points, {"count": 4, "seed": 2**31}, 422, "seed"),
            (points, {"count": 4, "step": 7}, 404, "step"),
            # numbers are JSON numbers, as in a job spec: not text, a boolean or 4.0 for an integer
            (points, {"count": "4"}, 422, "count"),
            (points, {"count": 4.0}, 422, "count"),
            (points, {"count": 4, "seed": True}, 422, "seed"),
            (cgan, {"count": 2, "labels": ["1", 2]}, 422, "labels.0"),
        ]
        for job, body, status, field in cases:
            response = client.post(f"/v1/jobs/{job}/generate", json=body)
            assert response.status_code == status, (body, response.text)
            assert field in _fields(response), (body, response.text)
        made = client.post(f"/v1/jobs/{points}/generate", json={"count": 4})
        generation = made.headers["x-generation-id"]
    with deployment.client("key-b") as other:
        assert other.post(f"/v1/jobs/{points}/generate", json={"count": 4}).status_code == 404
        assert other.get(f"/v1/generations/{generation}").status_code == 404
        assert other.get(f"/v1/generations/{generation}/result").status_code == 404


@pytest.mark.slow
def test_a_nan_infinite_or_huge_number_is_one_422_at_its_field(
    deployment: Service, jobs: dict[str, dict[str, Any]]
) -> None:
    """Every number of the body is bounded at the API: 1e308 as an InfoGAN code used to reach the worker (409)."""
    points, cgan = jobs["points"]["id"], jobs["cgan"]["id"]
    huge = "123456789012345678901234567890"  # past 2**63
    cases = [
        (points, '{"count": 4, "codes": {"continuous": [1e308]}}', "codes.continuous.0"),
        (points, '{"count": 4, "codes": {"continuous": [0.5, -10.5]}}', "codes.continuous.1"),
        (points, '{"count": 4, "codes": {"continuous": [[0.5, 1e400], [0, 0]]}}', "codes.continuous.0.1"),
        (points, '{"count": 4, "codes": {"continuous": [0.5, NaN]}}', "codes.continuous.1"),
        (points, '{"count": 4, "codes": {"continuous": [-Infinity]}}', "codes.continuous.0"),
        (points, f'{{"count": 4, "codes": {{"continuous": [{huge}]}}}}', "codes.continuous.0"),
        (cgan, f'{{"count": 2, "labels": [1, {huge}]}}', "labels.1"),
        (cgan, f'{{"count": 2, "labels": -{huge}}}', "labels"),
        (points, f'{{"count": {huge}}}', "count"),
        (points, '{"count": NaN}', "count"),
        (points, f'{{"count": 4, "seed": {huge}}}', "seed"),
        (points, '{"count": 4, "seed": Infinity}', "seed"),
        (points, f'{{"count": 4, "step": {huge}}}', "step"),
        (points, '{"count": 4, "step": 1e308}', "step"),
    ]
    with deployment.client() as client:
        for job, body, field in cases:
            response = client.post(
                f"/v1/jobs/{job}/generate", content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 422, (body, response.text)
            assert _fields(response) == [field], (body, response.text)
        for wait in ("nan", "inf", "1e400"):
            response = client.post(f"/v1/jobs/{points}/generate", params={"wait": wait}, json={"count": 4})
            assert response.status_code == 422 and _fields(response) == ["query.wait"], (wait, response.text)


@pytest.mark.slow
def test_generate_is_not_stuck_behind_a_training_job(deployment: Service, jobs: dict[str, dict[str, Any]]) -> None:
    """The only training worker is busy for hours: the answer still comes within the API's wait (200, not 202)."""
    with deployment.client() as client:
        long = client.post("/v1/jobs", json=LONG).json()
        try:
            wait_for(client, long["id"], ("running",), timeout=60)
            started = time.monotonic()
            response = client.post(f"/v1/jobs/{jobs['points']['id']}/generate", json={"count": 64, "seed": 1})
            elapsed = time.monotonic() - started
            assert _npy(response).shape == (64, 2)
            assert client.get(f"/v1/jobs/{long['id']}").json()["status"] == "running"
            assert elapsed < 15.0, elapsed
        finally:
            client.post(f"/v1/jobs/{long['id']}/cancel")
        # Its checkpoint at cancel, with the file gone from the artifact store: the worker's reason, not a 500.
        wait_for(client, long["id"], ("cancelled",), timeout=60)
        step = client.get(f"/v1/jobs/{long['id']}/checkpoints").json()["checkpoints"][-1]["step"]
        (deployment.data_dir / "artifacts" / "jobs" / long["id"] / "checkpoints" / f"{step:09d}.safetensors").unlink()
        failed = client.post(f"/v1/jobs/{long['id']}/generate", json={"count": 4})
        assert failed.status_code == 409 and failed.json()["error"]["code"] == "generation_failed", failed.text
        assert "missing from the artifact store" in failed.json()["error"]["message"], failed.text


@pytest.mark.slow
def test_with_no_wait_the_answer_is_202_and_the_url_gives_the_result(
    deployment: Service, jobs: dict[str, dict[str, Any]]
) -> None:
    job = jobs["points"]["id"]
    with deployment.client() as client:
        accepted = client.post(f"/v1/jobs/{job}/generate", params={"wait": 0}, json={"count": 9, "seed": 2})
        assert accepted.status_code == 202, accepted.text
        body = accepted.json()
        assert accepted.headers["location"] == body["url"] == f"/v1/generations/{body['id']}"
        deadline = time.monotonic() + 30
        while (record := client.get(body["url"]).json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, record
            time.sleep(0.1)
        assert record["status"] == "succeeded", record
        result = _npy(client.get(record["result_url"]))
        direct = _npy(client.post(f"/v1/jobs/{job}/generate", json={"count": 9, "seed": 2}))
    assert np.array_equal(result, direct)


@pytest.mark.slow
def test_the_sdk_generates_sync_and_async(deployment: Service, jobs: dict[str, dict[str, Any]]) -> None:
    job = jobs["cgan"]["id"]
    with Client(deployment.url, api_key="key-a") as client:
        data = client.generate(job, 6, seed=3, labels=2)
        png = client.generate(job, 6, format="png", ema=False)
        with pytest.raises(ValidationFailed) as refused:
            client.generate(jobs["points"]["id"], 4, labels=1)
    assert refused.value.fields[0].field == "labels"
    assert np.load(io.BytesIO(data)).shape == (6, 1, 16, 16)
    assert png.startswith(PNG_SIGNATURE)

    async def run() -> bytes:
        async with AsyncClient(deployment.url, api_key="key-a") as aclient:
            return await aclient.generate(job, 6, seed=3, labels=2)

    assert asyncio.run(run()) == data


@pytest.mark.slow
def test_the_cli_writes_the_format_of_the_file_suffix(
    deployment: Service, jobs: dict[str, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job, target = jobs["cgan"]["id"], tmp_path / "threes.png"
    argv = ["--url", deployment.url, "--api-key", "key-a", "generate", job, "-n", "9", "--label", "3", "-o"]
    assert main([*argv, str(target)]) == 0, capsys.readouterr().err
    assert target.read_bytes().startswith(PNG_SIGNATURE)
    assert main([*argv, str(tmp_path / "x.gif")]) == 2
    assert main(["--url", deployment.url, "--api-key", "key-a", "generate", job, "-n", "999"]) == 2
    assert "count" in capsys.readouterr().err


@pytest.mark.slow
def test_embedded_smoke(deployment: Service, jobs: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """SQLite and the file-system broker: a request reaches the generate worker there too.

    To spare a training worker, the embedded job's checkpoint is the real one the PostgreSQL deployment trained for
    the same spec, registered in the embedded store and artifact folder as the trainer would (worker/sink.py).
    """
    with deployment.client() as source:
        weights = source.get(f"/v1/jobs/{jobs['points']['id']}/checkpoints/50").content
        expected = _npy(source.post(f"/v1/jobs/{jobs['points']['id']}/generate", json={"count": 5, "seed": 5}))
    with api_only("embedded", tmp_path, GANFORGE_GENERATE_WAIT_SECONDS="15") as service:
        generate = service.start_generate_worker(wait=False)
        with service.client() as client:
            job = client.post("/v1/jobs", json=POINTS).json()
            assert client.post(f"/v1/jobs/{job['id']}/generate", json={"count": 5}).status_code == 409  # none yet
            _add_checkpoint(tmp_path, job["id"], weights)
            service.wait_generate_worker(generate)
            response = client.post(f"/v1/jobs/{job['id']}/generate", json={"count": 5, "seed": 5})
    assert np.array_equal(_npy(response), expected)  # the same checkpoint and seed: the same samples


def _add_checkpoint(folder: Path, job_id: str, weights: bytes) -> None:
    """Register `weights` as the step-50 checkpoint of the embedded deployment's job in `folder`, as the trainer
    would (worker/sink.py), sparing a training worker."""
    key = f"jobs/{job_id}/checkpoints/000000050.safetensors"
    ArtifactStore(str(folder / "artifacts")).put_bytes(key, weights)
    engine = make_engine(f"sqlite:///{folder / 'ganforge.db'}")
    try:
        JobStore(engine).add_checkpoint(job_id=job_id, step=50, weights_key=key, state_key=key, size_bytes=len(weights))
    finally:
        engine.dispose()


def _until(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
    return value


@pytest.mark.slow
def test_results_expire_after_their_ttl_and_an_owner_holds_a_bounded_number(
    deployment: Service, jobs: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """A real service (embedded) with a 4 s result TTL, at most 2 results kept and 1 request active per owner:
    one more active request is a 429 with Retry-After, a third result deletes the oldest, and the reconciler deletes
    a result past its TTL; each deleted one's GET is a 410 with the reason, and its file is gone."""
    with deployment.client() as source:
        weights = source.get(f"/v1/jobs/{jobs['points']['id']}/checkpoints/50").content
    settings = {
        "GANFORGE_GENERATE_WAIT_SECONDS": "15",
        "GANFORGE_GENERATE_RESULT_TTL_SECONDS": "4",
        "GANFORGE_GENERATE_MAX_RESULTS_PER_OWNER": "2",
        "GANFORGE_GENERATE_MAX_ACTIVE_PER_OWNER": "1",
    }
    results = tmp_path / "artifacts" / "generations"
    with api_only("embedded", tmp_path, **settings) as service, service.client() as client:
        job = client.post("/v1/jobs", json=POINTS).json()["id"]
        _add_checkpoint(tmp_path, job, weights)
        url = f"/v1/jobs/{job}/generate"
        # No generate worker yet: the first request stays queued, and one more is one too many (nothing stored).
        first = client.post(url, params={"wait": 0}, json={"count": 5, "seed": 1})
        assert first.status_code == 202, first.text
        refused = client.post(url, json={"count": 5})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "2", refused.text
        assert refused.json()["error"]["code"] == "too_many_generations", refused.text
        service.start_generate_worker()
        first_id = first.json()["id"]
        served = ("succeeded", "expired")  # expired: past its 4 s already, on a slow machine
        _until(lambda: client.get(f"/v1/generations/{first_id}").json()["status"] in served, "the first never ended")
        made = [client.post(url, json={"count": 5, "seed": seed}) for seed in (2, 3)]
        assert [r.status_code for r in made] == [200, 200], [r.text for r in made]
        # Three results made, two kept: the oldest is gone already (the worker deleted it on storing the third).
        assert len(list(results.iterdir())) <= 2, list(results.iterdir())
        gone = client.get(f"/v1/generations/{first_id}/result")
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "expired", gone.text
        assert "send the request again" in gone.json()["error"]["message"], gone.text
        record = client.get(f"/v1/generations/{first_id}").json()
        assert record["status"] == "expired" and record["result_url"] is None and record["error"], record
        # The newest expires 4 s after it was made: the reconciler deletes its file, and its GET says why.
        newest = made[-1].headers["x-generation-id"]
        listed = client.get(f"/v1/generations/{newest}").json()
        finished, expires = (np.datetime64(listed[k].replace("Z", "")) for k in ("finished_at", "expires_at"))
        assert expires - finished == np.timedelta64(4, "s"), listed
        _until(lambda: not list(results.iterdir()), "results past their TTL were not deleted", timeout=30)
        expired = client.get(f"/v1/generations/{newest}/result")
        assert expired.status_code == 410 and "4 s after it was made" in expired.json()["error"]["message"]
        assert client.get(f"/v1/generations/{newest}").json()["status"] == "expired"
        again = client.post(url, json={"count": 5, "seed": 3})  # the same request makes the same samples again
        assert np.array_equal(_npy(again), _npy(made[-1]))


# --- without the service: the store's state machine, the request's checks, `ganforge up`'s restarts ----------


def test_a_generation_is_claimed_once_and_a_stale_one_is_failed_with_the_reason(store: JobStore) -> None:
    job, _ = store.create_job(owner="a", spec=JobSpec.model_validate(POINTS), idempotency_key=None)
    made = store.create_generation(job_id=job.id, owner="a", params={"count": 3})
    assert store.get_generation(generation_id=made.id, owner="b") is None
    assert store.claim_generation(generation_id=made.id) is not None
    assert store.claim_generation(generation_id=made.id) is None  # a duplicate message is a no-op
    assert store.finish_generation(generation_id=made.id, result_key="generations/x.npy", media_type="x")
    assert not store.fail_generation(generation_id=made.id, error="late")  # an ended request stays as it ended
    stale = store.create_generation(job_id=job.id, owner="a", params={"count": 3})
    fresh = store.create_generation(job_id=job.id, owner="a", params={"count": 3})
    with store.session() as session, session.begin():
        old = utcnow() - timedelta(seconds=120)
        session.execute(update(Generation).where(Generation.id == stale.id).values(created_at=old))
    minute = timedelta(seconds=60)
    assert store.expire_generations(queued_for=minute, running_for=minute) == [stale.id]
    failed = store.get_generation(generation_id=stale.id, owner="a")
    assert failed is not None and failed.status == "failed" and "no generate worker" in (failed.error or "")
    assert store.claim_generation(generation_id=stale.id) is None  # its message, if it comes, does nothing
    assert store.claim_generation(generation_id=fresh.id) is not None


def _finished(store: JobStore, job_id: str, owner: str, minutes_ago: float) -> str:
    """A succeeded generate request of `owner` that finished `minutes_ago`; returns its id."""
    made = store.create_generation(job_id=job_id, owner=owner, params={"count": 1})
    assert store.claim_generation(generation_id=made.id) is not None
    assert store.finish_generation(generation_id=made.id, result_key=f"generations/{made.id}.npy", media_type="x")
    with store.session() as session, session.begin():
        when = utcnow() - timedelta(minutes=minutes_ago)
        session.execute(update(Generation).where(Generation.id == made.id).values(finished_at=when))
    return made.id


def test_results_past_the_ttl_or_past_the_owners_cap_expire_oldest_first(store: JobStore) -> None:
    spec = JobSpec.model_validate(POINTS)
    a, _ = store.create_job(owner="a", spec=spec, idempotency_key=None)
    b, _ = store.create_job(owner="b", spec=spec, idempotency_key=None)
    aged, old, newer, newest = (_finished(store, a.id, "a", minutes) for minutes in (90, 30, 20, 10))
    others = _finished(store, b.id, "b", 30)
    pending = store.create_generation(job_id=a.id, owner="a", params={"count": 1})
    hour = timedelta(hours=1)
    keys = store.expire_generation_results(older_than=hour, keep_per_owner=2)
    assert sorted(keys) == sorted(f"generations/{g}.npy" for g in (aged, old))
    rows = {g: store.get_generation(generation_id=g) for g in (aged, old, newer, newest, others, pending.id)}
    status = {g: r for g, r in rows.items() if r is not None}
    assert {g: r.status for g, r in status.items()} == {
        aged: "expired",
        old: "expired",
        newer: "succeeded",
        newest: "succeeded",
        others: "succeeded",  # another owner's results count against their own cap only
        pending.id: "queued",
    }
    assert "3600 s after it was made" in (status[aged].error or "")
    assert "at most 2 results are kept per owner" in (status[old].error or "")
    assert status[aged].result_key is None and status[old].result_key is None
    # An expired row keeps its reason, not its request (params can be ~1 MiB of codes): a GET still says 410 why.
    assert status[aged].params == {} and status[old].params == {}
    assert status[newer].params == {"count": 1} and status[pending.id].params == {"count": 1}
    assert store.expire_generation_results(older_than=hour, keep_per_owner=2) == []  # each is expired once
    only_b = store.expire_generation_results(older_than=timedelta(minutes=5), keep_per_owner=2, owner="b")
    assert only_b == [f"generations/{others}.npy"]
    newer_row = store.get_generation(generation_id=newer)
    assert newer_row is not None and newer_row.status == "succeeded"  # owner="b" left a's alone


def test_a_generations_times_are_utc_with_their_z_on_both_backends(store: JobStore) -> None:
    """SQLite hands back naive datetimes: GET /v1/generations/{id} showed them without the Z PostgreSQL's have."""
    job, _ = store.create_job(owner="a", spec=JobSpec.model_validate(POINTS), idempotency_key=None)
    made = store.create_generation(job_id=job.id, owner="a", params={"count": 1})
    assert store.claim_generation(generation_id=made.id) is not None
    assert store.finish_generation(generation_id=made.id, result_key="generations/x.npy", media_type="x")
    record = store.get_generation(generation_id=made.id)
    assert record is not None
    out = GenerationOut.of(record, Settings()).model_dump(mode="json")
    for field in ("created_at", "started_at", "finished_at", "expires_at"):
        assert out[field].endswith("Z"), (field, out[field])


def test_an_owner_has_at_most_max_active_requests_queued_or_running(store: JobStore) -> None:
    spec = JobSpec.model_validate(POINTS)
    a, _ = store.create_job(owner="a", spec=spec, idempotency_key=None)
    b, _ = store.create_job(owner="b", spec=spec, idempotency_key=None)
    first, second = (store.create_generation(job_id=a.id, owner="a", params={}, max_active=2) for _ in range(2))
    with pytest.raises(TooManyGenerations) as refused:
        store.create_generation(job_id=a.id, owner="a", params={}, max_active=2)
    assert refused.value.active == 2
    store.create_generation(job_id=b.id, owner="b", params={}, max_active=2)  # another owner's count is their own
    assert store.claim_generation(generation_id=first.id) is not None  # running still counts
    with pytest.raises(TooManyGenerations):
        store.create_generation(job_id=a.id, owner="a", params={}, max_active=2)
    assert store.fail_generation(generation_id=second.id, error="x")  # an ended one frees its place
    store.create_generation(job_id=a.id, owner="a", params={}, max_active=2)

    # Concurrent requests cannot all pass the count: exactly max_active of them are stored.
    c, _ = store.create_job(owner="c", spec=spec, idempotency_key=None)
    start = threading.Barrier(10)
    outcomes: list[bool] = []

    def create() -> None:
        start.wait()
        try:
            store.create_generation(job_id=c.id, owner="c", params={}, max_active=3)
            outcomes.append(True)
        except TooManyGenerations:
            outcomes.append(False)

    threads = [threading.Thread(target=create) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False] * 7 + [True] * 3


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"codes": {"continuous": [1e308]}}, ("codes", "continuous", 0)),
        ({"codes": {"continuous": [0.5, float("nan")]}}, ("codes", "continuous", 1)),
        ({"codes": {"continuous": [[0.5, 0.5], [0.5, -float("inf")]]}}, ("codes", "continuous", 1, 1)),
        ({"codes": {"continuous": [10.001]}}, ("codes", "continuous", 0)),
        ({"codes": {"continuous": [10**400]}}, ("codes", "continuous", 0)),
        ({"labels": [1, 2**70]}, ("labels", 1)),
        ({"labels": -1}, ("labels",)),
        ({"codes": {"continuous": [10, -10.0]}}, None),  # the bound itself is allowed
        ({"codes": {"continuous": [[2.0, -2.0]]}}, None),
        ({"ema": "no"}, ("ema",)),  # lax mode read "no" as false and 1 as true
        ({"ema": 1}, ("ema",)),
        ({"ema": False}, None),
    ],
)
def test_a_request_number_out_of_bounds_is_refused_at_its_path(body: dict[str, Any], loc: tuple[Any, ...]) -> None:
    try:
        GenerateRequest.model_validate({"count": 1, **body})
    except ValidationError as exc:
        assert [error["loc"] for error in exc.errors()] == [loc], exc.errors()
    else:
        assert loc is None, body


INFOGAN = JobSpec.model_validate({**POINTS, "loss": {"name": "infogan", "categorical_codes": [4, 3]}})


@pytest.mark.parametrize(
    ("codes", "field"),
    [
        ({"categorical": 2, "continuous": [0.5, -0.5]}, None),
        ({"categorical": [[1, 2], [3, 0]]}, None),
        ({"categorical": 4}, "codes.categorical"),
        ({"categorical": [[1, 3], [0, 0]]}, "codes.categorical.0.1"),
        ({"categorical": [1, 2, 3]}, "codes.categorical"),
        ({"continuous": [0.5]}, "codes.continuous"),
        ({"continuous": [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]}, "codes.continuous"),
    ],
)
def test_infogan_codes_are_checked_against_the_spec(codes: dict[str, Any], field: str | None) -> None:
    request = GenerateRequest.model_validate({"count": 2, "codes": codes})
    problems = check_against_job(request, INFOGAN, BUILTIN_DATASETS["ring8"], (2,))
    assert [p.field for p in problems] == ([field] if field else []), problems


def test_up_restarts_a_generate_worker_that_dies() -> None:
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        started.append(subprocess.Popen(["true"]))
        return started[-1]

    kept = Kept("generate worker", start)
    kept.start()
    deadline = time.monotonic() + 10
    while len(started) < 2:  # it died young: restarted after 1 s (a crash loop backs off: 1 s, 2 s, 4 s, ...)
        assert time.monotonic() < deadline, started
        kept.keep()
        time.sleep(0.05)
    assert kept.restarts == 1 and kept.restart_at is None
