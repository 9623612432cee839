"""Exponential moving average of the generator's weights (samples and checkpoints use the copy)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """θ_ema ← d·θ_ema + (1−d)·θ after every generator step; buffers (BN statistics) are copied.

    d = min(decay, (1 + n) / (10 + n)) at the n-th update (n = 0, 1, ...): the warm-up of TensorFlow's
    `tf.train.ExponentialMovingAverage(num_updates=...)`, so that the copy follows G early in training instead of
    staying near its random initialisation for ~1 / (1 − decay) steps (measured: bench/studies/grid25-ema.md).
    Yazıcı et al. 2019 (arXiv 1806.04498) for EMA of G's weights in GANs.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, n: int) -> None:
        """Fold `model`'s weights in as the n-th update (n counts from 0; a resumed job passes its step count)."""
        decay = min(self.decay, (1 + n) / (10 + n))
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1.0 - decay)
        for mine, theirs in zip(self.model.buffers(), model.buffers(), strict=True):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state)
