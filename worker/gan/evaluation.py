"""The 2-D mode-collapse benchmark of PacGAN (Lin et al. 2018) on ring8 and grid25."""

from __future__ import annotations

import numpy as np

from worker.gan.datasets import MIXTURES

HQ_STDS = 3.0  # a sample is high quality within 3 standard deviations of its mode


def evaluate_points(samples: np.ndarray, dataset: str) -> dict[str, float] | None:
    """Modes covered, fraction of high-quality samples and reverse KL, or None for other data sets.

    The protocol evaluates 2,500 samples; this scores whatever it is given. Each
    sample goes to the mode with the smallest standardised distance ‖Δ‖/σ; it is
    high quality (HQ) if that distance is < 3; a mode is covered if it has an HQ
    sample. Reverse KL is KL(generated mode histogram ‖ uniform) over all samples'
    assignments (0 when every mode gets the same share; log K when all fall in one).
    A non-finite sample counts as low quality and is left out of the histogram.
    """
    if dataset not in MIXTURES:
        return None
    nearest, sigmas, modes = nearest_modes(samples, dataset)
    high_quality = sigmas < HQ_STDS
    covered = np.unique(nearest[high_quality]).size
    counts = np.bincount(nearest, minlength=modes).astype(np.float64)
    share = counts / max(counts.sum(), 1.0)
    nonzero = share > 0
    reverse_kl = (
        float((share[nonzero] * np.log(share[nonzero] * modes)).sum()) if len(nearest) else float(np.log(modes))
    )
    return {
        "modes_covered": float(covered),
        "hq_fraction": float(high_quality.sum() / max(len(samples), 1)),
        "reverse_kl": reverse_kl,
    }


def nearest_modes(samples: np.ndarray, dataset: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Each finite sample's nearest mode of `dataset` (a mixture) and its standardised distance ‖Δ‖/σ
    to it; and the number of modes. Non-finite samples are left out."""
    centers, std = MIXTURES[dataset]
    points = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)[:, :2]
    points = points[np.isfinite(points).all(axis=1)]
    distances = np.linalg.norm(points[:, None, :] - centers[None], axis=2) / std
    nearest = distances.argmin(axis=1)
    return nearest, distances[np.arange(len(nearest)), nearest], len(centers)
