"""Artifacts on an S3-compatible server, for real: moto's server mode (moto[server], a real HTTP S3 endpoint on a
free port) behind a real API and worker (PostgreSQL + Redis) configured as production would be:
GANFORGE_ARTIFACTS_URL=s3://bucket/prefix, GANFORGE_ARTIFACTS_OPTIONS={"endpoint_url": ...}, AWS_* credentials.

A tiny job writes its samples and checkpoints into the bucket, the API's downloads are the bucket's bytes,
retention prunes objects there, and deleting a checkpoint and then the job removes their objects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import s3fs
from moto.server import ThreadedMotoServer

from models.artifacts import ArtifactStore
from tests.conftest import api_and_worker
from tests.service import TINY_SPEC, Service, free_port, wait_for

pytestmark = pytest.mark.slow
BUCKET, PREFIX = "ganforge-test", "artifacts"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free port with an empty bucket; its URL."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing").mkdir(BUCKET)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3_service(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    settings = {
        "GANFORGE_ARTIFACTS_URL": f"s3://{BUCKET}/{PREFIX}",
        "GANFORGE_ARTIFACTS_OPTIONS": json.dumps({"endpoint_url": s3_endpoint}),
        **CREDENTIALS,
    }
    with api_and_worker("postgres", tmp_path_factory.mktemp("s3"), **settings) as deployment:
        yield deployment


def _bucket(endpoint: str) -> s3fs.S3FileSystem:
    # A fresh instance each time (no listing cache): what is in the bucket now.
    return s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing", skip_instance_cache=True)


def _objects(endpoint: str, job_id: str, folder: str) -> list[str]:
    path = f"{BUCKET}/{PREFIX}/jobs/{job_id}/{folder}"
    bucket = _bucket(endpoint)
    return sorted(Path(p).name for p in bucket.find(path)) if bucket.exists(path) else []


def test_the_artifact_store_speaks_s3(s3_endpoint: str) -> None:
    store = ArtifactStore(f"s3://{BUCKET}/unit", {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"})
    store.put_bytes("a/one.bin", b"1")
    store.put_bytes("a/two.bin", b"22")
    assert store.list("a") == ["a/one.bin", "a/two.bin"] and store.size("a/two.bin") == 2
    store.delete("a/one.bin")
    assert store.list("a") == ["a/two.bin"] and not store.exists("a/one.bin")
    store.delete("a")  # a folder-like key: everything under it
    assert store.list("a") == [] and not _bucket(s3_endpoint).exists(f"{BUCKET}/unit/a/two.bin")


def test_a_job_on_s3_writes_prunes_serves_and_deletes(s3_service: Service, s3_endpoint: str) -> None:
    spec = {
        **TINY_SPEC,
        "training": {"steps": 8, "batch_size": 8},
        "every": {"metrics": 4, "samples": 4, "checkpoint": 2, "keep_last": 2},
    }
    with s3_service.client() as http:
        job_id = http.post("/v1/jobs", json=spec).json()["id"]
        wait_for(http, job_id, ("succeeded",))
        # Retention pruned steps 2 and 4 in the bucket; nothing was written to the local data dir.
        assert _objects(s3_endpoint, job_id, "checkpoints") == [
            f"{step:09d}{suffix}" for step in (6, 8) for suffix in (".safetensors", ".state.pt")
        ]
        assert _objects(s3_endpoint, job_id, "samples") == [
            f"{step:09d}{suffix}" for step in (4, 8) for suffix in (".npy", ".png")
        ]
        assert not (s3_service.data_dir / "artifacts").exists()
        bucket = _bucket(s3_endpoint)
        folder = f"{BUCKET}/{PREFIX}/jobs/{job_id}"
        # The API's downloads are the bucket's bytes.
        weights = http.get(f"/v1/jobs/{job_id}/checkpoints/8")
        assert weights.status_code == 200 and weights.content == bucket.cat(
            f"{folder}/checkpoints/000000008.safetensors"
        )
        state = http.get(f"/v1/jobs/{job_id}/checkpoints/6", params={"file": "state"})
        assert state.content == bucket.cat(f"{folder}/checkpoints/000000006.state.pt")
        png = http.get(f"/v1/jobs/{job_id}/samples/4.png")
        assert png.status_code == 200 and png.content == bucket.cat(f"{folder}/samples/000000004.png")
        assert http.get(f"/v1/jobs/{job_id}/checkpoints/4").status_code == 404  # pruned

        assert http.delete(f"/v1/jobs/{job_id}/checkpoints/6").status_code == 204
        assert _objects(s3_endpoint, job_id, "checkpoints") == ["000000008.safetensors", "000000008.state.pt"]
        assert http.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert not _bucket(s3_endpoint).find(folder)
        assert http.get(f"/v1/jobs/{job_id}").status_code == 404
