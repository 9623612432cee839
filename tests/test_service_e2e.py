"""The whole path for real: HTTP to uvicorn, a Celery worker process, PostgreSQL + Redis or SQLite + file broker."""

from __future__ import annotations

import io
import json
import re
import time
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load as load_safetensors

from models.queue import make_celery, send_train
from models.settings import Settings
from models.spec import JobSpec
from tests.service import Service, wait_for
from worker.gan import build_gan, load_builtin


def small_spec(loss: str, steps: int = 200, **training: object) -> dict[str, object]:
    return {
        "name": f"e2e-{loss}",
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp", "hidden": 64, "depth": 2},
        "loss": {"name": loss},
        "training": {"steps": steps, "batch_size": 64, **training},
        "every": {"metrics": 10, "samples": 100, "checkpoint": 100},
        "tags": {"suite": "e2e"},
    }


@pytest.mark.parametrize("loss", ["nsgan", "wgan-gp"])
def test_job_trains_and_its_results_come_back(service: Service, loss: str) -> None:
    with service.client() as client:
        created = client.post("/v1/jobs", json=small_spec(loss))
        assert created.status_code == 201, created.text
        job = created.json()
        assert job["status"] == "queued"
        assert job["spec"]["loss"]["n_critic"] == (5 if loss == "wgan-gp" else 1)  # the paper's default, filled in

        done = wait_for(client, job["id"], ("succeeded", "failed"), timeout=180)
        assert done["status"] == "succeeded", (done, service.logs())
        assert done["progress"]["step"] == 200 and done["attempt"] == 1
        assert done["started_at"] and done["finished_at"]

        metrics = client.get(f"/v1/jobs/{job['id']}/metrics").json()["series"]
        assert {"loss_g", "loss_d", "d_real", "d_fake", "grad_norm_g", "grad_norm_d"} <= set(metrics)
        assert metrics["loss_d"]["steps"] == list(range(10, 201, 10))
        assert all(np.isfinite(metrics["loss_d"]["values"]))
        if loss == "wgan-gp":
            assert "gradient_penalty" in metrics and "wasserstein" in metrics
        assert {"modes_covered", "hq_fraction"} <= set(metrics)

        samples = client.get(f"/v1/jobs/{job['id']}/samples").json()["samples"]
        assert [s["step"] for s in samples] == [100, 200]
        png = client.get(samples[-1]["png_url"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(png.content)).size == (512, 512)
        npy = client.get(samples[-1]["npy_url"])
        points = np.load(io.BytesIO(npy.content), allow_pickle=False)
        assert points.shape == (2500, 2) and points.dtype == np.float32

        checkpoints = client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["checkpoints"]
        assert [c["step"] for c in checkpoints] == [100, 200]
        latest = client.get(f"/v1/jobs/{job['id']}/checkpoints/latest")
        assert latest.status_code == 200
        assert checkpoints[-1]["size_bytes"] == len(latest.content)  # the download's size, not the resume state's
        weights = load_safetensors(latest.content)
        with safe_open(_tmp_file(service, latest.content), framework="pt") as handle:
            metadata = handle.metadata()
        assert metadata["step"] == "200" and json.loads(metadata["spec"])["loss"]["name"] == loss

        # The downloaded weights load into the network the spec describes and reproduce the snapshot.
        spec = JobSpec.model_validate(done["spec"])
        gan = build_gan(spec, load_builtin("ring8").info, torch.device("cpu"))
        generator = {k.removeprefix("generator."): v for k, v in weights.items() if k.startswith("generator.")}
        gan.generator.load_state_dict(generator)
        assert gan.ema is not None  # EMA of G is on by default: snapshots come from its copy, saved beside G
        ema = {k.removeprefix("generator_ema."): v for k, v in weights.items() if k.startswith("generator_ema.")}
        gan.ema.load_state_dict(ema)
        state = torch.load(
            io.BytesIO(client.get(f"/v1/jobs/{job['id']}/checkpoints/200?file=state").content), weights_only=True
        )
        regenerated = gan.generate({k: v for k, v in state["fixed"].items()}).numpy()
        np.testing.assert_allclose(regenerated, points, rtol=1e-4, atol=1e-5)


def _tmp_file(service: Service, content: bytes) -> str:
    path = service.data_dir / f"download-{time.monotonic_ns()}.safetensors"
    path.write_bytes(content)
    return str(path)


def test_cancel_stops_a_running_job_and_keeps_its_checkpoint(service: Service) -> None:
    with service.client() as client:
        spec = small_spec("nsgan", steps=40_000)
        spec["every"] = {"metrics": 10, "samples": 40_000, "checkpoint": 200}
        job = client.post("/v1/jobs", json=spec).json()
        deadline = time.monotonic() + 60
        while client.get(f"/v1/jobs/{job['id']}").json()["progress"]["step"] < 250:
            assert time.monotonic() < deadline, service.logs()
            time.sleep(0.2)
        asked = time.monotonic()
        cancelling = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancelling.status_code == 202 and cancelling.json()["status"] == "cancelling"
        done = wait_for(client, job["id"], ("cancelled",), timeout=30)
        assert time.monotonic() - asked < 5, "cancel must take effect within a couple of seconds"
        checkpoints = client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["checkpoints"]
        assert checkpoints and checkpoints[-1]["step"] == done["progress"]["step"]
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409


def test_a_duplicate_broker_message_runs_the_job_once(service: Service) -> None:
    broker = make_celery(Settings(**_settings_from_env(service.env)))
    with service.client() as client:
        job = client.post("/v1/jobs", json=small_spec("nsgan", steps=100)).json()
        send_train(broker, job["id"])
        send_train(broker, job["id"])
        done = wait_for(client, job["id"], ("succeeded", "failed"), timeout=120)
        assert done["status"] == "succeeded" and done["attempt"] == 1
        events = _events(client, job["id"])
        claims = [e for e in events if e["event"] == "status" and e["data"]["to"] == "running"]
        assert len(claims) == 1, events
        # A message for a finished job is dropped too.
        send_train(broker, job["id"])
        time.sleep(2)
        assert client.get(f"/v1/jobs/{job['id']}").json()["attempt"] == 1


def _settings_from_env(env: dict[str, str]) -> dict[str, Any]:
    return {k.removeprefix("GANFORGE_").lower(): v for k, v in env.items() if k.startswith("GANFORGE_")}


def _events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """Read the job's whole SSE stream (it ends after the final status)."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("id: "):
                current = {"id": int(line[4:])}
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
                events.append(current)
    return events


def test_events_resume_after_last_event_id(service: Service) -> None:
    with service.client() as client:
        job = client.post("/v1/jobs", json=small_spec("nsgan", steps=100)).json()
        wait_for(client, job["id"], ("succeeded",), timeout=120)
        events = _events(client, job["id"])
        ids = [e["id"] for e in events]
        assert ids == list(range(1, len(ids) + 1))
        assert {"status", "metrics", "sample", "checkpoint"} <= {e["event"] for e in events}
        middle = ids[len(ids) // 2]
        with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": str(middle)}) as response:
            resumed = [int(line[4:]) for line in response.iter_lines() if line.startswith("id: ")]
        assert resumed == ids[ids.index(middle) + 1 :]


def test_warm_start_from_another_jobs_checkpoint(service: Service) -> None:
    with service.client() as client:
        # Without EMA: a warm start takes G's weights, which then are what the snapshots show.
        source_spec = small_spec("nsgan", steps=100)
        source_spec["training"] = {**source_spec["training"], "ema_decay": None}
        source = client.post("/v1/jobs", json=source_spec).json()
        assert wait_for(client, source["id"], ("succeeded", "failed"))["status"] == "succeeded"
        # One step at a vanishing learning rate: the warm-started G must be the source's G.
        spec = small_spec("nsgan", steps=1)
        spec["training"] = {**spec["training"], "ema_decay": None}
        spec["loss"] = {"name": "nsgan", "lr_g": 1e-12, "lr_d": 1e-12}
        spec["init_from"] = {"job": source["id"], "step": "latest"}
        spec["every"] = {"metrics": 1, "samples": 1, "checkpoint": 1}
        warm = client.post("/v1/jobs", json=spec)
        assert warm.status_code == 201, warm.text
        assert wait_for(client, warm.json()["id"], ("succeeded", "failed"))["status"] == "succeeded"
        before = np.load(io.BytesIO(client.get(f"/v1/jobs/{source['id']}/samples/100.npy").content))
        after = np.load(io.BytesIO(client.get(f"/v1/jobs/{warm.json()['id']}/samples/1.npy").content))
        np.testing.assert_allclose(after, before, atol=1e-5)

        for bad, field in (
            ({"job": "nope"}, "init_from.job"),
            ({"job": source["id"], "step": 7}, "init_from.step"),
        ):
            response = client.post("/v1/jobs", json={**spec, "init_from": bad})
            assert response.status_code == 422 and response.json()["error"]["details"][0]["field"] == field
        other = {**spec, "architecture": {"name": "mlp", "hidden": 32, "depth": 2}}
        response = client.post("/v1/jobs", json=other)
        assert response.status_code == 422 and "architecture differs" in response.text


def _prometheus_value(service: Service, name: str) -> float:
    import httpx

    for line in httpx.get(f"{service.url}/metrics", headers={"Authorization": "Bearer key-a"}).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_events_arrive_live_and_many_followers_share_one_reader(service: Service) -> None:
    import threading
    from datetime import datetime

    with service.client() as client:
        spec = small_spec("nsgan", steps=1_000_000)
        spec["every"] = {"metrics": 10, "samples": 100_000, "checkpoint": 100_000}
        job = client.post("/v1/jobs", json=spec).json()
        wait_for(client, job["id"], ("running",))
        delays: list[tuple[float, float]] = []  # (received at, delay since the worker wrote it)
        stop = threading.Event()

        def follow(record: bool) -> None:
            with service.client() as follower, follower.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
                for line in response.iter_lines():
                    if stop.is_set():
                        return
                    if record and line.startswith("data: ") and '"first_step"' in line:
                        sent = datetime.fromisoformat(json.loads(line[6:])["time"])
                        delays.append((time.monotonic(), time.time() - sent.timestamp()))

        def reads_per_second(followers: int) -> float:
            stop.clear()
            threads = [threading.Thread(target=follow, args=(i == 0,), daemon=True) for i in range(followers)]
            for thread in threads:
                thread.start()
            time.sleep(1.5)  # everyone has caught up
            window.append(time.monotonic())
            before = _prometheus_value(service, "ganforge_event_store_reads_total")
            time.sleep(3)
            rate = (_prometheus_value(service, "ganforge_event_store_reads_total") - before) / 3
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
            return rate

        window: list[float] = []
        one = reads_per_second(1)
        live_delays = [delay for received, delay in delays if received > window[0]]
        many = reads_per_second(10)
        client.post(f"/v1/jobs/{job['id']}/cancel")
        wait_for(client, job["id"], ("cancelled",))
    assert live_delays and max(live_delays) < 1.0, live_delays
    assert many <= one * 1.5 + 1, (one, many)


def test_a_diverging_loss_fails_the_job_with_the_step_and_keeps_the_last_good_checkpoint(service: Service) -> None:
    with service.client() as client:
        spec = small_spec("lsgan", steps=50)
        spec["loss"] = {
            "name": "lsgan",
            "optimizer": "rmsprop",
            "lr_g": 10.0,
            "lr_d": 10.0,
        }  # blows up in a step or two
        spec["every"] = {"metrics": 1, "samples": 50, "checkpoint": 1}
        job = client.post("/v1/jobs", json=spec).json()
        done = wait_for(client, job["id"], ("succeeded", "failed"))
        assert done["status"] == "failed", done
        match = re.search(r"(\w+) became (nan|inf|-inf) at step (\d+)", done["error"])
        assert match, done["error"]
        step = int(match.group(3))
        checkpoints = [c["step"] for c in client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["checkpoints"]]
        assert checkpoints == list(range(1, step))
        expected = f"last good checkpoint at step {step - 1}" if step > 1 else "no checkpoint was written"
        assert expected in done["error"]


def test_a_divergence_from_step_1_is_reported_at_step_1_and_nothing_non_finite_is_published(
    service: Service,
) -> None:
    # Fault 7, the input: NaN from step 1; metrics every 200 (never read before the end), samples every 20.
    spec = small_spec("lsgan", steps=100)
    spec["loss"] = {"name": "lsgan", "lr_g": 1e30, "lr_d": 1e30}
    spec["every"] = {"metrics": 200, "samples": 20}
    with service.client() as client:
        job = client.post("/v1/jobs", json=spec).json()
        done = wait_for(client, job["id"], ("succeeded", "failed"))
        assert done["status"] == "failed", done
        assert re.fullmatch(r"\w+ became (nan|inf|-inf) at step 1; no checkpoint was written", done["error"]), done
        samples = client.get(f"/v1/jobs/{job['id']}/samples").json()["samples"]
        for sample in samples:  # none is expected; any that is there must be finite
            points = np.load(io.BytesIO(client.get(sample["npy_url"]).content), allow_pickle=False)
            assert np.isfinite(points).all(), sample
        assert samples == []
        assert client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["checkpoints"] == []
        metrics = client.get(f"/v1/jobs/{job['id']}/metrics").json()["series"]
        assert all(np.isfinite(series["values"]).all() for series in metrics.values()), metrics
