"""The 2-D mode-collapse benchmark of PacGAN (Lin et al. 2018) on ring8 and grid25."""

from __future__ import annotations

import numpy as np

from worker.gan.datasets import MIXTURES

HQ_STDS = 3.0  # a sample is high quality within 3 standard deviations of its mode


def evaluate_points(samples: np.ndarray, dataset: str) -> dict[str, float] | None:
    """Modes covered, fraction of high-quality samples and reverse KL, or None for other data sets.

    `samples`: (N, 2) points (any (N, ...) whose first two features are the point). The
    protocol evaluates 2,500 samples; this scores whatever it is given. Each sample goes to
    the mode with the smallest standardised distance ‖Δ‖/σ; it is high quality (HQ) if that
    distance is < 3; a mode is covered if it has an HQ sample.

    `reverse_kl` is KL(p ‖ uniform) = Σ p_k log(K p_k) for the histogram p of the HQ samples
    over the K modes, as PacGAN's code builds it (fjxmlzn/PacGAN, MetricLogger: only points
    within the threshold are counted): 0 when every mode gets the same share of HQ samples,
    log K when they all fall in one; log K too when there is no HQ sample (the histogram is
    empty; nothing better than total collapse can be claimed). `reverse_kl_all` is the same
    figure over every finite sample's nearest mode, however far. A non-finite sample counts
    as low quality and is left out of both histograms.
    """
    if dataset not in MIXTURES:
        return None
    nearest, sigmas, modes = nearest_modes(samples, dataset)
    high_quality = sigmas < HQ_STDS
    return {
        "modes_covered": float(np.unique(nearest[high_quality]).size),
        "hq_fraction": float(high_quality.sum() / max(len(samples), 1)),
        "reverse_kl": reverse_kl_to_uniform(nearest[high_quality], modes),
        "reverse_kl_all": reverse_kl_to_uniform(nearest, modes),
    }


def reverse_kl_to_uniform(assigned: np.ndarray, modes: int) -> float:
    """KL(p ‖ uniform over `modes`) in nats for the histogram p of the mode indices `assigned`;
    log(modes) when `assigned` is empty."""
    if len(assigned) == 0:
        return float(np.log(modes))
    share = np.bincount(assigned, minlength=modes) / len(assigned)
    nonzero = share > 0
    return float((share[nonzero] * np.log(share[nonzero] * modes)).sum())


def nearest_modes(samples: np.ndarray, dataset: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Each finite sample's nearest mode of `dataset` (a mixture) and its standardised distance ‖Δ‖/σ
    to it; and the number of modes. Non-finite samples are left out."""
    centers, std = MIXTURES[dataset]
    points = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)[:, :2]
    points = points[np.isfinite(points).all(axis=1)]
    distances = np.linalg.norm(points[:, None, :] - centers[None], axis=2) / std
    nearest = distances.argmin(axis=1)
    return nearest, distances[np.arange(len(nearest)), nearest], len(centers)
