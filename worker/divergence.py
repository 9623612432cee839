"""Divergence: noticing the first non-finite loss, sample or weight, at the step it happened, cheaply.

Reading a loss off a GPU waits for the device (a host sync), so the loop does not
read its metrics every step. Instead `NonFiniteWatch.observe` keeps, on the device,
the first step whose metrics held a NaN or an inf and their values (a `torch.where`
per step, no sync); `check` reads that back only when the loop reads the device
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


class NonFiniteWatch:
    """Remembers, on `device`, the first step whose metrics were not all finite."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.names: tuple[str, ...] | None = None
        self._first_step = torch.full((), -1, dtype=torch.long, device=device)
        self._first_values = torch.zeros(0, device=device)

    def observe(self, step: int, values: Mapping[str, torch.Tensor]) -> None:
        """Note step `step`'s 0-d metric tensors; no host sync (unless the set of names changes)."""
        names = tuple(values)
        if names != self.names:
            self.check()  # a rare event (never within one spec); reading back here keeps the record exact
            self.names = names
            self._first_values = torch.zeros(len(names), device=self.device)
        stacked = torch.stack([torch.as_tensor(v, device=self.device).float().reshape(()) for v in values.values()])
        new = (self._first_step < 0) & ~torch.isfinite(stacked).all()
        self._first_step = torch.where(new, step, self._first_step)
        self._first_values = torch.where(new, stacked, self._first_values)

    def check(self) -> None:
        """Raise Diverged for the first non-finite step observed so far (one host sync)."""
        if self.names is None:
            return
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
