"""The trainer against a bare PyTorch loop on a GPU, and the fraction of the GPU's peak FLOP/s it reaches.

    bash bench/gpu.sh          # on a GPU machine: sets up Python, then runs this

For MLP (ring8 points), DCGAN 64 px and ResNet 32 px (random RGB images: the speed does not depend on the
pictures), in fp32 (TF32 matrix products) and bf16 autocast: steps/s of `worker.trainer.train` (metrics every 10
steps with diagnostics, a snapshot and a checkpoint written to a scratch folder) against bench/bare_loops.py's
loop on the same networks, batch and device, in the same process; the ratio trainer / bare; and the FLOP/s the
trainer reaches (FLOPs of one step counted by torch.utils.flop_counter on the bare loop: matrix products and
convolutions, forward and backward) as a fraction of the GPU's dense peak for that precision (bf16 tensor
cores for bf16, TF32 tensor cores for fp32). Each side is warmed up first (cuDNN's autotuner, the allocator),
then timed over about --seconds of steps, best of --repeats, interleaved.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare_loops import bare_step  # noqa: E402

from models.datasets import DatasetInfo  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from worker.gan import LoadedData, build_gan, load_builtin  # noqa: E402
from worker.trainer import train  # noqa: E402

# Dense peak TFLOP/s (NVIDIA's data sheets, SXM parts, without sparsity): bf16 tensor cores, TF32 tensor cores.
PEAKS = {"H200": (989.4, 494.7), "H100": (989.4, 494.7), "A100": (312.0, 156.0), "L40S": (362.0, 183.0)}

CASES: dict[str, dict[str, Any]] = {
    "MLP": {
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp"},
        "loss": {"name": "nsgan"},
        "training": {"batch_size": 256},
    },
    "MLP wgan-gp": {
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp"},
        "loss": {"name": "wgan-gp"},
        "training": {"batch_size": 256},
    },
    "DCGAN 64px": {
        "dataset": {"builtin": "digits", "resize": 64},
        "architecture": {"name": "dcgan"},
        "loss": {"name": "nsgan"},
        "training": {"batch_size": 128},
    },
    "ResNet 32px": {
        "dataset": {"builtin": "digits", "resize": 32},
        "architecture": {"name": "resnet"},
        "loss": {"name": "nsgan"},
        "training": {"batch_size": 64},
    },
}


def data_for(name: str) -> LoadedData:
    if name.startswith("MLP"):
        return load_builtin("ring8")
    size = 64 if "64" in name else 32
    x = torch.rand(8192, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return LoadedData(x, None, DatasetInfo(kind="images", shape=(3, size, size), size=len(x)))


class ScratchSink:
    """What the service's sink does, into a scratch folder: readings kept, samples saved, checkpoints written."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.readings = folder, 0

    def metrics(self, step: int, values: dict[str, float]) -> None:  # noqa: ARG002 - the Sink protocol
        self.readings += 1

    def sample(self, step: int, samples: np.ndarray, labels: Any, evaluation: Any) -> None:  # noqa: ARG002
        np.save(self.folder / f"sample-{step}.npy", samples)

    def checkpoint(self, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        save_file(weights, str(self.folder / f"weights-{step}.safetensors"))
        torch.save(state, self.folder / f"state-{step}.pt")

    def should_stop(self) -> bool:
        return False

    def alert(self, alert: dict[str, Any]) -> None:
        pass


def spec_for(case: dict[str, Any], precision: str, steps: int) -> JobSpec:
    training = {**case["training"], "steps": steps, "precision": precision, "ema_decay": None}
    body = {**case, "training": training}
    body["every"] = {"metrics": 10, "samples": max(1, steps - 1), "checkpoint": max(1, steps - 1)}
    return JobSpec.model_validate(body)


class CountFlops(TorchDispatchMode):
    """FLOPs of the matrix products and convolutions run inside it (torch.utils.flop_counter's formulas).

    FlopCounterMode itself tracks modules with backward hooks, which autograd.grad (the gradient penalty)
    refuses; the formulas alone need no hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_bare(spec: JobSpec, data: LoadedData, device: torch.device, seconds: float) -> tuple[float, float]:
    """(steps/s, FLOPs per step) of the bare loop."""
    torch.manual_seed(0)
    gan = build_gan(spec, data.info, device)
    x = data.x.to(device)
    step = bare_step(spec, gan, x, device, bf16=spec.training.precision == "bf16")
    for _ in range(5):
        step()
    with CountFlops() as counter:
        step()
    flops = float(counter.total)
    sync()
    started = time.perf_counter()
    n = 0
    while time.perf_counter() - started < seconds:
        for _ in range(10):
            step()
        n += 10
        sync()
    return n / (time.perf_counter() - started), flops


def time_trainer(case: dict[str, Any], precision: str, data: LoadedData, device: torch.device, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        train(spec_for(case, precision, 20), data, ScratchSink(Path(tmp)), device)  # warm-up: cuDNN autotuner
        result = train(spec_for(case, precision, steps), data, ScratchSink(Path(tmp)), device)
    return result.step / result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per bare run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to try this script where no GPU is")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu_bench.py needs a CUDA GPU (--device cpu to try it without one)")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peak = next((p for key, p in PEAKS.items() if key in name), None)
    print(f"{name}; torch {torch.__version__}; peak dense TFLOP/s bf16/TF32: {peak or 'unknown'}", flush=True)
    print(
        f"{'case':14s} {'prec':5s} {'bare st/s':>10s} {'trainer st/s':>12s} {'ratio':>6s} {'TFLOP/s':>8s} {'of peak':>8s}"
    )
    for case_name in args.cases.split(","):
        case = CASES[case_name]
        data = data_for(case_name)
        for precision in ("fp32", "bf16"):
            bare, trainer, flops = 0.0, 0.0, 0.0
            for _ in range(args.repeats):
                rate, flops = time_bare(spec_for(case, precision, 1), data, device, args.seconds)
                bare = max(bare, rate)
                steps = max(50, int(rate * args.seconds))
                trainer = max(trainer, time_trainer(case, precision, data, device, steps))
            achieved = flops * trainer / 1e12
            fraction = f"{achieved / peak[0 if precision == 'bf16' else 1]:8.3f}" if peak else "     n/a"
            print(
                f"{case_name:14s} {precision:5s} {bare:10.1f} {trainer:12.1f} {trainer / bare:6.3f} "
                f"{achieved:8.2f} {fraction}",
                flush=True,
            )


if __name__ == "__main__":
    main()
