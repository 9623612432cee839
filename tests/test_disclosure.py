"""What users read names no host, pid, path or exception message (issue 12): a job that fails with an unexpected
exception whose message holds a path and a host name ends with a category and a reference that the worker's log
has, in its error, its events and over SSE (both backends); worker ids are opaque; an unexpected exception in the
API is a 500 whose body says only "internal error" and a reference."""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from migrations import upgrade
from models.artifacts import ArtifactStore
from models.settings import Settings
from models.spec import DatasetRef
from models.store import JobStore
from tests.conftest import BACKENDS, api_and_worker
from tests.service import TINY_SPEC, Service, wait_for

# A host name in the data dir's path: the failure's message names the path, so it names the host too.
HOST = "db-7.internal.example"
FAILURE = re.compile(
    r"training raised an unexpected FileExistsError \(ref ([0-9a-f]{6})\); the worker's log has the details"
)


@pytest.fixture(params=BACKENDS)
def broken_scratch(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """API and worker whose data dir's `tmp` is a file: writing the first checkpoint raises FileExistsError naming
    `<data dir>/tmp`, and the data dir's path holds HOST."""
    data_dir = tmp_path / HOST
    data_dir.mkdir()
    (data_dir / "tmp").write_text("not a folder")
    with api_and_worker(request.param, data_dir) as deployment:
        yield deployment


@pytest.mark.slow  # an API and a worker per backend, about 20 s each
def test_an_unexpected_failure_shows_a_category_and_a_ref_never_the_message(broken_scratch: Service) -> None:
    service = broken_scratch
    with service.client() as client:
        job = client.post("/v1/jobs", json=TINY_SPEC).json()
        ended = wait_for(client, job["id"], ("succeeded", "failed"), timeout=120)
        events = client.get(f"/v1/jobs/{job['id']}/events", timeout=30)
        seen = {
            "job": client.get(f"/v1/jobs/{job['id']}").text,
            "events (SSE)": events.text,
            "list": client.get("/v1/jobs").text,
        }
    assert ended["status"] == "failed", ended
    found = FAILURE.fullmatch(ended["error"] or "")
    assert found, ended["error"]
    log = (service.data_dir / "worker-0.log").read_text()
    # The worker's log has the message, under the reference the user was given.
    assert re.search(rf"job {job['id']} failed \(ref {found[1]}\)", log), log[-4000:]
    assert f"{service.data_dir / 'tmp'}" in log
    ids = re.findall(r"worker (w-[0-9a-f]{8}) is (\S+):(\d+)", log)
    assert ids, log[-4000:]
    assert {host for _id, host, _pid in ids} == {socket.gethostname()}
    reasons = [line for line in seen["events (SSE)"].splitlines() if '"reason"' in line]
    assert any(f"claimed by {worker_id}" in line for line in reasons for worker_id, _host, _pid in ids), reasons
    assert any(found[0] in line for line in reasons), reasons
    for what, text in seen.items():
        for secret in (HOST, str(service.data_dir), "Errno", "File exists", socket.gethostname()):
            assert secret not in text, (what, secret, text[:2000])
        for _id, host, pid in ids:
            assert f"{host}:{pid}" not in text and f"pid {pid}" not in text, (what, pid, text[:2000])


def test_worker_ids_name_no_host_or_pid() -> None:
    from worker.tasks import failure_category, worker_name

    name = worker_name()
    assert re.fullmatch(r"w-[0-9a-f]{8}", name), name
    assert name == worker_name()  # stable for the process
    assert socket.gethostname() not in name and f"{os.getpid()}" not in name
    # Builtin classes are the category; a library's class goes by its nearest builtin base; no message anywhere.
    assert failure_category(RuntimeError("/srv/x on db-7")) == "RuntimeError"
    assert failure_category(type("OperationalError", (ConnectionError,), {})("db-7:5432")) == "ConnectionError"


def test_an_unexpected_api_exception_is_a_500_without_its_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path, api_keys={})
    upgrade(settings.database_url)
    app = create_app(settings, reconcile=False)

    @app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError(f"could not open /var/lib/ganforge/secret.db on {HOST}:5432 (SELECT * FROM api_keys)")

    with caplog.at_level(logging.ERROR), TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/v1/boom")
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    found = re.fullmatch(r"internal error \(ref ([0-9a-f]{6})\); the API's log has the details", error["message"])
    assert error["code"] == "internal_error" and found, error
    for secret in (HOST, "/var/lib", "SELECT", "RuntimeError", "5432"):
        assert secret not in response.text, response.text
    logged = [r for r in caplog.records if f"ref {found[1]}" in r.getMessage()]
    assert logged and HOST in str(logged[0].exc_info), caplog.text


def test_a_data_set_whose_stored_file_is_gone_or_damaged_fails_without_its_path(
    store: JobStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from worker.uploaded import DatasetUnavailable, load_uploaded

    artifacts = ArtifactStore(str(tmp_path / HOST / "artifacts"))
    info = {"kind": "points", "shape": [2], "size": 4}
    store.create_dataset(
        dataset_id="ds-1",
        owner="a",
        name="d",
        format="npz",
        info=info,
        content_hash="h",
        size_bytes=1,
        data_key="datasets/ds-1",
        preview_key=None,
    )
    ref = DatasetRef(id="ds-1")
    with pytest.raises(DatasetUnavailable) as missing:
        load_uploaded(ref, store=store, artifacts=artifacts)
    assert str(missing.value) == "data set 'ds-1': the data set's stored file is missing (deleted?)"
    artifacts.put_bytes("datasets/ds-1/x.npy", b"\x93NUMPY damaged")
    with caplog.at_level(logging.ERROR), pytest.raises(DatasetUnavailable) as damaged:
        load_uploaded(ref, store=store, artifacts=artifacts)
    found = re.fullmatch(
        r"data set 'ds-1': the data set's stored file does not read \(damaged\?; ref (\w{6})\)", str(damaged.value)
    )
    assert found, damaged.value
    assert f"ref {found[1]}" in caplog.text
