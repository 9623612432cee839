"""Uploads in flight at once and the per-owner upload quotas, over real HTTP (issue 12, "Quotas").

The API checks stored_bytes and uploads_per_hour before an upload's body is read; uploads still being received or
normalised did not count, so 10 parallel uploads of one owner with uploads_per_hour=2 were all accepted. Both quotas
are now checked again in the transaction that inserts the data set, under the owner's lock
(models/store/quota.py check_upload); a refused upload leaves no record and no file in the artifact store. And one
owner has at most GANFORGE_MAX_UPLOADS_IN_FLIGHT_PER_OWNER uploads in progress per API process.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from models.db import make_engine
from models.records import Dataset
from models.store import JobStore
from tests.conftest import BACKENDS, api_only
from tests.service import Service

PARALLEL, UPLOADS_PER_HOUR = 10, 2
OWNERS = ["hourly", "bytes"]
# "bytes" may hold 1 byte: the first upload (0 held) is accepted, every later one refused.
OVERRIDES = {"bytes": {"stored_bytes": 1, "uploads_per_hour": 1000}}


@pytest.fixture(scope="module", params=BACKENDS)
def race_service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The API alone, letting all PARALLEL uploads of an owner run at once; owner X's key is "key-X"."""
    with api_only(
        request.param,
        tmp_path_factory.mktemp(f"upload-race-{request.param}"),
        GANFORGE_API_KEYS=",".join(f"key-{owner}={owner}" for owner in OWNERS),
        GANFORGE_QUOTA_UPLOADS_PER_HOUR=str(UPLOADS_PER_HOUR),
        GANFORGE_OWNER_QUOTAS=json.dumps(OVERRIDES),
        GANFORGE_MAX_UPLOADS_IN_FLIGHT_PER_OWNER=str(PARALLEL),
    ) as deployment:
        yield deployment


def npz(seed: int) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.random.default_rng(seed).normal(size=(64, 2)).astype(np.float32))
    return buffer.getvalue()


def parallel_uploads(service: Service, key: str) -> list[httpx.Response]:
    """PARALLEL uploads of distinct small .npz files by one key, released together."""
    start = threading.Barrier(PARALLEL)
    answers: list[httpx.Response] = []

    def upload(seed: int) -> None:
        with service.client(key) as client:
            start.wait()
            answers.append(client.post("/v1/datasets", files={"file": (f"p-{seed}.npz", npz(seed))}))

    threads = [threading.Thread(target=upload, args=(seed,)) for seed in range(PARALLEL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def stored(service: Service, owner: str) -> set[str]:
    """The owner's data set ids in the store's table, asserting that the artifact store holds a folder for each
    data set of the table and no other."""
    url = service.env.get("GANFORGE_DATABASE_URL") or f"sqlite:///{service.data_dir / 'ganforge.db'}"
    engine = make_engine(url)
    try:
        with JobStore(engine).session() as session:
            rows = session.execute(select(Dataset.id, Dataset.owner)).all()
            assert session.scalar(select(func.count()).select_from(Dataset)) == len(rows)
    finally:
        engine.dispose()
    folder = Path(service.data_dir) / "artifacts" / "datasets"
    assert folder.is_dir()
    assert {path.name for path in folder.iterdir()} == {row.id for row in rows}  # nothing of a refused upload
    return {row.id for row in rows if row.owner == owner}


def refusals(answers: list[httpx.Response], status: int, quota: str) -> list[dict[str, Any]]:
    """The error objects of the refused answers, each asserted a `status` quota_exceeded for `quota`."""
    errors = []
    for answer in answers:
        if answer.status_code in (200, 201):
            continue
        assert answer.status_code == status, answer.text
        error = answer.json()["error"]
        assert (error["code"], error["quota"]) == ("quota_exceeded", quota), error
        assert f"GANFORGE_QUOTA_{quota.upper()}" in error["message"], error
        errors.append(error)
    return errors


@pytest.mark.slow  # PARALLEL ingest subprocesses: about 15 s on a loaded 2-core machine
def test_parallel_uploads_keep_to_uploads_per_hour(race_service: Service) -> None:
    answers = parallel_uploads(race_service, "key-hourly")
    accepted = sorted(answer.json()["id"] for answer in answers if answer.status_code == 201)
    assert len(accepted) == UPLOADS_PER_HOUR, [(a.status_code, a.text[:200]) for a in answers]
    errors = refusals(answers, 429, "uploads_per_hour")
    assert len(errors) == PARALLEL - UPLOADS_PER_HOUR
    assert all((error["limit"], error["used"]) == (UPLOADS_PER_HOUR, UPLOADS_PER_HOUR) for error in errors), errors
    for answer in answers:
        if answer.status_code == 429:
            assert 3500 < int(answer.headers["Retry-After"]) <= 3600, answer.headers
    assert sorted(stored(race_service, "hourly")) == accepted
    with race_service.client("key-hourly") as client:
        usage = client.get("/v1/quota").json()["usage"]
        assert usage["uploads_last_hour"] == UPLOADS_PER_HOUR
        assert sorted(d["id"] for d in client.get("/v1/datasets").json()["datasets"]) == accepted


@pytest.mark.slow  # as above
def test_parallel_uploads_keep_to_stored_bytes(race_service: Service) -> None:
    answers = parallel_uploads(race_service, "key-bytes")
    accepted = [answer.json() for answer in answers if answer.status_code == 201]
    assert len(accepted) == 1, [(a.status_code, a.text[:200]) for a in answers]
    errors = refusals(answers, 403, "stored_bytes")
    assert len(errors) == PARALLEL - 1
    # Each refusal saw the accepted data set: the owner held its bytes, at or over the limit of 1.
    assert all((error["limit"], error["used"]) == (1, accepted[0]["size_bytes"]) for error in errors), errors
    assert stored(race_service, "bytes") == {accepted[0]["id"]}
    with race_service.client("key-bytes") as client:
        assert client.get("/v1/quota").json()["usage"]["stored_bytes"] == accepted[0]["size_bytes"]


# --------------------------------------------------------------------------- uploads in flight per owner


def slow_upload(service: Service, key: str, seed: int, sent: threading.Event, release: threading.Event) -> Any:
    """POST one upload whose body stops after the multipart head (`sent` set) until `release`; its response."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s-{seed}.npz"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    def body() -> Iterator[bytes]:
        yield head
        sent.set()
        release.wait(60)
        yield npz(seed) + f"\r\n--{boundary}--\r\n".encode()

    with service.client(key) as client:
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        return client.post("/v1/datasets", content=body(), headers=headers)


def test_an_owner_s_uploads_in_flight_are_bounded_before_the_body_is_read(tmp_path: Path) -> None:
    owners = ["slow", "other"]
    with api_only(
        "embedded",
        tmp_path,
        GANFORGE_API_KEYS=",".join(f"key-{owner}={owner}" for owner in owners),
        GANFORGE_MAX_UPLOADS_IN_FLIGHT_PER_OWNER="2",
    ) as service:
        release = threading.Event()
        sent = [threading.Event(), threading.Event()]
        answers: list[httpx.Response] = []
        threads = [
            threading.Thread(target=lambda i=i: answers.append(slow_upload(service, "key-slow", i, sent[i], release)))
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        try:
            assert all(event.wait(30) for event in sent)
            # The third upload is refused before its body is read. Until both slow uploads have reached the route,
            # a probe whose content is no data set gets a 422 and stores nothing: ask again.
            with service.client("key-slow") as client:
                deadline = time.monotonic() + 30
                while True:
                    probe = client.post("/v1/datasets", files={"file": ("junk.npz", b"not an npz")})
                    if probe.status_code != 422 or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                assert probe.status_code == 429, probe.text
                error = probe.json()["error"]
                assert (error["code"], error["limit"]) == ("uploads_in_flight", 2), error
                assert "GANFORGE_MAX_UPLOADS_IN_FLIGHT_PER_OWNER" in error["message"]
                assert int(probe.headers["Retry-After"]) >= 1
            # Another owner is not held back by this one's uploads.
            with service.client("key-other") as client:
                other = client.post("/v1/datasets", files={"file": ("o.npz", npz(7))})
                assert other.status_code == 201, other.text
        finally:
            release.set()
            for thread in threads:
                thread.join(60)
        assert sorted(answer.status_code for answer in answers) == [201, 201], [a.text for a in answers]
        # Both finished: their places are free again.
        with service.client("key-slow") as client:
            assert client.post("/v1/datasets", files={"file": ("n.npz", npz(9))}).status_code == 201
