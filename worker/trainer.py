"""The training loop: one readable loop, with metrics, samples and checkpoints handed to a sink.

    from worker.trainer import train
    result = train(spec, data, sink, torch.device("cpu"))

`train` knows nothing of the store, the broker or files: the sink (worker/sink.py
in the service, any object with the `Sink` methods in a benchmark or a test)
receives everything. It resumes exactly from a checkpoint's `state`: network and
optimizer state, RNG state, step, and the fixed sample latent.

A run that diverges raises `Diverged` naming the first step a metric was NaN or
inf (worker/divergence.py); no non-finite metric, snapshot or checkpoint reaches
the sink.

training.watch (worker/watch.py) reads each metrics reading and snapshot for
collapse and divergence; its alerts go to the sink, and with action "stop" the run
ends with WatchStop after a checkpoint at that step.

Speed: the step never waits for the device. Losses stay on it (NonFiniteWatch keeps
the first non-finite step there); the per-step diagnostics (gradient norms, the mean
D scores) are computed only on the steps whose metrics are read (`every.metrics`,
checkpoints, the last step), and the device is read only on those steps.

A job with `resources.gpus` N > 1 trains with DistributedDataParallel over N processes
(worker/ddp.py): `train` starts ranks 1..N-1 and runs rank 0 itself; rank 0 alone
talks to the sink, and the ranks agree to stop at metrics steps.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from models.spec import JobSpec
from worker import ddp
from worker.data import Batches
from worker.divergence import Diverged, NonFiniteWatch, check_samples, check_tensors, check_values
from worker.gan import GAN, LoadedData, build_gan
from worker.gan.gan import DIAGNOSTICS
from worker.quality import make_evaluator
from worker.watch import TrainingWatch, WatchStop, build_watch

DEFAULT_IMAGE_SAMPLES = 64
DEFAULT_POINT_SAMPLES = 2500


class Sink(Protocol):
    """Where the loop's output goes."""

    def metrics(self, step: int, values: dict[str, float]) -> None:
        """Finite metric values (losses, gradient norms, an evaluation) at `step`."""
        ...

    def sample(
        self, step: int, samples: np.ndarray, labels: np.ndarray | None, evaluation: dict[str, float] | None
    ) -> None:
        """A finite snapshot from the fixed latent: (n, 2) points or (n, C, H, W) images in [-1, 1]."""
        ...

    def checkpoint(self, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Finite CPU weights for safetensors and the resume `state` (loads with weights_only=True)."""
        ...

    def should_stop(self) -> bool:
        """True when the loop must stop now (cancel, shutdown, lost lease)."""
        ...

    def alert(self, alert: dict[str, Any]) -> None:
        """What training.watch found: {kind, step, evidence, action} (worker/watch.py); once per kind per run."""
        ...


__all__ = ["DeviceUnavailable", "Diverged", "Sink", "TrainResult", "WatchStop", "resolve_device", "train"]


@dataclass(frozen=True)
class TrainResult:
    """Where the loop ended: the last step trained, whether the sink stopped it, and the wall time."""

    step: int
    stopped: bool
    seconds: float


class DeviceUnavailable(RuntimeError):
    """The spec's device is not on this worker; the message is for users."""


def resolve_device(requested: str) -> torch.device:
    """The spec's device ("auto", "cpu", "cuda", ...); DeviceUnavailable for cuda on a machine without one."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("the spec asks for cuda and this worker has no GPU")
    return torch.device(requested)


def load_weights(gan: GAN, weights: dict[str, torch.Tensor]) -> None:
    """Warm start: the networks from another job's checkpoint weights; optimisers start fresh."""

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {name.removeprefix(prefix): tensor for name, tensor in weights.items() if name.startswith(prefix)}

    gan.generator.load_state_dict(part("generator."))
    gan.discriminator.load_state_dict(part("discriminator."))
    if gan.ema is not None:
        gan.ema.load_state_dict(part("generator_ema.") or part("generator."))


def train(
    spec: JobSpec,
    data: LoadedData,
    sink: Sink,
    device: torch.device,
    resume: dict[str, Any] | None = None,
    init_weights: dict[str, torch.Tensor] | None = None,
    rank: ddp.Rank | None = None,
) -> TrainResult:
    """Train `spec` on `data` to `spec.training.steps` generator steps.

    `resume` (a checkpoint's state) continues a run exactly; `init_weights` (a
    checkpoint's safetensors weights) starts a new run from trained networks.
    Raises Diverged at the first metrics, snapshot or checkpoint after a non-finite value
    (handed to the sink as a divergence alert first), and WatchStop after a training.watch
    alert when `training.watch.action` is "stop" (a checkpoint at that step is written first).
    With `resources.gpus` > 1 and no `rank`, runs as rank 0 of a DistributedDataParallel group whose
    other ranks it starts (worker/ddp.py); `rank` is that group's place for this process.
    """
    if rank is None and spec.resources.gpus > 1:
        result: TrainResult = ddp.launch(spec, data, sink, device, resume, init_weights, train)
        return result
    rank = rank or ddp.SINGLE
    detector = build_watch(spec, data.x.numpy(), spec.dataset.builtin)
    if resume is not None and "watch" in resume:  # checkpoints written before training.watch have none
        detector.load_state_dict(resume["watch"])
    try:
        return _train(spec, data, sink, device, detector, resume, init_weights, rank)
    except Diverged as exc:
        if "divergence" not in detector.fired:
            detector.record("divergence")
            evidence = {"metric": exc.name, "value": str(exc.value)}  # NaN/inf as text: JSON has no such number
            sink.alert({"kind": "divergence", "step": exc.step, "evidence": evidence, "action": "stopped"})
        raise


def _train(
    spec: JobSpec,
    data: LoadedData,
    sink: Sink,
    device: torch.device,
    detector: TrainingWatch,
    resume: dict[str, Any] | None,
    init_weights: dict[str, torch.Tensor] | None,
    rank: ddp.Rank,
) -> TrainResult:
    training, every = spec.training, spec.every
    seed = training.seed
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    gan = build_gan(spec, data.info, device)  # the same initial weights on every rank (DDP also broadcasts them)
    batches = Batches(data.x, data.y, training.batch_size, device, seed=seed + 1)
    lead = rank.rank == 0
    sample_count = training.sample_count or (
        DEFAULT_IMAGE_SAMPLES if data.info.kind == "images" else DEFAULT_POINT_SAMPLES
    )
    fixed = gan.fixed_inputs(sample_count, torch.Generator(device="cpu").manual_seed(seed + 2))
    step = 0
    if init_weights is not None and resume is None:
        load_weights(gan, init_weights)
    if resume is not None:
        gan.load_state_dict(resume["gan"])
        batches.load_state_dict(resume["batches"])
        fixed = {name: tensor.to(device) for name, tensor in resume["fixed"].items()}
        torch.set_rng_state(resume["rng"]["torch"])
        if device.type == "cuda" and "cuda" in resume["rng"]:
            torch.cuda.set_rng_state(resume["rng"]["cuda"], device)
        step = int(resume["step"])
    if not lead:  # its own noise and batches (rank 0 keeps the single-process streams); resumed: from the step
        torch.manual_seed(ddp.rank_seed(seed, rank.rank, step))
        batches.generator.manual_seed(ddp.rank_seed(seed + 1, rank.rank, step))
    if rank.world > 1:
        ddp.wrap(gan, device)
    # worker/quality.py: the snapshot's quality figures (rank 0 alone takes snapshots)
    evaluate = make_evaluator(spec, data, device) if lead else None

    def state() -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        return {
            "step": step,
            "gan": gan.state_dict(),
            "batches": batches.state_dict(),
            "fixed": {name: tensor.cpu() for name, tensor in fixed.items()},
            "rng": rng,
            "watch": detector.state_dict(),
        }

    watch = NonFiniteWatch(device)

    def checkpoint() -> None:
        current = state()
        check_tensors(step, current["gan"])  # weights and optimiser state: nothing non-finite is kept
        sink.checkpoint(step, gan.weights(), current)

    started = time.perf_counter()
    last_checkpoint = step
    while step < training.steps:
        upcoming = step + 1
        final = upcoming == training.steps
        metrics_now = upcoming % every.metrics == 0 or upcoming % every.checkpoint == 0 or final
        values = gan.train_step(batches.next, metrics_now)  # diagnostics only when they are read
        step = upcoming
        if lead:
            # The losses every step, on the device; the diagnostics are checked as read (below).
            watch.observe(step, {name: value for name, value in values.items() if name not in DIAGNOSTICS})
        samples_now = lead and (step % every.samples == 0 or final)
        checkpoint_now = lead and (step % every.checkpoint == 0 or final)
        if lead and (metrics_now or samples_now or checkpoint_now):
            watch.check()  # the device is read here anyway: one sync reports the first bad step
        alerts = []
        if metrics_now and rank.world > 1:
            values = ddp.average(values)  # every rank: the mean over the combined batch
        if metrics_now and lead:
            readings = {name: float(value) for name, value in values.items()}
            check_values(step, readings)
            sink.metrics(step, readings)
            alerts += detector.observe_metrics(step, readings)
        if samples_now:
            samples, labels = _snapshot(gan, fixed)
            check_samples(step, samples)
            evaluation = evaluate(gan, step, samples, labels) if evaluate is not None else None
            check_values(step, evaluation or {})
            sink.sample(step, samples, labels, evaluation)
            if evaluation:
                sink.metrics(step, evaluation)
            alerts += detector.observe_snapshot(step, evaluation, samples)
        for alert in alerts:
            sink.alert(alert)
        if checkpoint_now:
            checkpoint()
            last_checkpoint = step
        if stop := next((alert for alert in alerts if alert["action"] == "stopped"), None):
            if step != last_checkpoint:
                checkpoint()
            raise WatchStop(stop)
        if rank.world == 1:
            stop_now = sink.should_stop()
        else:  # the ranks must stop at the same step: rank 0's answer, shared at metrics steps only
            stop_now = metrics_now and ddp.agree(lead and sink.should_stop())
        if stop_now:
            if lead and step != last_checkpoint:
                watch.check()
                checkpoint()
            return TrainResult(step=step, stopped=True, seconds=time.perf_counter() - started)
    return TrainResult(step=step, stopped=False, seconds=time.perf_counter() - started)


def _snapshot(gan: GAN, fixed: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray | None]:
    samples = gan.generate(fixed).float().cpu().numpy()
    labels = gan.snapshot_labels(fixed)
    return samples, (labels.cpu().numpy() if labels is not None else None)
