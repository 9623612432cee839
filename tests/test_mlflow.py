"""MLflow mirroring (issue 13) against a real `mlflow server` (SQLite backend store, artifacts served from a temp dir)
that this module starts once, and a real ganforge deployment that mirrors every job to it
(GANFORGE_MLFLOW_TRACKING_URI).

One backend for the mirrored jobs (the embedded default: SQLite and the file-system broker): the mirror touches the
job store only through its `integration` events, whose two store calls are tested on both backends here, and a
second deployment with a second training job would cost the suite another 10-25 s. The server starts while the
deployment does (its start-up, ~10-20 s, is the slow part).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from models.settings import Settings
from models.store import JobStore
from models.tracking import tracking_problems, tracking_target, without_credentials
from tests.conftest import api_and_worker
from tests.service import TINY_SPEC, Service, free_port, wait_for
from worker.mlflow_mirror import MAX_PARAM_VAL_LENGTH, flat_params

MLFLOW = str(Path(sys.executable).parent / "mlflow")


class MlflowServer:
    """`mlflow server` on a free port, its store and artifacts under `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "mlflow.log"
        # The server refuses a Host header other than its own by default (DNS-rebinding guard): ours is 127.0.0.1.
        self.process = subprocess.Popen(
            [
                MLFLOW,
                "server",
                "--backend-store-uri",
                f"sqlite:///{folder / 'mlflow.db'}",
                "--artifacts-destination",
                str(folder / "artifacts"),
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            cwd=folder,
            # No job-execution consumers (MLflow 3's huey processes, a dozen threads each): tracking only needs the
            # server, and they slowed its start on a 2-core machine.
            env={
                **os.environ,
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                "MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS": "false",
            },
            stdout=open(self.log, "wb"),  # noqa: SIM115 - the process owns it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("mlflow server did not start:\n" + self.log.read_text()[-4000:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def mirrored(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, MlflowServer, str]]:
    """(a deployment mirroring every job to a real MLflow server, the server, a closed port's URL it may also use),
    on each backend."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    try:
        with api_and_worker(
            request.param,
            tmp_path_factory.mktemp(f"ganforge-mlflow-{request.param}"),
            GANFORGE_MLFLOW_TRACKING_URI=server.url,
            GANFORGE_MLFLOW_ALLOWED_URIS=down,
            GANFORGE_MLFLOW_EXPERIMENT="ganforge-tests",
        ) as deployment:
            server.wait_ready()
            yield deployment, server, down
    finally:
        server.stop()


def integration_events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """The `integration` events of a finished job (its event stream ends after the last one)."""
    with connect_sse(client, "GET", f"/v1/jobs/{job_id}/events") as source:
        return [json.loads(event.data) for event in source.iter_sse() if event.event == "integration"]


def wait_events(client: httpx.Client, job_id: str, done: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Poll the job's integration events until `done(events)`; the mirror writes them from its own thread."""
    deadline = time.monotonic() + timeout
    while True:
        events = integration_events(client, job_id)
        if done(events) or time.monotonic() > deadline:
            return events
        time.sleep(0.3)


def seconds(job: dict[str, Any]) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["created_at"])).total_seconds()


@pytest.mark.slow
def test_a_job_appears_in_mlflow_with_its_spec_metrics_samples_checkpoint_status_and_tags(
    mirrored: tuple[Service, MlflowServer, str], tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    service, server, _down = mirrored
    with service.client() as client:
        spec = {**TINY_SPEC, "name": "mirrored", "tags": {"team": "vision"}}
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        job = wait_for(client, job_id, ("succeeded", "failed"))
        assert job["status"] == "succeeded", job
        events = wait_events(client, job_id, lambda found: any(e.get("run_id") for e in found))
        run_id = next(e["run_id"] for e in events if e.get("run_id"))
        assert not [e for e in events if "problem" in e], events

        mlflow = MlflowClient(tracking_uri=server.url)
        deadline = time.monotonic() + 60
        while (run := mlflow.get_run(run_id)).info.status != "FINISHED" and time.monotonic() < deadline:
            time.sleep(0.3)
        assert run.info.status == "FINISHED"
        assert run.info.run_name == "mirrored"
        assert mlflow.get_experiment(run.info.experiment_id).name == "ganforge-tests"
        tags = run.data.tags
        assert (tags["ganforge.job_id"], tags["ganforge.owner"], tags["ganforge.loss"], tags["ganforge.attempt"]) == (
            job_id,
            "team-a",
            "nsgan",
            "1",
        )
        # params: the whole stored spec, defaults resolved, one dotted key per leaf
        assert run.data.params == flat_params(job["spec"])
        assert run.data.params["training.steps"] == "5"
        assert run.data.params["tags.team"] == "vision"
        assert "loss.lr_g" in run.data.params  # a default the spec left out

        # metrics: every series with the steps the service recorded
        series = client.get(f"/v1/jobs/{job_id}/metrics").json()["series"]
        assert series
        for name, points in series.items():
            history = mlflow.get_metric_history(run_id, name)
            assert sorted(m.step for m in history) == points["steps"], name
            assert sorted(m.value for m in history) == pytest.approx(sorted(points["values"]), rel=1e-5), name

        # artifacts: the sample picture and the final checkpoint's weights, byte for byte
        assert [a.path for a in mlflow.list_artifacts(run_id, "samples")] == ["samples/000000005.png"]
        assert [a.path for a in mlflow.list_artifacts(run_id, "checkpoint")] == ["checkpoint/000000005.safetensors"]
        png = Path(mlflow.download_artifacts(run_id, "samples/000000005.png", str(tmp_path)))
        assert png.read_bytes() == client.get(f"/v1/jobs/{job_id}/samples/5.png").content
        weights = Path(mlflow.download_artifacts(run_id, "checkpoint/000000005.safetensors", str(tmp_path)))
        assert weights.read_bytes() == client.get(f"/v1/jobs/{job_id}/checkpoints/latest").content


@pytest.mark.slow
def test_a_tracking_server_that_is_down_neither_fails_nor_slows_the_job_and_the_events_say_so(
    mirrored: tuple[Service, MlflowServer, str],
) -> None:
    service, server, down = mirrored
    with service.client() as client:
        # the same job mirrored to the live server, as the yardstick (the mirror's client is imported by now)
        live = wait_for(client, client.post("/v1/jobs", json=TINY_SPEC).json()["id"], ("succeeded", "failed"))
        spec = {**TINY_SPEC, "mlflow": {"tracking_uri": down, "experiment": "nowhere"}}
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        job = wait_for(client, job_id, ("succeeded", "failed"))
        assert job["status"] == "succeeded", job
        assert seconds(job) < seconds(live) + 10, (seconds(job), seconds(live))
        events = wait_events(client, job_id, lambda found: len(found) >= 2)
        problems = [e for e in events if "problem" in e]
        assert problems and all(e["tracking_uri"] == down for e in problems), events
        assert "failed a request" in problems[0]["problem"]
        assert len(problems) <= 2, events  # reported once, then one summary; not per point
        assert problems[-1].get("unsent") or problems[-1].get("dropped") or problems[-1]["run_id"] is None, events
        assert not any(e.get("run_id") for e in events), events
    assert server.process.poll() is None


def test_a_spec_may_name_only_a_tracking_server_the_service_allows(
    mirrored: tuple[Service, MlflowServer, str],
) -> None:
    service, _server, _down = mirrored
    with service.client() as client:
        spec = {**TINY_SPEC, "mlflow": {"tracking_uri": "http://169.254.169.254/latest"}}
        response = client.post("/v1/jobs", json=spec)
        assert response.status_code == 422, response.text
        fields = [detail.get("field") or detail.get("loc") for detail in response.json()["error"]["details"]]
        assert any("mlflow.tracking_uri" in str(field) or "tracking_uri" in str(field) for field in fields), fields
        assert "not a tracking server this service may call" in response.text


# ----------------------------------------------------------------------------- no server needed


def test_flat_params_are_dotted_keys_mlflow_accepts_with_values_within_its_limit() -> None:
    params = flat_params(
        {
            "training": {"steps": 5, "betas": [0.5, 0.9], "ema_decay": None},
            "tags": {"a/b c?": "x" * (MAX_PARAM_VAL_LENGTH + 10)},
            "every": {},
            "name": "n",
        }
    )
    assert params == {
        "training.steps": "5",
        "training.betas": "[0.5, 0.9]",
        "training.ema_decay": "null",
        "tags.a_b c_": "x" * MAX_PARAM_VAL_LENGTH,
        "every": "{}",
        "name": "n",
    }


def test_which_tracking_server_a_job_uses() -> None:
    service = Settings(mlflow_tracking_uri="http://mlflow:5000/", mlflow_allowed_uris=["http://other:5000"])
    assert tracking_target(None, Settings()) is None
    target = tracking_target(None, service)
    assert target is not None and (target.uri, target.experiment) == ("http://mlflow:5000", "ganforge")
    target = tracking_target({"tracking_uri": "http://other:5000/", "experiment": "e"}, service)
    assert target is not None and (target.uri, target.experiment) == ("http://other:5000", "e")
    assert tracking_problems({"tracking_uri": "http://elsewhere"}, service)[0][0] == ("mlflow", "tracking_uri")
    assert tracking_target({"tracking_uri": "http://elsewhere"}, service) is None
    assert tracking_problems({"experiment": "e"}, Settings())[0][0] == ("mlflow", "tracking_uri")
    assert without_credentials("https://user:secret@mlflow:5000/x") == "https://mlflow:5000/x"


def test_integration_events_are_written_and_read_per_integration(store: JobStore) -> None:
    from models.spec import JobSpec

    job, _created = store.create_job(owner="o", spec=JobSpec.model_validate(TINY_SPEC), idempotency_key=None)
    assert store.add_integration_event(job_id="no-such-job", data={"integration": "mlflow"}) is None
    store.add_integration_event(job_id=job.id, data={"integration": "mlflow", "run_id": "r1"})
    store.add_integration_event(job_id=job.id, data={"integration": "other", "run_id": "x"})
    store.add_integration_event(job_id=job.id, data={"integration": "mlflow", "run_id": "r2"})
    assert [e["run_id"] for e in store.integration_events(job_id=job.id, integration="mlflow")] == ["r1", "r2"]
