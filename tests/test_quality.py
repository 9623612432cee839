"""Image quality at every snapshot: the classifier's Fréchet distance, KID, and the FID Inception-v3 path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from api.routes.results import RECORDED_METRICS
from models.catalog import quality_measures, quality_section
from models.settings import get_settings
from models.spec import JobSpec
from tests.service import Service, wait_for
from tests.test_cli_client import ganforge
from worker import quality
from worker.gan import LoadedData, build_gan, load_builtin
from worker.gan.inception import FIDInceptionV3, inception_features, load_inception
from worker.quality import (
    ImageEvaluator,
    classifier_for,
    frechet_distance_features,
    kernel_inception_distance,
    make_evaluator,
)
from worker.trainer import train

CPU = torch.device("cpu")
TINY_DCGAN = {"name": "dcgan", "base_channels": 8, "latent_dim": 16}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """On this shared 2-core machine two intra-op threads ran these small nets 5-30× slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> LoadedData:
    return load_builtin("digits", 16)


def noisy(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(7))


def fd_reference(a: np.ndarray, b: np.ndarray) -> float:
    """pytorch-fid's calculate_frechet_distance: scipy's sqrtm of Σ_a Σ_b."""
    mu_a, mu_b, cov_a, cov_b = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


@pytest.mark.parametrize(("n", "m", "d"), [(300, 200, 16), (20, 30, 64)])  # the d×d route, then the n×m one
def test_frechet_distance_matches_the_sqrtm_formula(n: int, m: int, d: int) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    b = 0.5 + rng.standard_normal((m, d)) @ rng.standard_normal((d, d))
    assert frechet_distance_features(a, b) == pytest.approx(fd_reference(a, b), rel=1e-6)
    assert frechet_distance_features(a, a) == pytest.approx(0.0, abs=1e-6 * np.trace(np.cov(a, rowvar=False)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance_features(a[:1], b)


def test_classifier_fd_is_zero_on_itself_and_grows_with_noise(digits: LoadedData) -> None:
    assert digits.y is not None
    entry = classifier_for(digits.x, digits.y, 8)
    assert entry.accuracy > 0.9, entry.accuracy
    assert classifier_for(digits.x, digits.y, 8) is entry  # trained once per process
    real = digits.x[:600]
    features = [quality._features(entry.model, quality._downsample(noisy(real, s), 8)) for s in (0, 0.2, 0.5, 1)]
    assert frechet_distance_features(features[0], features[0]) == pytest.approx(0.0, abs=1e-6)
    distances = [frechet_distance_features(features[0], f) for f in features[1:]]
    assert 0 < distances[0] < distances[1] < distances[2], distances


def test_kid_is_about_zero_between_samples_of_one_distribution_and_grows_with_the_shift() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((400, 32)), rng.standard_normal((400, 32))
    distances = [kernel_inception_distance(x, y + shift) for shift in (0.1, 0.3, 1.0)]
    assert 0 < distances[0] < distances[1] < distances[2], distances
    assert abs(kernel_inception_distance(x, y)) < 0.05 * distances[1]
    assert abs(kernel_inception_distance(x, y, subset_size=100, subsets=20)) < 0.05 * distances[1]  # subset mean
    # KID(x, x): the unbiased estimator (meant for independent samples) leaves only its O(1/n) term,
    # −2(mean k(x_i, x_i) − mean_{i≠j} k(x_i, x_j))/n
    kernel = (x @ x.T / 32 + 1) ** 3
    off_diagonal = (kernel.sum() - np.trace(kernel)) / (400 * 399)
    same = kernel_inception_distance(x, x)
    assert same == pytest.approx(-2 * (np.trace(kernel) / 400 - off_diagonal) / 400, rel=1e-9)
    assert abs(same) < 0.2 * distances[1]


def test_the_inception_net_has_pytorch_fids_state_dict() -> None:
    # pytorch-fid builds torchvision's Inception3(num_classes=1008, aux_logits=False) with FIDInceptionA/C/E_1/E_2
    # blocks and loads pt_inception-2015-12-05-6726825d.pth into it strictly: 94 conv+BN units (5 stem, 3×7 A,
    # 4 B, 4×10 C, 6 D, 2×9 E), each conv.weight + bn.{weight,bias,running_mean,running_var,num_batches_tracked},
    # and fc. torchvision documents 27,161,264 parameters for inception_v3 with its aux head (3,326,696) and
    # 1000 classes: 23,834,568 + 8×2049 for 1008 classes.
    net = FIDInceptionV3()
    state = net.state_dict()
    assert len(state) == 94 * 6 + 2
    assert sum(p.numel() for p in net.parameters()) == 27_161_264 - 3_326_696 + 8 * 2049
    shapes = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_4a_3x3.bn.running_var": (192,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7b.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    assert {name: tuple(state[name].shape) for name in shapes} == shapes
    assert not any(name.startswith("AuxLogits") for name in state)
    assert sum(name.endswith("bn.num_batches_tracked") for name in state) == 94


@pytest.fixture
def random_inception(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The FID network with random (He) weights saved as a state_dict, named by GANFORGE_INCEPTION_WEIGHTS."""
    torch.manual_seed(0)
    net = FIDInceptionV3()
    for module in net.modules():
        if isinstance(module, nn.Conv2d):  # He init keeps the activations' scale through 94 ReLU layers
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = tmp_path / "pt_inception-random.pth"
    torch.save(net.state_dict(), path)
    monkeypatch.setenv("GANFORGE_INCEPTION_WEIGHTS", str(path))
    monkeypatch.setattr(quality, "INCEPTION_IMAGES_CPU", 4)  # ~0.5 s an image on one CPU core
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


@pytest.mark.slow
def test_fid_through_the_inception_weights_setting(random_inception: Path, digits: LoadedData) -> None:
    spec = JobSpec.model_validate(
        {"dataset": {"builtin": "digits", "resize": 16}, "architecture": TINY_DCGAN, "loss": {"name": "nsgan"}}
    )
    unlabelled = LoadedData(digits.x, None, digits.info.model_copy(update={"num_classes": 0}))
    evaluate = make_evaluator(spec, unlabelled, CPU)  # unlabelled images: Inception only
    assert isinstance(evaluate, ImageEvaluator) and evaluate.classifier is None
    assert evaluate.inception_path == random_inception.resolve() and evaluate.inception_real is not None
    real = evaluate.inception_real
    assert real.shape == (4, 2048)
    result = evaluate(build_gan(spec, digits.info, CPU), 10, np.zeros(0), None)
    assert result is not None and set(result) == {"fid", "kid"} and result["fid"] > 0, result
    # FD(x, x) = 0 and FD grows with noise, on the real subset the evaluator measures against
    net = load_inception(random_inception, CPU)
    images = digits.x[quality._subset(len(digits.x), 4, quality.SUBSET_SEED + 1)]
    assert frechet_distance_features(real, real) == pytest.approx(0.0, abs=1e-6 * float((real**2).sum()))
    distances = [
        frechet_distance_features(real, inception_features(net, noisy(images, s)).numpy()) for s in (0.2, 0.6, 2)
    ]
    assert 0 < distances[0] < distances[1] < distances[2], distances


def test_a_wrong_inception_file_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "not-inception.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(RuntimeError, match="not the FID Inception-v3 state_dict"):
        load_inception(path, CPU)
    with pytest.raises(FileNotFoundError, match="GANFORGE_INCEPTION_WEIGHTS"):
        load_inception(tmp_path / "missing.pth", CPU)


class Snapshots:
    """A trainer sink that keeps what the quality figures need."""

    def __init__(self) -> None:
        self.evaluations: dict[int, dict[str, float] | None] = {}
        self.metrics_seen: dict[int, set[str]] = {}

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.metrics_seen.setdefault(step, set()).update(values)

    def sample(
        self, step: int, samples: np.ndarray, labels: np.ndarray | None, evaluation: dict[str, float] | None
    ) -> None:
        del samples, labels
        self.evaluations[step] = evaluation

    def checkpoint(self, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        del step, weights, state

    def should_stop(self) -> bool:
        return False

    def alert(self, alert: dict[str, Any]) -> None:
        del alert


@pytest.mark.parametrize(
    ("loss", "figures"),
    [
        ({"name": "nsgan"}, ["fd"]),
        ({"name": "cgan"}, ["fd", "class_accuracy"]),
        ({"name": "infogan", "categorical_codes": [10], "continuous_codes": 1}, ["fd", "code_purity", "code_nmi"]),
    ],
)
def test_digits_snapshots_carry_the_quality_figures(
    digits: LoadedData, loss: dict[str, Any], figures: list[str]
) -> None:
    spec = JobSpec.model_validate(
        {
            "dataset": {"builtin": "digits", "resize": 16},
            "architecture": TINY_DCGAN,
            "loss": loss,
            "training": {"steps": 40, "batch_size": 32, "ema_decay": 0.9},
            "every": {"metrics": 10, "samples": 20, "checkpoint": 40},
        }
    )
    sink = Snapshots()
    train(spec, digits, sink, CPU)
    assert sorted(sink.evaluations) == [20, 40]
    for step, evaluation in sink.evaluations.items():
        assert evaluation is not None and set(evaluation) == set(figures), evaluation
        assert set(figures) <= sink.metrics_seen[step]
        assert all(np.isfinite(v) for v in evaluation.values())
    assert quality_measures("images", loss["name"], labelled=True, inception=False) == figures  # the catalog's


@pytest.mark.slow
@pytest.mark.parametrize("service", ["embedded"], indirect=True)
def test_a_digits_job_reports_fd_and_the_catalog_says_so(service: Service) -> None:
    spec = {
        "dataset": {"builtin": "digits", "resize": 16},
        "architecture": TINY_DCGAN,
        "loss": {"name": "cgan"},
        "training": {"steps": 20, "batch_size": 32},
        "every": {"metrics": 10, "samples": 10, "checkpoint": 20},
    }
    with service.client() as client:
        quality_section = client.get("/v1/catalog").json()["quality"]
        assert quality_section["labelled_images"]["measures"] == ["fd"]
        assert quality_section["labelled_images"]["by_loss"]["cgan"] == ["class_accuracy"]
        # The API process cannot see a worker's weights: the catalog says whose setting decides, not "enabled".
        assert "enabled" not in quality_section["inception"]
        assert "worker that runs it has GANFORGE_INCEPTION_WEIGHTS" in quality_section["inception"]["description"]
        response = client.post("/v1/jobs", json=spec)
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        done = wait_for(client, job_id, ("succeeded", "failed"), timeout=180)
        assert done["status"] == "succeeded", done
        samples = client.get(f"/v1/jobs/{job_id}/samples").json()["samples"]
        assert [s["step"] for s in samples] == [10, 20]
        assert all(set(s["evaluation"]) == {"fd", "class_accuracy"} and s["evaluation"]["fd"] > 0 for s in samples)
        series = client.get(f"/v1/jobs/{job_id}/metrics", params={"names": "fd,class_accuracy"}).json()["series"]
        assert series["fd"]["steps"] == [10, 20]
        assert series["fd"]["values"] == [s["evaluation"]["fd"] for s in samples]
        # The job's metrics are the source of truth: the series its worker recorded name the figures it reported
        # (this worker has no Inception weights: no fid/kid series), as the catalog's quality section says.
        recorded = set(client.get(f"/v1/jobs/{job_id}/metrics").json()["series"])
        figures = {"fd", "class_accuracy", "code_purity", "code_nmi", "fid", "kid"}
        assert recorded & figures == {"fd", "class_accuracy"}, recorded
        assert "/metrics" in quality_section["inception"]["source_of_truth"]


@pytest.mark.parametrize("service", ["embedded"], indirect=True)
def test_ganforge_catalog_quality_prints_the_section_and_exits_0(service: Service) -> None:
    # `quality` is a section, not an entry of one: the command looked only among entries and exited 3 (not found).
    shown = ganforge(service, "catalog", "quality")
    assert shown.returncode == 0, shown
    assert "GANFORGE_INCEPTION_WEIGHTS" in shown.stdout and "modes_covered" in shown.stdout, shown.stdout
    assert json.loads(ganforge(service, "catalog", "quality", "--json").stdout) == quality_section()
    watch = ganforge(service, "catalog", "watch")  # the other section that is no entry: what training.watch reports
    assert watch.returncode == 0 and "non-finite values only" in watch.stdout, watch
    missing = ganforge(service, "catalog", "no-such-thing")
    assert missing.returncode == 3 and "quality" in missing.stderr, missing


def test_the_catalog_and_the_metrics_route_know_every_figure_the_worker_reports() -> None:
    section = quality_section()
    measures = [
        *section["points"]["measures"],
        *section["labelled_images"]["measures"],
        *section["inception"]["measures"],
    ]
    measures += [name for names in section["labelled_images"]["by_loss"].values() for name in names]
    figures = {"modes_covered", "hq_fraction", "reverse_kl", "fd", "class_accuracy", "code_purity", "code_nmi"}
    assert set(measures) == figures | {"fid", "kid"}
    assert set(measures) <= RECORDED_METRICS  # asked for before the first snapshot: an empty series, not a 404
    how = section["labelled_images"]["description"] + section["inception"]["description"]
    for count in (quality.EVAL_IMAGES, quality.REAL_IMAGES, quality.INCEPTION_IMAGES_GPU, quality.INCEPTION_IMAGES_CPU):
        assert f"{count:,}" in how, (count, how)
    assert (
        quality_measures("points", "nsgan", dataset="grid25", labelled=True, inception=True)
        == section["points"]["measures"]
    )
    assert quality_measures("points", "nsgan", dataset="spiral", labelled=False, inception=True) == []
    assert quality_measures("images", "wgan", labelled=False, inception=True) == ["fid", "kid"]
    assert quality_measures("images", "infogan", labelled=True, inception=True) == [
        "fd",
        "code_purity",
        "code_nmi",
        "fid",
        "kid",
    ]
