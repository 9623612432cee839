"""Every action a user takes is recorded with the id of the key that took it (issue 12), never the key itself.

A real API process per backend (no worker: no job needs to train). Its environment keys (tests/service.py KEYS)
are admins of team-a and team-b; store keys are made here through /v1/keys. The `submitted` status event of a job
(POST /v1/jobs, a study) and the status event a cancel writes (a job's, a study's) carry `key`: a store key's
prefix, "env:<owner>" for an environment key, null with auth off (api/deps.py Caller.key_id); so do an uploaded
data set and a generate request (their JSON's `key`), and the API log's line for a data set's delete. The
deployment caps event streams at GANFORGE_MAX_SSE_PER_OWNER=2. The last API test reads every event it saw and the
API's log for any secret.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy
import pytest
from sqlalchemy import update

from api.deps import Authenticator, Caller
from models.db import make_engine
from models.records import Job
from models.settings import Settings
from models.store import JobStore
from tests.conftest import BACKENDS, api_only
from tests.service import KEYS, TINY_SPEC, Service

# A study of two tiny jobs (one loss, two seeds): enough to see the key on every job of it.
STUDY: dict[str, Any] = {
    "name": "actor",
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 16, "depth": 1},
    "losses": ["nsgan"],
    "seeds": 2,
    "grid": [],
    "training": {"steps": 100, "batch_size": 8},
    "every": {"metrics": 10, "samples": 100, "checkpoint": 100},
}


@dataclass
class Deployment:
    """The API, the keys made on it and every event read from it (for the secret check)."""

    service: Service
    made: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # each event's raw `data:` line

    def store_key(self, admin: str = "key-a") -> tuple[str, str]:
        """A new submit key of the admin's owner: (prefix, key)."""
        with self.service.client(admin) as client:
            response = client.post("/v1/keys", json={"scopes": ["submit"], "name": "actor"})
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        self.made.append(created["key"])
        return created["prefix"], created["key"]

    def status_events(self, key: str, job_id: str, count: int) -> list[dict[str, Any]]:
        """The first `count` status events of the job, read from GET /v1/jobs/{id}/events (SSE) with `key`."""
        found: list[dict[str, Any]] = []
        kind = ""
        with self.service.client(key) as client, client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
            assert response.status_code == 200, response.read()
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    self.seen.append(line)
                    if kind == "status":
                        found.append(json.loads(line.removeprefix("data: ")))
                        if len(found) == count:
                            break
        assert len(found) == count, found
        return found

    def set_status(self, job_id: str, status: str) -> None:
        """Move a job as a worker's claim would (its status only), straight in the deployment's store."""
        settings = Settings(
            data_dir=self.service.data_dir, database_url=self.service.env.get("GANFORGE_DATABASE_URL", "")
        )
        engine = make_engine(settings.database_url)
        try:
            with engine.begin() as connection:
                connection.execute(update(Job).where(Job.id == job_id).values(status=status))
        finally:
            engine.dispose()


@pytest.fixture(scope="module", params=BACKENDS)
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    data_dir = tmp_path_factory.mktemp(f"ganforge-actor-{request.param}")
    with api_only(request.param, data_dir, GANFORGE_MAX_SSE_PER_OWNER="2") as service:
        yield Deployment(service)


def submit(deployment: Deployment, key: str) -> str:
    with deployment.service.client(key) as client:
        response = client.post("/v1/jobs", json=TINY_SPEC)
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_submit_and_cancel_record_each_store_keys_prefix(deployment: Deployment) -> None:
    first, first_key = deployment.store_key()
    second, second_key = deployment.store_key()
    job_id = submit(deployment, first_key)
    with deployment.service.client(second_key) as client:
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    submitted, cancelled = deployment.status_events(second_key, job_id, 2)
    assert (submitted["reason"], submitted["to"], submitted["key"]) == ("submitted", "queued", first)
    assert (cancelled["from"], cancelled["to"], cancelled["key"]) == ("queued", "cancelled", second)


def test_cancelling_a_running_job_records_the_key(deployment: Deployment) -> None:
    prefix, key = deployment.store_key()
    job_id = submit(deployment, "key-a")
    deployment.set_status(job_id, "running")
    with deployment.service.client(key) as client:
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    submitted, cancelling = deployment.status_events(key, job_id, 2)
    assert submitted["key"] == "env:team-a"
    assert (cancelling["from"], cancelling["to"], cancelling["key"]) == ("running", "cancelling", prefix)


def test_an_environment_key_is_recorded_by_its_owner_not_the_key(deployment: Deployment) -> None:
    job_id = submit(deployment, "key-b")
    with deployment.service.client("key-b") as client:
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    events = deployment.status_events("key-b", job_id, 2)
    assert [event["key"] for event in events] == ["env:team-b", "env:team-b"]


def test_a_study_records_the_submitting_and_the_cancelling_key_on_each_job(deployment: Deployment) -> None:
    first, first_key = deployment.store_key()
    second, second_key = deployment.store_key()
    with deployment.service.client(first_key) as client:
        created = client.post("/v1/studies", json=STUDY)
        assert created.status_code == 201, created.text
        study_id = created.json()["id"]
    with deployment.service.client(second_key) as client:
        cancelled = client.post(f"/v1/studies/{study_id}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        job_ids = [job["id"] for job in cancelled.json()["jobs"]]
    assert len(job_ids) == 2
    for job_id in job_ids:
        submitted, cancel = deployment.status_events(first_key, job_id, 2)
        assert (submitted["reason"], submitted["key"]) == ("submitted", first)
        assert (cancel["to"], cancel["key"]) == ("cancelled", second)


def ring_npz(seed: int) -> bytes:
    """A small .npz of 2-D points, different per seed (an upload of the same content would return the first)."""
    buffer = io.BytesIO()
    numpy.savez(buffer, x=numpy.random.default_rng(seed).normal(size=(64, 2)).astype(numpy.float32))
    return buffer.getvalue()


def test_an_upload_records_its_key_and_a_delete_is_logged_with_its_key(deployment: Deployment) -> None:
    prefix, key = deployment.store_key()
    uploaded = {}
    for who, seed in ((key, 1), ("key-a", 2)):
        with deployment.service.client(who) as client:
            response = client.post("/v1/datasets", files={"file": (f"ring{seed}.npz", ring_npz(seed))})
        assert response.status_code == 201, response.text
        uploaded[who] = response.json()
    assert uploaded[key]["key"] == prefix and uploaded["key-a"]["key"] == "env:team-a"
    with deployment.service.client("key-a") as client:
        shown = client.get(f"/v1/datasets/{uploaded[key]['id']}").json()
        listed = {d["id"]: d["key"] for d in client.get("/v1/datasets").json()["datasets"]}
    assert shown["key"] == prefix and listed[uploaded["key-a"]["id"]] == "env:team-a"
    with deployment.service.client(key) as client:
        assert client.delete(f"/v1/datasets/{uploaded['key-a']['id']}").status_code == 204
    log = "".join(path.read_text() for path in deployment.service.data_dir.glob("api*.log"))
    assert f"data set {uploaded['key-a']['id']} of team-a deleted by key {prefix}" in log


def test_a_generate_request_records_its_key(deployment: Deployment) -> None:
    """No generate worker here: the request stays queued, and GET /v1/generations/{id} shows who asked."""
    prefix, key = deployment.store_key()
    job_id = submit(deployment, "key-a")
    settings = Settings(
        data_dir=deployment.service.data_dir, database_url=deployment.service.env.get("GANFORGE_DATABASE_URL", "")
    )
    store = JobStore(make_engine(settings.database_url))
    try:  # a checkpoint as a worker records it (generate only needs its row to accept the request)
        store.add_checkpoint(job_id=job_id, step=5, weights_key="none", state_key="none", size_bytes=1)
    finally:
        store.engine.dispose()
    ids = {}
    for who in (key, "key-a"):
        with deployment.service.client(who) as client:
            accepted = client.post(f"/v1/jobs/{job_id}/generate", params={"wait": 0}, json={"count": 4})
            assert accepted.status_code == 202, accepted.text
            ids[who] = accepted.json()["id"]
    with deployment.service.client("key-a") as client:
        assert client.get(f"/v1/generations/{ids[key]}").json()["key"] == prefix
        assert client.get(f"/v1/generations/{ids['key-a']}").json()["key"] == "env:team-a"


def test_the_sse_cap_per_owner_is_the_setting(deployment: Deployment) -> None:
    """GANFORGE_MAX_SSE_PER_OWNER=2 on this deployment: team-a's third open stream is a 429; team-b's first is not."""
    job_id, other_job = submit(deployment, "key-a"), submit(deployment, "key-b")  # queued: their streams stay open
    with deployment.service.client("key-a") as client, deployment.service.client("key-b") as other:
        with (
            client.stream("GET", f"/v1/jobs/{job_id}/events") as first,
            client.stream("GET", f"/v1/jobs/{job_id}/events") as second,
        ):
            assert first.status_code == second.status_code == 200
            third = client.get(f"/v1/jobs/{job_id}/events")
            assert third.status_code == 429 and int(third.headers["retry-after"]) > 0, third.text
            with other.stream("GET", f"/v1/jobs/{other_job}/events") as theirs:
                assert theirs.status_code == 200
        # The closed streams' slots are freed as the server sees them end: a new stream gets in again.
        deadline = time.monotonic() + 10
        while stream_status(client, f"/v1/jobs/{job_id}/events") == 429:
            assert time.monotonic() < deadline, "the cap did not free its slots"
            time.sleep(0.2)


def stream_status(client: httpx.Client, path: str) -> int:
    """The status of a GET `path` opened as a stream, closed at once."""
    with client.stream("GET", path) as response:
        return response.status_code


def test_no_key_or_secret_in_any_event_or_the_api_log(deployment: Deployment) -> None:
    """Runs last in the module: every key made and every event read above."""
    assert len(deployment.made) >= 5 and len(deployment.seen) >= 10
    events = "\n".join(deployment.seen)
    log = "".join(path.read_text() for path in deployment.service.data_dir.glob("api*.log"))
    assert "Application startup complete" in log  # the API process's own log, read whole
    for key in [*deployment.made, *KEYS]:
        secret = key.split("_", 2)[2] if key.startswith("gf_") else key
        for text in (events, log):
            assert key not in text and secret not in text


def test_the_key_id_of_each_kind_of_caller(store: JobStore) -> None:
    """Authenticator (the one lookup the gate and the routes use) on PostgreSQL and SQLite: a store key's id is its
    prefix, an environment key's "env:<owner>", and with auth off (no key anywhere) there is none."""
    open_caller = Authenticator({}, store).authenticate(None)
    assert isinstance(open_caller, Caller) and open_caller.owner == "anonymous" and open_caller.key_id is None
    record, key = store.create_key(owner="team-a", scopes=["submit"])
    gate = Authenticator({"env-secret": "team-a"}, store)
    from_env = gate.authenticate("Bearer env-secret")
    from_store = gate.authenticate(f"Bearer {key}")
    assert isinstance(from_env, Caller) and from_env.key_id == "env:team-a"
    assert isinstance(from_store, Caller) and from_store.key_id == record.prefix
    assert "env-secret" not in repr(from_env) and key.split("_", 2)[2] not in repr(from_store)
