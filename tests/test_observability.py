"""Prometheus and structured logs (issue 13), against a real Prometheus (Debian's /usr/bin/prometheus; .ci/run
installs it): it scrapes a deployment's API (with a key) and its worker's metrics port while a small job trains,
and its HTTP API is asked for the series. The deployment logs JSON (GANFORGE_LOG_FORMAT=json); every worker line
about the job must be a JSON object carrying job_id, attempt and worker. deploy/prometheus.yml and
deploy/grafana/ganforge.json may name only metrics the service really exports, and promtool must accept the first.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from models.spec import JobSpec
from models.store import JobStore
from models.store.figures import OTHER_QUEUE, QueueFigures, bounded, queue_figures
from tests.conftest import api_and_worker
from tests.service import KEYS, ROOT, TINY_SPEC, Service, free_port, wait_for

PROMETHEUS, PROMTOOL = Path("/usr/bin/prometheus"), Path("/usr/bin/promtool")
DASHBOARD, SCRAPE_CONFIG = ROOT / "deploy/grafana/ganforge.json", ROOT / "deploy/prometheus.yml"
KEY = next(iter(KEYS))
# Enough steps for a rate (the worker's steps/s needs two), few enough to train in about a second.
SPEC: dict[str, Any] = {**TINY_SPEC, "training": {"steps": 200, "batch_size": 8}, "every": {"metrics": 50}}


@dataclass
class Observed:
    service: Service
    worker_port: int
    prometheus: str
    job_id: str


# Both stacks, as issue 13 asks of each real component (a deployment of its own costs 15-60 s a backend).
@pytest.fixture(scope="module", params=["postgres", "embedded"])
def observed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    """A deployment logging JSON with its worker's metrics port on, a job trained there, and a Prometheus scraping
    both every second."""
    assert PROMETHEUS.exists(), f"{PROMETHEUS} is missing: apt-get install prometheus (.ci/run does)"
    folder = tmp_path_factory.mktemp(f"observe-{request.param}")
    worker_port = free_port()
    settings = {"GANFORGE_LOG_FORMAT": "json", "GANFORGE_WORKER_METRICS_PORT": str(worker_port)}
    with api_and_worker(request.param, folder, **settings) as service:
        with start_prometheus(tmp_path_factory.mktemp("prometheus"), service.port, worker_port) as prometheus:
            with service.client() as client:
                job = client.post("/v1/jobs", json=SPEC)
                assert job.status_code == 201, job.text
                done = wait_for(client, job.json()["id"], ("succeeded", "failed"), timeout=120)
                assert done["status"] == "succeeded", (done, service.logs())
            yield Observed(service, worker_port, prometheus, done["id"])


class start_prometheus:  # noqa: N801 - used as a context manager, like open()
    """A Prometheus on a free port scraping the API (with a key) and a worker every second, its data in `folder`."""

    def __init__(self, folder: Path, api_port: int, worker_port: int) -> None:
        self.folder, self.port = folder, free_port()
        (folder / "key").write_text(KEY)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {
                    "job_name": "ganforge-api",
                    "authorization": {"type": "Bearer", "credentials_file": str(folder / "key")},
                    "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}],
                },
                {"job_name": "ganforge-worker", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
            ],
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> str:
        log = open(self.folder / "prometheus.log", "wb")  # noqa: SIM115 - the process owns it
        self.process = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={self.folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self.url

    def __exit__(self, *_exc: object) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


def query(prometheus: str, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The instant vector Prometheus answers for `promql`, waited for until it is not empty (scrapes come every
    second; the API's job figures are read from the store every 5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
            assert answer["status"] == "success", answer
            if answer["data"]["result"]:
                return list(answer["data"]["result"])
        except httpx.TransportError:
            pass  # still starting
        assert time.monotonic() < deadline, f"Prometheus has no {promql} after {timeout} s"
        time.sleep(0.25)


@pytest.mark.slow  # the `observed` deployment
def test_prometheus_scrapes_the_api_and_the_worker(observed: Observed) -> None:
    job_id, prometheus = observed.job_id, observed.prometheus
    # Both targets up (each answers its first scrape in its own time: wait for the two, not the first).
    up = query(prometheus, 'count by (job) (up{job=~"ganforge-api|ganforge-worker"} == 1)')
    deadline = time.monotonic() + 30
    while len(up) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        up = query(prometheus, 'count by (job) (up{job=~"ganforge-api|ganforge-worker"} == 1)')
    assert {series["metric"]["job"] for series in up} == {"ganforge-api", "ganforge-worker"}, up
    # Jobs by status and queue, read through the key: the trained job is counted in the default queue.
    succeeded = query(prometheus, 'ganforge_jobs{status="succeeded"} >= 1')
    assert [series["metric"]["queue"] for series in succeeded] == [observed.service.env["GANFORGE_QUEUE"]]
    query(prometheus, "ganforge_queue_depth == 0")
    query(prometheus, "ganforge_queue_oldest_age_seconds == 0")
    # The fixture's polls of the job: counted and timed under the route's template, never its path.
    polls = query(prometheus, 'ganforge_http_request_duration_seconds_count{route="/v1/jobs/{job_id}"}')
    assert {(s["metric"]["method"], s["metric"]["status"]) for s in polls} >= {("GET", "200")}, polls
    query(prometheus, 'ganforge_http_requests_total{route="/v1/jobs",method="POST",status="201"} == 1')
    # The worker's rate for that job, and its step-time histogram.
    rate = query(prometheus, f'ganforge_worker_steps_per_second{{job_id="{job_id}"}} > 0')
    assert len(rate) == 1, rate
    steps = query(prometheus, "ganforge_worker_step_seconds_count")
    assert float(steps[0]["value"][1]) >= SPEC["training"]["steps"] - 1, steps
    query(prometheus, f'ganforge_worker_job{{job_id="{job_id}",attempt="1"}} == 0')  # ended
    query(prometheus, 'ganforge_worker_jobs_total{outcome="succeeded"} == 1')
    query(prometheus, 'ganforge_worker_store_write_seconds_count{operation="record_progress"} > 0')
    query(prometheus, "ganforge_worker_checkpoint_write_seconds_count > 0")


@pytest.mark.slow  # the `observed` deployment
def test_request_labels_stay_bounded(observed: Observed) -> None:
    """Unknown ids, paths and methods add no series: the label is the template (or `unmatched`, `other`)."""
    with observed.service.client() as client:
        for number in range(3):
            assert client.get(f"/v1/jobs/no-such-job-{number}").status_code == 404
            assert client.get(f"/nowhere/{number}").status_code == 404
        assert httpx.get(f"{observed.service.url}/v1/jobs/{observed.job_id}").status_code == 401  # the gate's
        # A method outside the usual seven that uvicorn's parser passes on (it refuses made-up ones itself).
        assert client.request("PROPFIND", "/v1/jobs").status_code == 405
        text = client.get("/metrics").text
    http_lines = [line for line in text.splitlines() if line.startswith("ganforge_http_")]
    assert not [line for line in http_lines if "no-such-job" in line or "nowhere" in line or observed.job_id in line]
    assert any('route="/v1/jobs/{job_id}",status="404"' in line for line in http_lines), http_lines
    assert any('route="/v1/jobs/{job_id}",status="401"' in line for line in http_lines), http_lines
    assert any('route="unmatched",status="404"' in line for line in http_lines), http_lines
    assert any('method="other",route="/v1/jobs"' in line for line in http_lines), http_lines
    assert not [line for line in http_lines if "PROPFIND" in line]


@pytest.mark.slow  # the `observed` deployment
def test_a_scrape_storm_reads_the_store_rarely(observed: Observed) -> None:
    def reads() -> float:
        with observed.service.client() as client:
            text = client.get("/metrics").text
        return float(
            next(line for line in text.splitlines() if line.startswith("ganforge_metrics_store_reads_total")).split()[
                -1
            ]
        )

    before, started = reads(), time.monotonic()
    for _ in range(15):
        reads()
    elapsed = time.monotonic() - started
    # At most one read per 5 s window the storm touched (Prometheus's own scrapes share them).
    assert reads() - before <= elapsed / 5 + 2, (before, elapsed)


def exported_names(exposition: str) -> set[str]:
    """Every sample name an exposition declares (`# TYPE`, so a labelled metric with no sample yet counts) or holds:
    a counter `x` as `x_total`, a histogram as `x_bucket`, `x_count` and `x_sum`."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("", "_count", "_sum")}
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _hash, _type, name, kind = line.split(maxsplit=3)
            names |= {name + suffix for suffix in suffixes.get(kind, ("",))}
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


@pytest.mark.slow  # the `observed` deployment
def test_the_dashboard_and_the_scrape_config_name_what_the_service_exports(observed: Observed, tmp_path: Path) -> None:
    with observed.service.client() as client:
        api = client.get("/metrics")
    worker = httpx.get(f"http://127.0.0.1:{observed.worker_port}/metrics")
    assert api.status_code == worker.status_code == 200
    exported = exported_names(api.text) | exported_names(worker.text)
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    scrape_config = SCRAPE_CONFIG.read_text()
    referenced = {name for text in [*expressions, scrape_config] for name in re.findall(r"\bganforge_\w+", text)}
    assert referenced, expressions
    assert referenced <= exported, sorted(referenced - exported)
    # Every panel of the list is there; their `job` labels are the scrape config's job names.
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for wanted in ("jobs by status", "queue depth", "wait", "request rate", "latency p95", "steps/s", "webhook"):
        assert wanted in titles, (wanted, titles)
    jobs = {job["job_name"] for job in yaml.safe_load(scrape_config)["scrape_configs"]}
    assert {job for expr in expressions for job in re.findall(r'job="([^"]+)"', expr)} <= jobs
    # Prometheus's own checker accepts the shipped config (with the key file it names next to it).
    shutil.copy(SCRAPE_CONFIG, tmp_path / "prometheus.yml")
    (tmp_path / "ganforge.key").write_text(KEY)
    checked = subprocess.run([str(PROMTOOL), "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.slow  # the `observed` deployment
def test_every_worker_line_about_the_job_is_json_with_its_fields(observed: Observed) -> None:
    job_id = observed.job_id
    lines = (observed.service.data_dir / "worker-0.log").read_text().splitlines()
    records = []
    for line in lines:
        if line.startswith("{"):
            records.append(json.loads(line))
        else:
            # Python's warnings (Celery's about running as root) are printed, not logged; they never name a job.
            assert job_id not in line, line
    assert not any("-------------- " in line for line in lines), lines[:20]  # Celery's banner is left out
    messages = [record["message"] for record in records]
    claimed = next(i for i, m in enumerate(messages) if m.startswith(f"job {job_id}: claimed by w-"))
    ended = messages.index(f"job {job_id}: succeeded")
    trainer = records[claimed]["process"]
    # Every line the pool process logged while it had the job (its lease keeper's thread's too).
    during = [record for record in records[claimed : ended + 1] if record["process"] == trainer]
    for record in during:
        assert record["job_id"] == job_id and record["attempt"] == 1, record
        assert record["worker"] == records[claimed]["worker"] and record["worker"].startswith("w-"), record
        assert record["level"] and record["time"] and record["logger"], record
    # The API's lines are JSON too (uvicorn's own included).
    api_lines = (observed.service.data_dir / "api.log").read_text().splitlines()
    assert api_lines and all(json.loads(line)["message"] is not None for line in api_lines), api_lines[:5]


def test_queue_figures_count_by_status_and_queue(store: JobStore) -> None:
    """The store's figures for /metrics on both stores: by status and queue, depth, and the oldest wait."""
    spec = {**TINY_SPEC}
    for queue in ("gpu", "gpu", None):
        resources = {"resources": {"queue": queue}} if queue else {}
        store.create_job(owner="a", spec=JobSpec.model_validate({**spec, **resources}), idempotency_key=None)
    time.sleep(0.05)
    figures = queue_figures(store)
    default = next(queue for (status, queue) in figures.jobs if queue != "gpu")
    assert figures.jobs == {("queued", "gpu"): 2, ("queued", default): 1}
    assert figures.depth == {"gpu": 2, default: 1}
    assert set(figures.oldest_seconds) == {"gpu", default}
    assert all(0.05 <= age < 60 for age in figures.oldest_seconds.values()), figures


def test_queue_labels_are_bounded_whatever_queue_names_specs_bring() -> None:
    """A hostile test made 30 queue names with submit + cancel and left 8 series each for good: queues with only
    ended jobs, and past the cap the ones with the fewest active jobs, are summed under one label."""
    jobs = {("cancelled", f"card-{i}"): 1 for i in range(30)}
    jobs |= {("queued", f"busy-{i}"): i + 1 for i in range(5)} | {("running", "gpu"): 2, ("succeeded", "gpu"): 7}
    figures = QueueFigures(
        jobs=jobs,
        depth={f"busy-{i}": i + 1 for i in range(5)},
        oldest_seconds={f"busy-{i}": 10.0 * i for i in range(5)},
    )
    kept = bounded(figures, keep={"default", "gpu"}, cap=4)
    labels = {queue for _status, queue in kept.jobs} | set(kept.depth)
    assert labels == {"gpu", "busy-4", "busy-3", OTHER_QUEUE}  # the kept queues, then the most active ones
    assert kept.jobs[("cancelled", OTHER_QUEUE)] == 30 and kept.jobs[("succeeded", "gpu")] == 7
    assert kept.jobs[("queued", OTHER_QUEUE)] == 1 + 2 + 3 and kept.depth[OTHER_QUEUE] == 6
    assert kept.oldest_seconds == {"busy-4": 40.0, "busy-3": 30.0, OTHER_QUEUE: 20.0}
    assert sum(kept.jobs.values()) == sum(jobs.values())  # nothing lost, only summed


def sse_connections(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    return float(next(line for line in text.splitlines() if line.startswith("ganforge_sse_connections ")).split()[-1])


@pytest.mark.slow  # the `observed` deployment; last: its job takes the worker's series over
def test_open_event_streams_are_counted(observed: Observed) -> None:
    # Two clients: /metrics is read on a connection of its own while the stream holds the other.
    with observed.service.client() as client, observed.service.client() as watcher:
        spec = {**SPEC, "training": {"steps": 20000, "batch_size": 8}}
        job = client.post("/v1/jobs", json=spec).json()
        try:
            assert sse_connections(watcher) == 0
            with client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
                assert stream.status_code == 200
                lines = stream.iter_lines()
                assert next(lines).startswith("retry:")
                assert sse_connections(watcher) == 1
                assert next(line for line in lines if line.startswith("data:"))  # the first event
                assert sse_connections(watcher) == 1
            deadline = time.monotonic() + 20  # at worst the next ping (api/events.py PING_SECONDS)
            while sse_connections(watcher) != 0:  # the server notices the client left
                assert time.monotonic() < deadline, "the closed stream is still counted"
                time.sleep(0.2)
        finally:
            client.post(f"/v1/jobs/{job['id']}/cancel")


def test_up_gives_each_training_worker_its_own_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ganforge up --workers 3` with GANFORGE_WORKER_METRICS_PORT=9300: the workers listen on 9300, 9301, 9302."""
    import os

    import models.settings
    from ganforge import supervisor

    monkeypatch.setenv("GANFORGE_WORKER_METRICS_PORT", "9300")  # restored after: the workers' ports are set in it
    monkeypatch.setenv("GANFORGE_WORKER_THREADS", "1")
    settings = models.settings.Settings()
    monkeypatch.setattr(models.settings, "get_settings", lambda: settings)
    ports: list[str | None] = []
    monkeypatch.setattr(supervisor, "spawn", lambda *_args: ports.append(os.environ["GANFORGE_WORKER_METRICS_PORT"]))
    for trainer in supervisor.Up("127.0.0.1", 8000, workers=3).trainers:
        trainer.start()
    assert ports == ["9300", "9301", "9302"]
