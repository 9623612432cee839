"""The quality figure of every snapshot: what a job's samples and metrics carry as its `evaluation`.

    evaluate = make_evaluator(spec, data, device)        # once per run; None: nothing to evaluate
    evaluation = evaluate(gan, step, samples, labels)    # at each snapshot: {name: float} or None

- 2-D points (ring8, grid25): PacGAN's modes_covered, hq_fraction, reverse_kl (worker/gan/evaluation.py),
  on the snapshot's own samples.
- Labelled images (built-in `digits`, an upload with labels): `fd`, the Fréchet distance (FID's
  formula, Heusel et al. 2017) in the 64-d feature space of a small classifier trained on the data
  set itself (worker/gan/classifier.py); plus `class_accuracy` for cgan and `code_purity` and
  `code_nmi` of the first categorical code for infogan.
- Any image data, when the worker has GANFORGE_INCEPTION_WEIGHTS: `fid` and `kid` (Bińkowski et al.
  2018: unbiased MMD² with the kernel (xᵀy/d + 1)³) in the pool3 features of the FID Inception-v3
  (worker/gan/inception.py). This worker's setting decides, not the API's: what a job reported is what its
  worker recorded (its metric series, each sample's `evaluation`), which the catalog points to.

The image figures are measured on their own fixed evaluation batch, not the 64-image snapshot:
EVAL_IMAGES generated from a latent fixed by the job's seed (G in eval mode, the EMA copy when the
job has one: `GAN.generate`), against a fixed subset of REAL_IMAGES real images. FID/KID use the
first INCEPTION_IMAGES_GPU of them on a GPU, INCEPTION_IMAGES_CPU on a CPU (Inception-v3 at
299×299 px costs about half a second per image on one CPU core); a figure from N images is biased
by about 1/N, so compare FIDs measured at the same N only.

The classifier is trained once per process per data set (cached by a hash of the images it is
trained and measured on), on at most CLASSIFIER_IMAGES images downsampled to at most
CLASSIFIER_SIDE px (digits: its native 8 px), with one CPU thread: deterministic and a few seconds.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import EllipsisType
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.spec import JobSpec
from worker.gan import GAN, LoadedData, evaluate_points
from worker.gan.classifier import DigitClassifier, class_accuracy, code_nmi, code_purity, train_classifier

EVAL_IMAGES = 500  # generated images per evaluation
REAL_IMAGES = 1000  # real images the figures compare with (all of them when fewer)
GENERATE_CHUNK = 250
INCEPTION_IMAGES_GPU, INCEPTION_IMAGES_CPU = 500, 100
CLASSIFIER_SIDE = 16  # larger images are downsampled for the classifier (cost grows with the area)
NATIVE_SIDE = {"digits": 8}  # a built-in data set's own resolution: upsampled copies add nothing
CLASSIFIER_IMAGES = 5000
CLASSIFIER_MIN_IMAGES = 50  # fewer labelled images train no classifier worth measuring with: no fd
CLASSIFIER_STEPS = 240  # optimiser steps (batch 128): 20 epochs of digits
CLASSIFIER_MAX_EPOCHS = 20
EVAL_SEED_OFFSET = 3  # the snapshot latent is seed + 2 (worker/trainer.py); this batch has its own
SUBSET_SEED = 20180101  # which real images: the same for every job on the data, whatever its seed
KID_SUBSET = 1000  # Bińkowski et al.: the mean over subsets of 1,000 when there are more samples
KID_SUBSETS = 100
CACHE_SIZE = 8  # data sets whose classifier (and real features) a worker keeps


class Evaluator(Protocol):
    """A snapshot's evaluation: `(gan, step, samples, labels) -> {figure: value}` or None."""

    def __call__(
        self, gan: GAN, step: int, samples: np.ndarray, labels: np.ndarray | None
    ) -> dict[str, float] | None: ...


# --------------------------------------------------------------------------- the statistics


def frechet_distance_features(a: np.ndarray, b: np.ndarray) -> float:
    """‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2(Σ_a Σ_b)^½) between (n, d) and (m, d) feature sets (n, m ≥ 2).

    FID's formula (Heusel et al. 2017) on any features. Tr((Σ_a Σ_b)^½) is the sum of the singular
    values of A Bᵀ / √((n−1)(m−1)) for the centred features A, B (exact, and an n×m problem when the
    samples are fewer than the dimensions), else of √eig(Σ_a^½ Σ_b Σ_a^½) (symmetric, d×d). Never
    below 0 (rounding can make FD(x, x) a hair negative). ValueError for fewer than 2 samples.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n, m, d = len(a), len(b), a.shape[1]
    if n < 2 or m < 2:
        raise ValueError(f"the Fréchet distance needs at least 2 samples on each side, got {n} and {m}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    ac, bc = a - mu_a, b - mu_b
    trace_a, trace_b = (ac**2).sum() / (n - 1), (bc**2).sum() / (m - 1)
    if n * m <= d * d:
        root_trace = np.linalg.svd(ac @ bc.T, compute_uv=False).sum() / math.sqrt((n - 1) * (m - 1))
    else:
        cov_a, cov_b = ac.T @ ac / (n - 1), bc.T @ bc / (m - 1)
        w, v = np.linalg.eigh(cov_a)
        root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        root_trace = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return max(float(((mu_a - mu_b) ** 2).sum() + trace_a + trace_b - 2 * root_trace), 0.0)


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    n, m = len(x), len(y)
    xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(xx + yy - 2 * kxy.mean())


def kernel_inception_distance(
    a: np.ndarray, b: np.ndarray, subset_size: int = KID_SUBSET, subsets: int = KID_SUBSETS, seed: int = 0
) -> float:
    """KID (Bińkowski et al. 2018): the unbiased estimate of MMD² with the cubic polynomial kernel
    k(x, y) = (xᵀy/d + 1)³ between (n, d) and (m, d) features; the mean over `subsets` random subsets of
    `subset_size` (without replacement, seeded) when both sets are larger, else one estimate on all.
    Unbiased, so it can be slightly negative for two samples of one distribution. ValueError below 2 samples.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"KID needs at least 2 samples on each side, got {len(a)} and {len(b)}")
    if len(a) <= subset_size or len(b) <= subset_size:
        return _mmd2_unbiased(a, b)
    rng = np.random.default_rng(seed)
    values = [
        _mmd2_unbiased(
            a[rng.choice(len(a), subset_size, replace=False)], b[rng.choice(len(b), subset_size, replace=False)]
        )
        for _ in range(subsets)
    ]
    return float(np.mean(values))


# --------------------------------------------------------------------------- the classifier, cached


@dataclass(frozen=True)
class _Classifier:
    model: DigitClassifier
    accuracy: float  # held-out accuracy on the real images
    side: int
    real_features: np.ndarray  # (REAL_IMAGES, 64) float64


_CLASSIFIERS: OrderedDict[str, _Classifier] = OrderedDict()
_INCEPTION_REAL: OrderedDict[tuple[str, str, int], np.ndarray] = OrderedDict()
_LOCK = threading.Lock()


@contextmanager
def _one_thread() -> Iterator[None]:
    # A net this small gains nothing from threads, and on a shared CPU two threads ran ~10× slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _subset(n: int, k: int, seed: int) -> Tensor:
    """k fixed indices of n (all of them, in order, when k ≥ n)."""
    if k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


def _downsample(images: Tensor, side: int) -> Tensor:
    if images.shape[-1] == side and images.shape[-2] == side:
        return images
    return F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False, antialias=True)


def _digest(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def _features(model: DigitClassifier, images: Tensor) -> np.ndarray:
    return torch.cat([model.features(c) for c in images.split(512)]).double().numpy()


def classifier_for(x: Tensor, y: Tensor, side: int) -> _Classifier:
    """The classifier of a labelled image data set (x: (N, C, H, W) in [-1, 1], y: (N,) int64) at `side` px,
    trained once per process (cache keyed by a hash of the images used) with its real features."""
    train_idx = _subset(len(x), CLASSIFIER_IMAGES, SUBSET_SEED)
    real_idx = _subset(len(x), REAL_IMAGES, SUBSET_SEED + 1)
    key = _digest(x[train_idx], y[train_idx], x[real_idx], torch.tensor([side]))
    with _LOCK:
        if key in _CLASSIFIERS:
            _CLASSIFIERS.move_to_end(key)
            return _CLASSIFIERS[key]
    with _one_thread():
        train_x = _downsample(x[train_idx].float(), side)
        batches_per_epoch = math.ceil(len(train_x) * 0.8 / 128)
        epochs = max(1, min(CLASSIFIER_MAX_EPOCHS, CLASSIFIER_STEPS // batches_per_epoch))
        model, accuracy = train_classifier(train_x, y[train_idx], seed=0, epochs=epochs)
        model.requires_grad_(False)
        entry = _Classifier(model, accuracy, side, _features(model, _downsample(x[real_idx].float(), side)))
    with _LOCK:
        _CLASSIFIERS[key] = entry
        while len(_CLASSIFIERS) > CACHE_SIZE:
            _CLASSIFIERS.popitem(last=False)
    return entry


def _inception_real(x: Tensor, path: Path, device: torch.device, n: int) -> np.ndarray:
    from worker.gan.inception import inception_features, load_inception

    real_idx = _subset(len(x), n, SUBSET_SEED + 1)
    key = (_digest(x[real_idx]), str(path), n)
    with _LOCK:
        if key in _INCEPTION_REAL:
            return _INCEPTION_REAL[key]
    features = inception_features(load_inception(path, device), x[real_idx]).numpy()
    with _LOCK:
        _INCEPTION_REAL[key] = features
        while len(_INCEPTION_REAL) > CACHE_SIZE:
            _INCEPTION_REAL.popitem(last=False)
    return features


# --------------------------------------------------------------------------- the evaluators


class PointsEvaluator:
    """PacGAN's figures of the snapshot's points on ring8 / grid25 (None on other point data)."""

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset

    def __call__(
        self,
        gan: GAN,
        step: int,
        samples: np.ndarray,
        labels: np.ndarray | None,
    ) -> dict[str, float] | None:
        del gan, step, labels  # the Evaluator signature; points are scored as the snapshot has them
        return evaluate_points(samples, self.dataset)


class ImageEvaluator:
    """fd (+ class_accuracy / code_purity, code_nmi) from the data's classifier, and fid/kid from the
    Inception net, on EVAL_IMAGES images from a latent fixed by `seed`; see the module docstring."""

    def __init__(
        self,
        *,
        seed: int,
        device: torch.device,
        classifier: _Classifier | None,
        num_classes: int,
        inception_path: Path | None,
        inception_real: np.ndarray | None,
    ) -> None:
        self.seed, self.device = seed, device
        self.classifier, self.num_classes = classifier, num_classes
        self.inception_path, self.inception_real = inception_path, inception_real
        self._inputs: dict[str, Tensor] | None = None

    def _generate(self, gan: GAN) -> tuple[Tensor, dict[str, Tensor]]:
        if self._inputs is None:  # the same batch at every snapshot, and after a resume
            generator = torch.Generator(device="cpu").manual_seed(self.seed + EVAL_SEED_OFFSET)
            self._inputs = gan.fixed_inputs(EVAL_IMAGES, generator)
        inputs = self._inputs
        chunks = [
            gan.generate({name: t[start : start + GENERATE_CHUNK] for name, t in inputs.items()}).float().cpu()
            for start in range(0, EVAL_IMAGES, GENERATE_CHUNK)
        ]
        return torch.cat(chunks), inputs

    def __call__(
        self,
        gan: GAN,
        step: int,
        samples: np.ndarray,
        labels: np.ndarray | None,
    ) -> dict[str, float] | None:
        del step, samples, labels  # the Evaluator signature; images are scored on their own batch
        images, inputs = self._generate(gan)
        if not torch.isfinite(images).all():
            return None  # the snapshot's own check reports the divergence; no figure from NaN images
        result: dict[str, float] = {}
        if self.classifier is not None:
            c = self.classifier
            with _one_thread():
                small = _downsample(images, c.side)
                result["fd"] = frechet_distance_features(c.real_features, _features(c.model, small))
                if "labels" in inputs:
                    result["class_accuracy"] = class_accuracy(c.model, small, inputs["labels"])
                elif "categorical" in inputs:
                    codes = inputs["categorical"][:, 0]
                    result["code_purity"] = code_purity(c.model, small, codes, self.num_classes)
                    result["code_nmi"] = code_nmi(c.model, small, codes)
        if self.inception_path is not None and self.inception_real is not None:
            from worker.gan.inception import inception_features, load_inception

            n = len(self.inception_real)
            fake = inception_features(load_inception(self.inception_path, self.device), images[:n]).numpy()
            result["fid"] = frechet_distance_features(self.inception_real, fake)
            result["kid"] = kernel_inception_distance(self.inception_real, fake)
        return result or None


def inception_images(device: torch.device) -> int:
    """Images FID/KID are measured on: INCEPTION_IMAGES_GPU on a GPU, INCEPTION_IMAGES_CPU on a CPU."""
    return INCEPTION_IMAGES_GPU if device.type == "cuda" else INCEPTION_IMAGES_CPU


def make_evaluator(
    spec: JobSpec,
    data: LoadedData,
    device: torch.device,
    *,
    inception_weights: Path | str | None | EllipsisType = ...,
) -> Evaluator | None:
    """The evaluator of a run of `spec` on `data`, or None when the data has no quality figure.

    Points: PointsEvaluator (ring8/grid25 figures). Images: ImageEvaluator with the classifier when the
    data has labels (≥ 2 classes, ≥ CLASSIFIER_MIN_IMAGES images) and the Inception net when
    `inception_weights` (default: the setting GANFORGE_INCEPTION_WEIGHTS) names a file; None for unlabelled
    images without Inception weights.
    Trains the classifier (cached per process) and computes the real images' features here, so the first
    snapshot costs what every later one does. Raises FileNotFoundError / RuntimeError for an Inception
    weights file that is missing or not the FID network's.
    """
    if data.info.kind == "points":
        return PointsEvaluator(spec.dataset.builtin or "")
    if inception_weights is ...:
        from models.settings import get_settings

        inception_weights = get_settings().inception_weights
    path = Path(inception_weights).expanduser().resolve() if inception_weights is not None else None
    labelled = data.y is not None and data.info.num_classes >= 2 and len(data.x) >= CLASSIFIER_MIN_IMAGES
    if len(data.x) < 2 or data.x.shape[1] not in (1, 3):  # two real images at least; Inception takes grey or RGB
        path = None
    if not labelled and path is None:
        return None
    classifier = None
    if labelled:
        assert data.y is not None
        side = min(data.x.shape[-1], CLASSIFIER_SIDE, NATIVE_SIDE.get(spec.dataset.builtin or "", CLASSIFIER_SIDE))
        classifier = classifier_for(data.x, data.y, side)
    real = _inception_real(data.x, path, device, inception_images(device)) if path is not None else None
    return ImageEvaluator(
        seed=spec.training.seed,
        device=device,
        classifier=classifier,
        num_classes=data.info.num_classes,
        inception_path=path,
        inception_real=real,
    )
