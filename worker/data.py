"""Random batches from a data set held as one tensor on the training device.

No per-step decoding: the data set is loaded once per job; a batch is an index
draw and a gather.
"""

from __future__ import annotations

from typing import Any

import torch


class Batches:
    """Draws random batches (with replacement, as the GAN papers' samplers do) reproducibly."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor | None, batch_size: int, device: torch.device, seed: int
    ) -> None:
        self.x = x.to(device, non_blocking=True)
        self.y = y.to(device, non_blocking=True) if y is not None else None
        self.batch_size = batch_size
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        index = torch.randint(len(self.x), (self.batch_size,), generator=self.generator).to(
            self.device, non_blocking=True
        )
        return self.x[index], (self.y[index] if self.y is not None else None)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
