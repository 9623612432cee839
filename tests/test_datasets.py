"""Uploaded data sets for real: multipart over HTTP to uvicorn, normalised once, trained on by a Celery worker.

Every hostile upload gets a 4xx in the one error shape with the field path, and
leaves nothing behind: no temporary upload folder, no artifact, no record.
"""

from __future__ import annotations

import io
import socket
import stat
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import BACKENDS, api_only
from tests.service import (
    Service,
    wait_for,
)

RNG = np.random.default_rng(7)


# --------------------------------------------------------------------------- building uploads


def npz_bytes(compressed: bool = False, **arrays: Any) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def image_bytes(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def zip_bytes(entries: dict[str, bytes], symlinks: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def tiny_png(size: int = 16, channels: int = 3) -> bytes:
    shape = (size, size, channels) if channels == 3 else (size, size)
    return image_bytes(RNG.integers(0, 256, shape, dtype=np.uint8))


def class_zip(per_class: int = 24, size: int = 16) -> bytes:
    """Two class folders under one wrapping folder, PNGs and JPEGs mixed."""
    entries = {}
    for label in ("cats", "dogs"):
        for i in range(per_class):
            pixels = RNG.integers(0, 256, (size, size, 3), dtype=np.uint8)
            fmt, ext = ("JPEG", "jpg") if i % 3 == 0 else ("PNG", "png")
            entries[f"pets/{label}/{i:03d}.{ext}"] = image_bytes(pixels, fmt)
    return zip_bytes(entries)


def ring_rows(n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    labels = RNG.integers(0, 8, n)
    angles = labels * (2 * np.pi / 8)
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1) + RNG.normal(0, 0.02, (n, 2))
    return x.astype(np.float32), labels


def upload(client: httpx.Client, filename: str, data: bytes, **fields: str) -> httpx.Response:
    return client.post("/v1/datasets", files={"file": (filename, data)}, data=fields)


def job_spec(dataset: dict[str, Any], architecture: dict[str, Any], loss: str, steps: int) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "architecture": architecture,
        "loss": {"name": loss},
        "training": {"steps": steps, "batch_size": 16, "device": "cpu"},
        "every": {"metrics": steps, "samples": steps, "checkpoint": steps},
    }


def leftovers(service: Service) -> tuple[list[str], list[str]]:
    """Temporary upload folders and stored data set folders on disk right now."""
    tmp, stored = service.data_dir / "tmp", service.data_dir / "artifacts" / "datasets"
    return (
        sorted(p.name for p in tmp.glob("upload-*")) if tmp.exists() else [],
        sorted(p.name for p in stored.iterdir()) if stored.exists() else [],
    )


def dataset_ids(client: httpx.Client) -> list[str]:
    return [d["id"] for d in client.get("/v1/datasets", params={"limit": 500}).json()["datasets"]]


def assert_refused(
    service: Service, response: httpx.Response, status: int, field: str, fragment: str, before: tuple[Any, ...]
) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert {"code", "message", "details"} <= set(error), error
    assert any(d["field"] == field and fragment in d["message"] for d in error["details"]), error
    with service.client() as client:
        assert (leftovers(service), dataset_ids(client)) == before, "a refused upload left something behind"


def snapshot(service: Service) -> tuple[Any, ...]:
    with service.client() as client:
        return leftovers(service), dataset_ids(client)


# --------------------------------------------------------------------------- formats, end to end


def test_rows_npz_uploads_once_trains_a_cgan_and_has_a_scatter_preview(service: Service) -> None:
    x, labels = ring_rows()
    with service.client() as client:
        created = upload(client, "ring.npz", npz_bytes(x=x, y=labels * 10), name="my ring")
        assert created.status_code == 201, created.text
        dataset = created.json()
        info = dataset["info"]
        assert (dataset["name"], dataset["format"], info["kind"], info["shape"]) == ("my ring", "npz", "points", [2])
        assert (info["size"], info["num_classes"], info["class_names"][:2]) == (2000, 8, ["0", "10"])

        again = upload(client, "same-content-other-name.npz", npz_bytes(x=x, y=labels * 10))
        assert again.status_code == 200 and again.json()["id"] == dataset["id"]  # uq_datasets_owner_hash
        assert client.get(f"/v1/datasets/{dataset['id']}").json() == dataset

        preview = client.get(dataset["preview_url"])
        assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(preview.content)).size == (512, 512)

        spec = job_spec({"id": dataset["id"]}, {"name": "mlp", "hidden": 32, "depth": 2}, "cgan", steps=20)
        job = client.post("/v1/jobs", json=spec)
        assert job.status_code == 201, job.text
        done = wait_for(client, job.json()["id"], ("succeeded", "failed"), timeout=120)
        assert done["status"] == "succeeded", (done, service.logs())
        assert [s["step"] for s in client.get(f"/v1/jobs/{done['id']}/samples").json()["samples"]] == [20]


def test_image_zip_of_class_folders_trains_dcgan(service: Service) -> None:
    with service.client() as client:
        created = upload(client, "pets.zip", class_zip())
        assert created.status_code == 201, created.text
        dataset = created.json()
        info = dataset["info"]
        assert (info["kind"], info["shape"], info["size"]) == ("images", [3, 16, 16], 48)
        assert (info["num_classes"], info["class_names"]) == (2, ["cats", "dogs"])

        preview = client.get(f"/v1/datasets/{dataset['id']}/preview.png")
        assert preview.status_code == 200
        grid = np.asarray(Image.open(io.BytesIO(preview.content)))
        assert grid.ndim == 3 and grid.std() > 10  # real, varied pixels, not a blank canvas

        arch = {"name": "dcgan", "latent_dim": 16, "base_channels": 8}
        job = client.post("/v1/jobs", json=job_spec({"id": dataset["id"]}, arch, "nsgan", steps=4))
        assert job.status_code == 201, job.text
        done = wait_for(client, job.json()["id"], ("succeeded", "failed"), timeout=120)
        assert done["status"] == "succeeded", (done, service.logs())
        sample = client.get(f"/v1/jobs/{done['id']}/samples/4.png")
        assert sample.status_code == 200


def test_npz_images_are_checked_against_the_spec_and_resized_by_the_worker(service: Service) -> None:
    x = RNG.integers(0, 256, (40, 28, 28), dtype=np.uint8)  # MNIST-like: N×H×W, uint8
    with service.client() as client:
        created = upload(client, "digits28.npz", npz_bytes(x=x))
        assert created.status_code == 201, created.text
        dataset = created.json()
        assert dataset["info"]["shape"] == [1, 28, 28] and "[0, 255]" in dataset["info"]["description"]

        arch = {"name": "dcgan", "latent_dim": 16, "base_channels": 8}
        refused = client.post("/v1/jobs", json=job_spec({"id": dataset["id"]}, arch, "nsgan", steps=3))
        assert refused.status_code == 422
        assert {d["field"] for d in refused.json()["error"]["details"]} == {"dataset.resize"}
        refused = client.post("/v1/jobs", json=job_spec({"id": dataset["id"]}, arch, "cgan", steps=3))
        assert "loss.name" in {d["field"] for d in refused.json()["error"]["details"]}  # no labels

        spec = job_spec({"id": dataset["id"], "resize": 16}, arch, "nsgan", steps=3)
        job = client.post("/v1/jobs", json=spec)
        assert job.status_code == 201, job.text
        done = wait_for(client, job.json()["id"], ("succeeded", "failed"), timeout=120)
        assert done["status"] == "succeeded", (done, service.logs())

        resized = upload(client, "digits28.npz", npz_bytes(True, x=x), resize="16")  # resampled on arrival instead
        assert resized.status_code == 201 and resized.json()["info"]["shape"] == [1, 16, 16]
        assert resized.json()["id"] != dataset["id"]

        channels_last = RNG.uniform(0, 1, (6, 20, 24, 3)).astype(np.float32)  # N×H×W×C in [0, 1]
        created = upload(client, "photos.npz", npz_bytes(True, x=channels_last, y=np.array([[3]] * 6)))
        assert created.status_code == 201, created.text
        info = created.json()["info"]
        assert (info["shape"], info["class_names"]) == ([3, 20, 24], ["3"]) and "[0, 1]" in info["description"]


def test_the_same_content_uploaded_concurrently_is_stored_once(service: Service) -> None:
    content = npz_bytes(x=RNG.normal(size=(300, 4)).astype(np.float32))
    stored_before = leftovers(service)[1]

    def send(_: int) -> httpx.Response:
        with service.client() as client:
            return upload(client, "race.npz", content)

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(send, range(2))
    assert sorted([first.status_code, second.status_code]) == [200, 201], (first.text, second.text)
    assert first.json()["id"] == second.json()["id"]
    assert len(set(leftovers(service)[1]) - set(stored_before)) == 1  # the loser's files were removed


def test_another_owners_dataset_is_404_everywhere(service: Service) -> None:
    content = npz_bytes(x=RNG.normal(size=(50, 3)))
    with service.client("key-a") as owner, service.client("key-b") as stranger:
        dataset = upload(owner, "mine.npz", content).json()
        for path in ("", "/preview.png"):
            response = stranger.get(f"/v1/datasets/{dataset['id']}{path}")
            assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
        assert stranger.delete(f"/v1/datasets/{dataset['id']}").status_code == 404
        assert dataset["id"] not in dataset_ids(stranger)
        spec = job_spec({"id": dataset["id"]}, {"name": "mlp"}, "nsgan", steps=2)
        foreign, missing = (
            stranger.post("/v1/jobs", json=spec),
            stranger.post("/v1/jobs", json={**spec, "dataset": {"id": "nope"}}),
        )
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json()["error"]["details"][0]["field"] == "dataset.id"
        # the stranger's identical upload is the stranger's own data set
        theirs = upload(stranger, "mine.npz", content)
        assert theirs.status_code == 201 and theirs.json()["id"] != dataset["id"]


def test_delete_is_refused_while_a_job_uses_the_dataset(service: Service) -> None:
    with service.client() as client:
        dataset = upload(client, "busy.npz", npz_bytes(x=RNG.normal(size=(64, 2)).astype(np.float32))).json()
        spec = job_spec({"id": dataset["id"]}, {"name": "mlp", "hidden": 8, "depth": 1}, "nsgan", steps=1_000_000)
        job = client.post("/v1/jobs", json=spec).json()
        refused = client.delete(f"/v1/datasets/{dataset['id']}")
        assert refused.status_code == 409 and job["id"] in refused.json()["error"]["message"]
        client.post(f"/v1/jobs/{job['id']}/cancel")
        wait_for(client, job["id"], ("cancelled",), timeout=60)
        assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
        assert client.get(f"/v1/datasets/{dataset['id']}").status_code == 404
        assert dataset["id"] not in leftovers(service)[1]


def test_list_is_newest_first_with_keyset_pagination(service: Service) -> None:
    with service.client("key-b") as client:
        made = [upload(client, f"p{i}.npz", npz_bytes(x=np.full((3, 2), i, np.float32))).json()["id"] for i in range(3)]
        first = client.get("/v1/datasets", params={"limit": 2}).json()
        second = client.get("/v1/datasets", params={"limit": 2, "cursor": first["next_cursor"]}).json()
        listed = [d["id"] for d in first["datasets"] + second["datasets"]]
        assert listed[:3] == made[::-1]
        assert client.get("/v1/datasets", params={"cursor": "x"}).status_code == 422


# --------------------------------------------------------------------------- hostile uploads, default limits

PNG8 = image_bytes(np.zeros((8, 8), np.uint8))
NPY = npy_bytes(np.zeros((4, 2), np.float32))
HOSTILE = [
    ("objects.npz", npz_bytes(x=np.array([[1, "a", None]], dtype=object)), 422, "file.x", "Python objects"),
    ("pickle.npz", zip_bytes({"x.npy": NPY, "evil.pkl": b"\x80\x04K\x01."}), 422, "file", "only .npy arrays"),
    ("pickled-x.npz", zip_bytes({"x.npy": b"\x80\x04K\x01."}), 422, "file.x", "not a valid .npy"),
    ("nan.npz", npz_bytes(x=np.array([[0.0, 1.0], [np.nan, 2.0]])), 422, "file.x", "example 1 holds NaN"),
    ("inf.npz", npz_bytes(x=np.array([[0.0, np.inf]])), 422, "file.x", "NaN or infinite"),
    ("overflow.npz", npz_bytes(x=np.array([[1e300, 0.0]])), 422, "file.x", "too large for float32"),
    ("empty.npz", npz_bytes(x=np.zeros((0, 3), np.float32)), 422, "file.x", "zero examples"),
    ("empty.zip", zip_bytes({"readme/": b""}), 422, "file", "zero examples"),
    ("classes.npz", npz_bytes(x=np.zeros((10_000, 2)), y=np.arange(10_000)), 422, "file.y", "10000 distinct labels"),
    ("floatlabels.npz", npz_bytes(x=np.zeros((3, 2)), y=np.zeros(3)), 422, "file.y", "must be integers"),
    ("folders.zip", zip_bytes({f"c{i}/a.png": PNG8 for i in range(1001)}), 422, "file", "1001 class folders"),
    ("mixed.zip", zip_bytes({"a/1.png": PNG8, "b/2.png": tiny_png(12, 1)}), 422, "file", "set the form field 'resize'"),
    ("fake.zip", zip_bytes({"a/1.png": PNG8, "a/2.png": b"GIF89a not a png"}), 422, "file", "'a/2.png' is not a PNG"),
    (
        "jpeg-as-png.zip",
        zip_bytes({"a/1.png": image_bytes(np.zeros((8, 8, 3), np.uint8), "JPEG")}),
        422,
        "file",
        "not a PNG",
    ),
    ("slip.zip", zip_bytes({"a/1.png": PNG8, "../../etc/2.png": PNG8}), 422, "file", "unsafe path"),
    ("absolute.zip", zip_bytes({"/tmp/a/1.png": PNG8}), 422, "file", "unsafe path"),
    (
        "link.zip",
        zip_bytes({"a/1.png": PNG8, "a/2.png": b"/etc/passwd"}, symlinks=("a/2.png",)),
        422,
        "file",
        "symbolic links",
    ),
    ("truncated.zip", class_zip(4)[:-100], 422, "file", "not a valid .zip"),
    ("truncated.npz", npz_bytes(x=np.zeros((500, 4)))[:3000], 422, "file", "not a valid .zip"),
    ("damaged.zip", zip_bytes({"a/1.png": tiny_png(32), "a/2.png": tiny_png(32)[:1500]}), 422, "file", "damaged"),
    ("plain.npz", b"\x93NUMPY not an archive", 422, "file", "not a valid .npz"),
    ("data.tar", b"whatever", 422, "file", "upload an .npz"),
]


@pytest.mark.parametrize(("filename", "data", "status", "field", "fragment"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_upload_is_refused_and_leaves_nothing(
    service: Service, filename: str, data: bytes, status: int, field: str, fragment: str
) -> None:
    before = snapshot(service)
    with service.client() as client:
        response = upload(client, filename, data)
    assert_refused(service, response, status, field, fragment, before)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"resize": "3"}, "resize"),
        ({"resize": "big"}, "resize"),
        ({"resize": "16"}, "resize"),
        ({"name": "x" * 201}, "name"),
    ],
)
def test_bad_form_fields_are_422(service: Service, fields: dict[str, str], field: str) -> None:
    before = snapshot(service)
    with service.client() as client:
        response = upload(client, "ok.npz", npz_bytes(x=np.zeros((4, 2))), **fields)
    assert_refused(service, response, 422, field, "", before)


def test_unknown_field_and_missing_file_are_422(service: Service) -> None:
    before = snapshot(service)
    with service.client() as client:
        extra = client.post("/v1/datasets", files={"file": ("a.npz", b"x")}, data={"colour": "red"})
        assert_refused(service, extra, 422, "colour", "unknown form field", before)
        boundary = "only-a-name"
        body = f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nno file\r\n--{boundary}--\r\n'
        missing = client.post(
            "/v1/datasets", content=body.encode(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        assert_refused(service, missing, 422, "file", "Field required", before)
        not_multipart = client.post("/v1/datasets", json={"file": "x"})
        assert not_multipart.status_code == 415
    assert snapshot(service) == before


def test_truncated_multipart_body_is_400(service: Service) -> None:
    before = snapshot(service)
    boundary = "ganforge-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.npz"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + npz_bytes(x=np.zeros((100, 2)))[:700]  # the part never ends: no closing boundary
    with service.client() as client:
        response = client.post(
            "/v1/datasets", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
    assert_refused(service, response, 400, "file", "truncated", before)


def test_client_that_disconnects_mid_upload_leaves_nothing(service: Service) -> None:
    before = snapshot(service)
    boundary = "cut"
    with socket.create_connection(("127.0.0.1", service.port)) as connection:
        connection.sendall(
            (
                "POST /v1/datasets HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer key-a\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 5000000\r\n\r\n"
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.npz"\r\n\r\n'
            ).encode()
            + b"\0" * 200_000
        )
        time.sleep(0.5)
    assert _eventually(lambda: snapshot(service) == before), (snapshot(service), before)


def _eventually(check: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


# --------------------------------------------------------------------------- size limits (an API with tiny limits)

LIMITS = {
    "GANFORGE_MAX_UPLOAD_BYTES": "1000000",
    "GANFORGE_MAX_ARCHIVE_BYTES": "8000000",
    "GANFORGE_MAX_ARCHIVE_FILES": "100",
    "GANFORGE_MAX_DATASET_BYTES": "4000000",
}


@pytest.fixture(scope="module", params=BACKENDS)
def limited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """An API (no worker needed) whose upload limits are small enough to hit in a test."""
    data_dir = tmp_path_factory.mktemp(f"ganforge-limits-{request.param}")
    with api_only(request.param, data_dir, **LIMITS) as deployment:
        yield deployment


def _bomb() -> bytes:
    """50 MB of zeros deflated to about 50 kB, as an image in a class folder."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a/bomb.png", b"\0" * 50_000_000)
    return buffer.getvalue()


def _huge_flat_png() -> bytes:
    return image_bytes(np.zeros((2000, 2000), np.uint8))  # a few kB; 16 MB as float32


LIMIT_CASES = [
    ("streamed-too-big.npz", lambda: b"\0" * 1_020_000, "file", "larger than the limit"),
    ("bomb.zip", _bomb, "file", "unpacks to 50000000 bytes"),
    ("many-files.zip", lambda: zip_bytes({f"a/{i}.png": PNG8 for i in range(150)}), "file", "150 entries"),
    ("pixel-bomb.zip", lambda: zip_bytes({"a/1.png": _huge_flat_png()}), "file", "normalised to float32"),
]


@pytest.mark.parametrize(("filename", "make", "field", "fragment"), LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
def test_over_a_limit_is_413_and_leaves_nothing(
    limited: Service, filename: str, make: Any, field: str, fragment: str
) -> None:
    before = snapshot(limited)
    with limited.client() as client:
        response = upload(client, filename, make())
    assert_refused(limited, response, 413, field, fragment, before)


def test_oversized_streamed_upload_is_413_while_streaming(limited: Service) -> None:
    """No Content-Length (chunked): the limit trips while the body streams in."""
    before = snapshot(limited)
    boundary = "chunks"

    def body() -> Iterator[bytes]:
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.npz"\r\n\r\n'.encode()
        for _ in range(30):
            yield b"\0" * 100_000
        yield f"\r\n--{boundary}--\r\n".encode()

    with limited.client() as client:
        response = client.post(
            "/v1/datasets", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
    assert_refused(limited, response, 413, "file", "larger than the limit", before)


def test_declared_oversized_body_is_413_before_it_is_read(limited: Service) -> None:
    with socket.create_connection(("127.0.0.1", limited.port)) as connection:
        connection.sendall(
            b"POST /v1/datasets HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer key-a\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 10000000000\r\n\r\n"
        )
        answer = connection.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer


# --------------------------------------------------------------------------- the worker's loader


def test_worker_memory_maps_a_large_local_dataset_and_resizes_with_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from models.artifacts import ArtifactStore
    from models.ingest import canonical
    from worker import uploaded

    artifacts = ArtifactStore(str(tmp_path))
    x = RNG.uniform(-1, 1, (10, 3, 32, 32)).astype(np.float32)
    (tmp_path / "datasets" / "d").mkdir(parents=True)
    np.save(tmp_path / "datasets" / "d" / "x.npy", x)
    monkeypatch.setattr(canonical, "MMAP_BYTES", 1)
    mapped = canonical.read_array(artifacts, "datasets/d/x.npy")
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, x)
    tensor = torch.from_numpy(mapped)
    resized = uploaded.resize_images(tensor, 16)
    assert resized.shape == (10, 3, 16, 16) and float(resized.abs().max()) <= 1.0
    monkeypatch.setattr(canonical, "MMAP_BYTES", 10**12)
    assert not isinstance(canonical.read_array(artifacts, "datasets/d/x.npy"), np.memmap)


# --------------------------------------------------------------------------- the store's dataset methods


def _record(store: Any, dataset_id: str, owner: str, content_hash: str) -> tuple[Any, bool]:
    info = {"kind": "points", "shape": [2], "size": 3}
    return store.create_dataset(
        dataset_id=dataset_id,
        owner=owner,
        name=dataset_id,
        format="npz",
        info=info,
        content_hash=content_hash,
        size_bytes=24,
        data_key=f"datasets/{dataset_id}",
        preview_key=None,
    )


def test_store_dedupes_by_owner_and_hash_and_guards_deletes(store: Any) -> None:
    from sqlalchemy import update

    from models.records import Job
    from models.spec import JobSpec
    from models.store import DatasetInUse

    first, created = _record(store, "d1", "team-a", "h")
    again, created_again = _record(store, "d2", "team-a", "h")  # the unique constraint decides, not a pre-check
    assert created and not created_again and again.id == "d1"
    assert _record(store, "d3", "team-b", "h")[1]  # another owner's identical content is theirs
    assert [d.id for d in store.list_datasets(owner="team-a")[0]] == ["d1"]

    spec = JobSpec.model_validate({"dataset": {"id": "d1"}, "architecture": {"name": "mlp"}, "loss": {"name": "nsgan"}})
    job, _ = store.create_job(owner="team-a", spec=spec, idempotency_key=None)
    with pytest.raises(DatasetInUse) as refused:
        store.delete_dataset(dataset_id="d1", owner="team-a")
    assert refused.value.job_ids == [job.id]
    assert store.delete_dataset(dataset_id="d1", owner="team-b") is None
    with store.session() as session, session.begin():
        session.execute(update(Job).where(Job.id == job.id).values(status="succeeded"))
    assert store.delete_dataset(dataset_id="d1", owner="team-a").id == "d1"
    assert store.get_dataset(dataset_id="d1") is None
