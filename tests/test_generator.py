"""ganforge.load_generator against jobs a real service trained: from a downloaded file and by job id.

The generator is the service's concern only through its checkpoints, so one backend (the embedded
default) is enough here; the store backends are covered by the service tests.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import ganforge
from ganforge.client import Client, NotFound
from ganforge.generator import NotACheckpoint
from tests.service import ROOT, Service, wait_for

EMBEDDED = pytest.mark.parametrize("service", ["embedded"], indirect=True)

POINTS_EMA = {  # EMA on: the snapshot and load_generator both use the EMA copy of G
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 64, "depth": 2},
    "loss": {"name": "nsgan"},
    "training": {"steps": 200, "batch_size": 64, "ema_decay": 0.99, "seed": 3},
    "every": {"metrics": 50, "samples": 100, "checkpoint": 100},
}
CGAN_DIGITS = {
    "dataset": {"builtin": "digits", "resize": 16},
    "architecture": {"name": "dcgan", "base_channels": 8, "latent_dim": 16},
    "loss": {"name": "cgan"},
    "training": {"steps": 20, "batch_size": 16},
    "every": {"metrics": 10, "samples": 20, "checkpoint": 20},
}
INFOGAN_POINTS = {
    "dataset": {"builtin": "ring8"},
    "architecture": {"name": "mlp", "hidden": 32, "depth": 2},
    "loss": {"name": "infogan"},
    "training": {"steps": 30, "batch_size": 32},
    "every": {"metrics": 10, "samples": 30, "checkpoint": 30},
}


@pytest.fixture(scope="module")
def jobs(service: Service, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The three jobs trained, each with its latest checkpoint downloaded to a file."""
    folder = tmp_path_factory.mktemp("checkpoints")
    out: dict[str, dict[str, Any]] = {}
    with service.client() as client:
        for name, spec in (("points", POINTS_EMA), ("cgan", CGAN_DIGITS), ("infogan", INFOGAN_POINTS)):
            created = client.post("/v1/jobs", json=spec)
            assert created.status_code == 201, created.text
            out[name] = created.json()
        for name, job in out.items():
            done = wait_for(client, job["id"], ("succeeded", "failed"), timeout=180)
            assert done["status"] == "succeeded", (done, service.logs())
            response = client.get(f"/v1/jobs/{job['id']}/checkpoints/latest")
            assert response.status_code == 200
            path = folder / f"{name}.safetensors"
            path.write_bytes(response.content)
            out[name] = {**done, "path": path}
    return out


@pytest.fixture
def api(service: Service) -> Iterator[Client]:
    with Client(service.url, api_key="key-a") as client:
        yield client


def _without_dataset_metadata(path: Path, out: Path) -> Path:
    """A copy of a checkpoint as written before its metadata held the data set's shape and classes."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    assert json.loads(metadata.pop("dataset"))["shape"]
    save_file(tensors, str(out), metadata=metadata)
    return out


def _npy(service: Service, job_id: str, step: int) -> np.ndarray:
    with service.client() as client:
        response = client.get(f"/v1/jobs/{job_id}/samples/{step}.npy")
        assert response.status_code == 200, response.text
        array: np.ndarray = np.load(io.BytesIO(response.content), allow_pickle=False)
        return array


@EMBEDDED
def test_a_downloaded_checkpoint_rebuilds_the_generator_and_reproduces_the_jobs_last_snapshot(
    service: Service, jobs: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    job = jobs["points"]
    g = ganforge.load_generator(job["path"])
    assert (g.step, g.job_id, g.shape, g.latent_dim, g.num_classes) == (200, job["id"], (2,), 2, 0)
    assert g.ema and g.spec.training.ema_decay == 0.99 and g.spec.architecture.name == "mlp"
    snapshot = g.snapshot()
    assert snapshot.shape == (2500, 2) and snapshot.dtype == torch.float32
    np.testing.assert_allclose(snapshot.numpy(), _npy(service, job["id"], 200), rtol=1e-4, atol=1e-5)
    # a built-in data set's shape is known without the metadata (checkpoints written before it held it)
    older = ganforge.load_generator(_without_dataset_metadata(job["path"], tmp_path / "older.safetensors"))
    assert older.shape == (2,) and torch.equal(older.snapshot(), snapshot)


@EMBEDDED
def test_generate_is_deterministic_per_seed_and_of_the_data_shape(jobs: dict[str, dict[str, Any]]) -> None:
    g = ganforge.load_generator(str(jobs["points"]["path"]))
    first, again, other = g.generate(7, seed=0), g.generate(7, seed=0), g.generate(7, seed=1)
    assert first.shape == (7, 2) and torch.isfinite(first).all()
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(g.generate(7), g.generate(7))  # no seed: fresh noise each call

    images = ganforge.load_generator(jobs["cgan"]["path"]).generate(5, seed=0)
    assert images.shape == (5, 1, 16, 16) and images.min() >= -1 and images.max() <= 1


@EMBEDDED
def test_cgan_labels_are_honoured_and_checked(service: Service, jobs: dict[str, dict[str, Any]]) -> None:
    job = jobs["cgan"]
    g = ganforge.load_generator(job["path"])
    assert (g.num_classes, g.shape, g.ema) == (10, (1, 16, 16), True)  # EMA of G is on by default
    assert g.class_names == tuple(str(i) for i in range(10))
    np.testing.assert_allclose(g.snapshot().numpy(), _npy(service, job["id"], 20), rtol=1e-4, atol=1e-5)

    threes, sevens = g.generate(4, seed=0, labels=3), g.generate(4, seed=0, labels=7)
    assert not torch.allclose(threes, sevens)  # same z, another class
    assert torch.equal(g.generate(4, seed=0, labels=[3, 3, 3, 3]), threes)
    mixed = g.generate(2, seed=0, labels=torch.tensor([3, 7]))
    assert torch.equal(mixed[0], threes[0])
    g.generate(3, seed=0)  # no labels: drawn uniformly, as in training
    with pytest.raises(ValueError, match=r"labels: 10 is out of range: indices are 0\.\.9"):
        g.generate(2, labels=10)
    with pytest.raises(ValueError, match="labels: expected one index or 3 of them"):
        g.generate(3, labels=[1, 2])
    with pytest.raises(ValueError, match="integer"):
        g.generate(2, labels=[0.5, 1.5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="labels apply to a cgan generator"):
        ganforge.load_generator(jobs["points"]["path"]).generate(2, labels=1)


@EMBEDDED
def test_infogan_codes_are_honoured_and_checked(jobs: dict[str, dict[str, Any]]) -> None:
    g = ganforge.load_generator(jobs["infogan"]["path"])
    assert g.categorical_codes == (10,) and g.continuous_codes == 2 and g.num_classes == 0
    base = g.generate(4, seed=0, codes={"categorical": 1, "continuous": [0.0, 0.0]})
    assert not torch.allclose(base, g.generate(4, seed=0, codes={"categorical": 6, "continuous": [0.0, 0.0]}))
    assert not torch.allclose(base, g.generate(4, seed=0, codes={"categorical": 1, "continuous": [1.0, -1.0]}))
    per_sample = g.generate(2, seed=0, codes={"categorical": [1, 6], "continuous": [[0.0, 0.0], [0.0, 0.0]]})
    assert torch.allclose(per_sample[0], base[0], atol=1e-6)  # a batch of 2 vs of 4: kernels may round differently
    with pytest.raises(ValueError, match=r"codes.categorical: 10 is out of range"):
        g.generate(2, codes={"categorical": 10})
    with pytest.raises(ValueError, match=r"codes.continuous: expected 2 values or shape \(2, 2\)"):
        g.generate(2, codes={"continuous": [0.0, 0.0, 0.0]})
    with pytest.raises(ValueError, match="unknown keys"):
        g.generate(2, codes={"style": 1})


@EMBEDDED
def test_n_must_be_positive_and_bounded(jobs: dict[str, dict[str, Any]]) -> None:
    g = ganforge.load_generator(jobs["points"]["path"])
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="n must be a positive integer"):
            g.generate(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="too many for one call"):
        g.generate(10**7)


@EMBEDDED
def test_by_job_id_through_the_service(service: Service, jobs: dict[str, dict[str, Any]], api: Client) -> None:
    job = jobs["points"]
    g = ganforge.load_generator(job["id"], api=api)
    assert g.step == 200 and g.job_id == job["id"]
    assert torch.equal(g.generate(5, seed=0), ganforge.load_generator(job["path"]).generate(5, seed=0))
    earlier = ganforge.load_generator(job["id"], api=api, step=100)
    assert earlier.step == 100
    np.testing.assert_allclose(earlier.snapshot().numpy(), _npy(service, job["id"], 100), rtol=1e-4, atol=1e-5)
    with pytest.raises(NotFound):
        ganforge.load_generator("no-such-job", api=api)


@EMBEDDED
def test_by_job_id_with_the_service_from_the_environment(
    service: Service, jobs: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GANFORGE_URL", service.url)
    monkeypatch.setenv("GANFORGE_API_KEY", "key-a")
    assert ganforge.load_generator(jobs["cgan"]["id"]).num_classes == 10


@EMBEDDED
def test_an_uploaded_data_set_s_shape_and_classes_come_from_the_service(
    service: Service, api: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = tmp_path / "rows.npz"
    rng = np.random.default_rng(0)
    np.savez(rows, x=rng.normal(size=(256, 3)).astype(np.float32), y=rng.integers(0, 4, 256))
    dataset = api.datasets.upload(rows, "rows3")
    spec = {
        "dataset": {"id": dataset.id},
        "architecture": {"name": "mlp", "hidden": 16, "depth": 1},
        "loss": {"name": "cgan"},
        "training": {"steps": 10, "batch_size": 32},
        "every": {"metrics": 10, "samples": 10, "checkpoint": 10},
    }
    job = api.wait(api.submit(spec).id, timeout=120)
    assert job.status == "succeeded", (job, service.logs())
    g = ganforge.load_generator(job.id, api=api)
    assert (g.shape, g.num_classes) == ((3,), 4)
    assert g.generate(6, seed=0, labels=3).shape == (6, 3)
    path = api.download_checkpoint(job.id, path=tmp_path / "rows.safetensors")
    monkeypatch.delenv("GANFORGE_URL", raising=False)
    alone = ganforge.load_generator(path)  # the checkpoint's metadata says the data's shape and classes
    assert (alone.shape, alone.num_classes) == ((3,), 4)

    # A checkpoint from before the metadata held the data set: the service is asked, or the error says to.
    older = _without_dataset_metadata(path, tmp_path / "older.safetensors")
    assert ganforge.load_generator(older, api=api).shape == (3,)
    with pytest.raises(ValueError, match=f"uploaded data set {dataset.id}.*pass api=Client"):
        ganforge.load_generator(older)


def test_files_that_are_not_ganforge_checkpoints_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.safetensors"
    text.write_text("not weights")
    with pytest.raises(NotACheckpoint, match="is not a safetensors file"):
        ganforge.load_generator(text)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(NotACheckpoint, match="not a ganforge checkpoint"):
        ganforge.load_generator(plain)
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        ganforge.load_generator(tmp_path / "missing.safetensors")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_import_ganforge_does_not_import_torch() -> None:
    result = _python("import sys, ganforge, ganforge.client; assert 'torch' not in sys.modules, 'torch imported'")
    assert result.returncode == 0, result.stderr


def test_without_torch_load_generator_says_what_to_install() -> None:
    result = _python("import sys; sys.modules['torch'] = None\nfrom ganforge import load_generator")
    assert result.returncode == 1
    assert "ImportError: ganforge.load_generator needs PyTorch" in result.stderr
    assert "pip install 'ganforge[worker]'" in result.stderr
