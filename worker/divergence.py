"""Divergence: noticing the first non-finite loss, sample or weight, at the step it happened, cheaply.

Reading a loss off a GPU waits for the device (a host sync), so the loop does not
read its metrics every step. Instead `NonFiniteWatch.observe` keeps, on the device,
the first step whose metrics held a NaN or an inf and their values (a stack per
step, reduced on the device every few hundred steps; no sync); `check` reads that back only when the loop reads the device
anyway (metrics, snapshots, checkpoints) and raises `Diverged` naming the true
first step. Snapshots and checkpoints are checked for non-finite values before
they are handed to the sink, so nothing non-finite is ever published.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch


class Diverged(Exception):
    """A loss, metric, sample or weight became NaN or inf; `step` is the first step it was seen."""

    def __init__(self, step: int, name: str, value: float) -> None:
        super().__init__(f"{name} became {value} at step {step}")
        self.step, self.name, self.value = step, name, value


# Steps held before they are reduced: bounds memory, and keeps the per-step cost to one stack.
FOLD_EVERY = 256


class NonFiniteWatch:
    """Remembers, on `device`, the first step whose metrics were not all finite.

    Each step costs one `torch.stack` of its metrics; every FOLD_EVERY steps (and at
    `check`) the held steps are reduced into the first bad step and its values with a
    handful of device ops, none of which reads back to the host.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.names: tuple[str, ...] | None = None
        self._first_step = torch.full((), -1, dtype=torch.long, device=device)
        self._first_values = torch.zeros(0, device=device)
        self._block: list[torch.Tensor] = []  # one row of metric values per step, consecutive steps
        self._block_start = 0

    def observe(self, step: int, values: Mapping[str, torch.Tensor]) -> None:
        """Note step `step`'s 0-d metric tensors; no host sync (unless the set of names changes)."""
        names = tuple(values)
        if names != self.names:
            self.check()  # a rare event (never within one spec); reading back here keeps the record exact
            self.names = names
            self._first_values = torch.zeros(len(names), device=self.device)
        elif self._block and step != self._block_start + len(self._block):
            self._fold()
        if not self._block:
            self._block_start = step
        self._block.append(self._row(values))
        if len(self._block) >= FOLD_EVERY:
            self._fold()

    def _row(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        try:
            return torch.stack(list(values.values())).float()
        except (TypeError, RuntimeError):  # numbers, or tensors of another shape or device
            return torch.stack([torch.as_tensor(v, device=self.device).float().reshape(()) for v in values.values()])

    def _fold(self) -> None:
        if not self._block:
            return
        block = torch.stack(self._block)  # [steps, metrics]
        finite = torch.isfinite(block).all(dim=1)
        first_bad = (~finite).int().argmax().reshape(1)  # the first maximum: the first non-finite row
        new = (self._first_step < 0) & ~finite.all()
        self._first_step = torch.where(new, first_bad[0] + self._block_start, self._first_step)
        self._first_values = torch.where(new, block.index_select(0, first_bad)[0], self._first_values)
        self._block = []

    def check(self) -> None:
        """Raise Diverged for the first non-finite step observed so far (one host sync)."""
        if self.names is None:
            return
        self._fold()
        step = int(self._first_step)
        if step < 0:
            return
        values = self._first_values.cpu().tolist()
        name, value = next((n, v) for n, v in zip(self.names, values, strict=True) if not math.isfinite(v))
        raise Diverged(step, name, value)


def check_samples(step: int, samples: np.ndarray) -> None:
    """Raise Diverged when a snapshot (host memory, any shape) holds a NaN or an inf."""
    finite = np.isfinite(samples)
    if not finite.all():
        raise Diverged(step, "samples", float(samples[~finite].flat[0]))


def check_values(step: int, values: Mapping[str, float]) -> None:
    """Raise Diverged naming the first of `values` (host floats, e.g. an evaluation) that is not finite."""
    for name, value in values.items():
        if not math.isfinite(value):
            raise Diverged(step, name, value)


def _tensors(prefix: str, value: Any) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield prefix, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _tensors(f"{prefix}.{key}" if prefix else str(key), item)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensors(f"{prefix}.{i}", item)


def check_tensors(step: int, *trees: Any) -> None:
    """Raise Diverged naming the first floating tensor in `trees` (nested dicts/lists) that is not all finite.

    One host sync per device, however many tensors: meant for checkpoint time.
    """
    named = [pair for tree in trees for pair in _tensors("", tree)]
    if not named:
        return
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, tensor) in enumerate(named):
        by_device.setdefault(tensor.device, []).append(i)
    for indices in by_device.values():
        flags = torch.stack([torch.isfinite(named[i][1]).all() for i in indices]).cpu().tolist()
        for i, finite in zip(indices, flags, strict=True):
            if not finite:
                name, tensor = named[i]
                bad = tensor[~torch.isfinite(tensor)]
                raise Diverged(step, name, float(bad.flatten()[0]))
