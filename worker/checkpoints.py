"""The checkpoint layout, in one place: key names, write order, the latest complete one, loading.

A checkpoint at step s of job j is two artifacts:

    jobs/j/checkpoints/00000000s.safetensors   the networks' weights (what a user downloads)
    jobs/j/checkpoints/00000000s.state.pt      everything a resume needs (torch.save of tensors,
                                               numbers, strings, lists and dicts only)

The weights are written first and the state last, each atomically (a temporary
file, then os.replace or one object put), so the presence of the state file marks
a complete checkpoint. Zero-padded steps make key order step order.

A worker that lost the job store keeps what it could not write inside the state:
`pending_metrics` (the metric points the store never received) and `handed_back`
(why it stopped: the resuming worker gives back the attempt the lost lease used up).

Retention (models/retention.py): after each checkpoint is recorded, `prune_checkpoints` deletes the rows the
job's retention does not keep (the store keeps the latest and what a resume, an init_from or a generate request
needs), then their files; a step's files that lost their row earlier (a crash between the two) go with them.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save_file

from models.artifacts import ArtifactStore, job_prefix
from models.datasets import DatasetInfo
from models.retention import Retention
from models.store import JobStore, MetricPoint

log = logging.getLogger(__name__)

WEIGHTS_SUFFIX = ".safetensors"
STATE_SUFFIX = ".state.pt"
# Keys inside a state that belong to the layout, not to the trainer.
PENDING_METRICS = "pending_metrics"
HANDED_BACK = "handed_back"


@dataclass(frozen=True)
class CheckpointKeys:
    """The two artifact keys of the checkpoint of `job_id` at `step`."""

    step: int
    weights: str
    state: str

    @classmethod
    def of(cls, job_id: str, step: int) -> CheckpointKeys:
        prefix = f"{job_prefix(job_id)}/checkpoints/{step:09d}"
        return cls(step=step, weights=prefix + WEIGHTS_SUFFIX, state=prefix + STATE_SUFFIX)


@dataclass(frozen=True)
class WrittenCheckpoint:
    """A checkpoint now complete in the artifact store; `size_bytes` is the weights file's size."""

    keys: CheckpointKeys
    size_bytes: int


@dataclass
class LoadedCheckpoint:
    """A checkpoint read back: the trainer's `state`, and what its writer could not tell the store."""

    keys: CheckpointKeys
    state: dict[str, Any]
    pending_metrics: list[MetricPoint] = field(default_factory=list)
    handed_back: str | None = None


def write_checkpoint(
    artifacts: ArtifactStore,
    *,
    job_id: str,
    step: int,
    weights: dict[str, torch.Tensor],
    state: dict[str, Any],
    spec_json: dict[str, Any],
    scratch_dir: str,
    pending_metrics: list[MetricPoint] | None = None,
    handed_back: str | None = None,
    dataset: DatasetInfo | None = None,
) -> WrittenCheckpoint:
    """Write the weights (safetensors, with the job's spec as metadata), then the state; both atomically.

    `weights` are contiguous CPU tensors; `state` must load with `torch.load(weights_only=True)`.
    `dataset` (the data as trained on, after resize) goes in the metadata too: its kind, shape and
    classes, so the weights rebuild into their network without the service (ganforge.load_generator).
    `pending_metrics` and `handed_back` are kept inside the state for the worker that resumes it.
    """
    keys = CheckpointKeys.of(job_id, step)
    os.makedirs(scratch_dir, exist_ok=True)
    metadata = {"format": "ganforge", "job_id": job_id, "step": str(step), "spec": json.dumps(spec_json)}
    if dataset is not None:
        metadata["dataset"] = dataset.model_dump_json(include={"kind", "shape", "num_classes", "class_names"})
    with tempfile.NamedTemporaryFile(dir=scratch_dir, suffix=WEIGHTS_SUFFIX, delete=False) as handle:
        weights_path = handle.name
    try:
        save_file(weights, weights_path, metadata=metadata)
        size = os.path.getsize(weights_path)
        artifacts.put_file(keys.weights, weights_path)
    finally:
        if os.path.exists(weights_path):
            os.unlink(weights_path)
    extra: dict[str, Any] = {}
    if pending_metrics:
        extra[PENDING_METRICS] = [[p.name, p.step, p.value] for p in pending_metrics]
    if handed_back is not None:
        extra[HANDED_BACK] = handed_back
    buffer = io.BytesIO()
    torch.save({**state, **extra}, buffer)
    # Last: the state's presence marks the checkpoint complete.
    artifacts.put_bytes(keys.state, buffer.getvalue())
    return WrittenCheckpoint(keys=keys, size_bytes=size)


def latest_complete(artifacts: ArtifactStore, job_id: str) -> CheckpointKeys | None:
    """The job's newest checkpoint whose state file exists (so its weights do too), or None."""
    folder = f"{job_prefix(job_id)}/checkpoints"
    states = [key for key in artifacts.list(folder) if key.endswith(STATE_SUFFIX)]
    if not states:
        return None
    step = int(states[-1].rsplit("/", 1)[1].removesuffix(STATE_SUFFIX))
    return CheckpointKeys.of(job_id, step)


def load_checkpoint(artifacts: ArtifactStore, keys: CheckpointKeys) -> LoadedCheckpoint:
    """Read a checkpoint's state (torch.load, weights_only=True, onto the CPU) and split off the layout's keys.

    Raises FileNotFoundError when the state is missing, ValueError when its step is not `keys.step`.
    """
    with artifacts.open(keys.state) as handle:
        state: dict[str, Any] = torch.load(io.BytesIO(handle.read()), weights_only=True, map_location="cpu")
    if int(state["step"]) != keys.step:
        raise ValueError(f"{keys.state} holds step {state['step']}, not {keys.step}")
    pending = [MetricPoint(str(n), int(s), float(v)) for n, s, v in state.pop(PENDING_METRICS, [])]
    handed_back = state.pop(HANDED_BACK, None)
    return LoadedCheckpoint(keys=keys, state=state, pending_metrics=pending, handed_back=handed_back)


def load_weights(artifacts: ArtifactStore, weights_key: str) -> dict[str, torch.Tensor]:
    """A checkpoint's safetensors weights (generator.*, discriminator.*, generator_ema.*) on the CPU."""
    return safetensors_load(artifacts.read_bytes(weights_key))


def checkpoint_step(key: str) -> int | None:
    """The step a checkpoint file's key names (…/000001000.safetensors or .state.pt), None for another key."""
    name = key.rsplit("/", 1)[-1]
    for suffix in (WEIGHTS_SUFFIX, STATE_SUFFIX):
        stem = name.removesuffix(suffix)
        if stem != name and stem.isdigit():
            return int(stem)
    return None


def prune_checkpoints(store: JobStore, artifacts: ArtifactStore, *, job_id: str, retention: Retention) -> list[int]:
    """Apply `retention` to the job's checkpoints: their rows (ResultsStore.prune_checkpoints), then their files.

    Files of a step below the newest recorded checkpoint with no row (a pruner that died between rows and files,
    a crash before registering) are deleted too; steps at or above it are never touched here (a checkpoint
    written while the store was away is registered by the worker that resumes it). Returns the steps pruned.
    """
    if retention.keeps_all:
        return []
    gone = store.prune_checkpoints(job_id=job_id, retention=retention)
    keys = [key for row in gone for key in (row.weights_key, row.state_key)]
    recorded = {c.step for c in store.list_checkpoints(job_id=job_id)}
    if recorded:
        newest = max(recorded)
        for key in artifacts.list(f"{job_prefix(job_id)}/checkpoints"):
            step = checkpoint_step(key)
            if step is not None and step < newest and step not in recorded:
                keys.append(key)
    for key in dict.fromkeys(keys):
        artifacts.delete(key)
    if gone:
        log.info("job %s: pruned checkpoints at steps %s (%s)", job_id, [r.step for r in gone], retention.describe())
    return [row.step for row in gone]
