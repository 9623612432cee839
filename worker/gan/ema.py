"""Exponential moving average of the generator's weights (samples and checkpoints use the copy)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """θ_ema ← decay·θ_ema + (1−decay)·θ after every generator step; buffers (BN statistics) are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1.0 - self.decay)
        for mine, theirs in zip(self.model.buffers(), model.buffers(), strict=True):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state)
