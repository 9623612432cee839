"""Data-parallel training of one job over several processes: PyTorch's DistributedDataParallel (DDP).

    result = train(spec, data, sink, device)   # spec.resources.gpus = N > 1: worker/trainer.py calls launch

A job with `resources.gpus` N trains as N processes on one worker: the worker's own process is rank 0
(it holds the lease and alone talks to the sink: metrics, samples, checkpoints), and it starts ranks
1..N-1 as `python -m worker.ddp PAYLOAD` (fresh interpreters, torchrun-style: a Celery pool process is
daemonic and may not fork multiprocessing children). Every rank builds the same networks from the job's
seed (DDP broadcasts rank 0's weights anyway) and takes `training.batch_size` samples a step with its own
noise and batches, so the combined batch is N x batch_size. Backend: NCCL on GPUs (rank r on the
worker's r-th visible GPU), gloo on CPU.

Batch norm is synchronised across the ranks (torch.nn.SyncBatchNorm on GPUs; on CPU, where PyTorch's
needs CUDA, `SyncBatchNorm` below, which all-reduces the per-channel sums): N processes then train as one
process on the combined batch would (tests/test_ddp.py checks this on gloo). The ranks agree to stop (a
cancel, a shutdown, a lost lease: rank 0's sink) at metrics steps, and the metrics rank 0 writes are the
means over the ranks. When rank 0 ends (done, stopped, diverged or failed) it ends the other ranks; a
rank that dies makes rank 0's next collective fail (gloo at once; NCCL after GROUP_TIMEOUT).

A resumed job resumes rank 0 exactly (its RNG and batch streams are in the checkpoint); the other ranks
draw fresh streams seeded from (seed, rank, step).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import inspect
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn

if TYPE_CHECKING:
    from models.spec import JobSpec
    from worker.gan import GAN, LoadedData

log = logging.getLogger(__name__)

# How long a collective waits for the other ranks: rank 0 pauses them while it writes a snapshot (a quality
# evaluation may train a classifier first) or a checkpoint.
GROUP_TIMEOUT = timedelta(minutes=10)
# How long rank 0 waits for the other ranks to exit after the last step, before it kills them.
EXIT_WAIT_SECONDS = 60.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Rank:
    """This process's place in the job's process group: `rank` of `world` (rank 0 leads)."""

    rank: int
    world: int


SINGLE = Rank(0, 1)


def rank_seed(seed: int, rank: int, step: int) -> int:
    """The seed of rank `rank`'s noise and batch streams from step `step` on (rank 0 keeps the job's own)."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


# --------------------------------------------------------------------------- batch norm across ranks


class SyncBatchNorm(nn.BatchNorm2d):
    """Batch norm whose training statistics are those of the combined batch of every rank (CPU, gloo).

    The per-channel sum, sum of squares and count are all-reduced with an autograd-aware all_reduce, so the
    gradient also flows through the other ranks' statistics, as torch.nn.SyncBatchNorm does on GPUs. The
    parameters and buffers are those of the BatchNorm2d it replaces (same state_dict keys)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)
        channels, dims = x.shape[1], [0, 2, 3]
        count = torch.full((1,), x.numel() // channels, dtype=torch.float32, device=x.device)
        xf = x.float()
        totals = dist_fn.all_reduce(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        n = totals[-1]
        mean = totals[:channels] / n
        var = (totals[channels : 2 * channels] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                assert self.num_batches_tracked is not None
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1.0), momentum)
        shape = (1, channels, 1, 1)
        y: Tensor = (xf - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def _replace_batch_norms(module: nn.Module, make: Callable[[nn.modules.batchnorm._BatchNorm], nn.Module]) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, SyncBatchNorm):
            setattr(module, name, make(child))
        else:
            _replace_batch_norms(child, make)


def _gloo_sync(bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    synced = SyncBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    synced.to(device=bn.weight.device if bn.affine else None)
    # The same Parameter and buffer objects: the optimiser and the EMA keep pointing at them.
    if bn.affine:
        synced.weight, synced.bias = bn.weight, bn.bias
    synced.running_mean, synced.running_var = bn.running_mean, bn.running_var
    synced.num_batches_tracked = bn.num_batches_tracked
    synced.train(bn.training)
    return synced


def sync_batch_norms(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` with its batch norms computing combined-batch statistics across the process group (in place
    for a module that is not itself a batch norm)."""
    if device.type == "cuda":
        converted: nn.Module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return converted
    _replace_batch_norms(module, _gloo_sync)
    return module


# --------------------------------------------------------------------------- in the training loop


def _no_buffer_broadcast() -> dict[str, Any]:
    # Synchronised batch norm keeps the buffers equal on every rank: no broadcast before each forward.
    # The keyword changed name in PyTorch 2.13 (forward_sync_buffers); older releases know broadcast_buffers.
    parameters = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in parameters else {"broadcast_buffers": False}


def wrap(gan: GAN, device: torch.device) -> None:
    """Make `gan` train data-parallel in the current process group: synchronised batch norm in G and D, and
    DDP wrappers as the modules its training passes call (gan.train_g, gan.train_d)."""
    sync_batch_norms(gan.generator, device)
    sync_batch_norms(gan.discriminator, device)
    ids = [device.index] if device.type == "cuda" and device.index is not None else None
    options = _no_buffer_broadcast()
    gan.train_g = nn.parallel.DistributedDataParallel(gan.generator, device_ids=ids, **options)
    gan.train_d = nn.parallel.DistributedDataParallel(gan.discriminator, device_ids=ids, **options)


def average(values: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The mean of each 0-d metric over the ranks (one all_reduce; every rank must call it at the same step)."""
    names = list(values)
    stacked = torch.stack([values[name].float().reshape(()) for name in names])
    dist.all_reduce(stacked)
    stacked /= dist.get_world_size()
    return dict(zip(names, stacked.unbind(), strict=True))


def agree(flag: bool) -> bool:
    """Rank 0's `flag`, on every rank (one broadcast; every rank must call it at the same step)."""
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    shared = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.broadcast(shared, src=0)
    return bool(shared.item())


# --------------------------------------------------------------------------- starting the ranks


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago (rank 0's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def process_group(backend: str, rank: int, world: int, port: int) -> Iterator[None]:
    """The default process group for the body of the with (rendezvous over TCP on 127.0.0.1:port)."""
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=GROUP_TIMEOUT
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def threads_per_rank(world: int) -> int:
    """Each CPU rank's intra-op threads: this process's share split between the ranks (at least one; a CPU
    worker with fewer cores than ranks oversubscribes them rather than refuse the job)."""
    return max(1, torch.get_num_threads() // world)


def _die_with_parent() -> None:
    if sys.platform == "linux":  # a rank must not outlive the worker process that leads it (kill -9 included)
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _end(children: list[subprocess.Popen[bytes]], wait: float) -> None:
    for child in children:
        try:
            child.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def launch(
    spec: JobSpec,
    data: LoadedData,
    sink: Any,
    device: torch.device,
    resume: dict[str, Any] | None,
    init_weights: dict[str, Tensor] | None,
    train: Callable[..., Any],
) -> Any:
    """Train `spec` with `resources.gpus` processes: start ranks 1..N-1, run rank 0 here with `sink`, end
    them all. Returns rank 0's `train` result; raises what rank 0 raises (the trainer's DeviceUnavailable
    when this worker sees fewer GPUs than asked for)."""
    from models.admission import gpu_shortfall
    from worker.trainer import DeviceUnavailable

    world = spec.resources.gpus
    if device.type == "cuda":
        visible = torch.cuda.device_count()
        if visible < world:
            raise DeviceUnavailable(gpu_shortfall(world, visible) or "not enough GPUs")
        device = torch.device("cuda", 0)
        torch.cuda.set_device(device)
    threads = threads_per_rank(world) if device.type == "cpu" else torch.get_num_threads()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ganforge-ddp-") as scratch:
        payload = Path(scratch) / "payload.pt"
        torch.save(
            {
                "spec": spec.model_dump(mode="json"),
                "x": data.x,
                "y": data.y,
                "info": data.info.model_dump(mode="json"),
                "resume": resume,
                "init": init_weights,
                "device": device.type,
                "threads": threads,
            },
            payload,
        )
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world))
        children = [
            subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "worker.ddp", str(payload)],
                env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)),
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only, before exec
            )
            for rank in range(1, world)
        ]
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with process_group(backend_for(device), 0, world, port):
                result = train(spec, data, sink, device, resume, init_weights, Rank(0, world))
            _end(children, EXIT_WAIT_SECONDS)
            return result
        finally:
            torch.set_num_threads(previous_threads)
            for child in children:
                if child.poll() is None:
                    child.terminate()
            _end(children, 5.0)


class _SilentSink:
    """The sink of ranks 1..N-1: rank 0 alone writes; they stop when rank 0 says so (trainer: ddp.agree)."""

    def metrics(self, step: int, values: dict[str, float]) -> None:
        pass

    def sample(self, step: int, samples: Any, labels: Any, evaluation: Any) -> None:
        pass

    def checkpoint(self, step: int, weights: Any, state: Any) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def alert(self, alert: dict[str, Any]) -> None:
        pass


def _rank_main(payload_path: str) -> None:
    from models.datasets import DatasetInfo
    from models.spec import STORED_SPEC, JobSpec
    from worker.gan import LoadedData
    from worker.trainer import train

    payload = torch.load(payload_path, weights_only=True)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(int(payload["threads"]))
    device = torch.device("cuda", rank) if payload["device"] == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    spec = JobSpec.model_validate(payload["spec"], context=STORED_SPEC)
    data = LoadedData(payload["x"], payload["y"], DatasetInfo.model_validate(payload["info"]))
    with process_group(backend_for(device), rank, world, int(os.environ["MASTER_PORT"])):
        train(spec, data, _SilentSink(), device, payload["resume"], payload["init"], Rank(rank, world))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    _rank_main(sys.argv[1])
