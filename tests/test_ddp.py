"""DistributedDataParallel on CPU (gloo): 2 processes train as 1 process on the combined batch (worker/ddp.py).

Every random draw of a step (noise, the WGAN-GP ε, the real batch) comes from a table indexed by the draw's
order, so that rank r's draw is rows r·B..(r+1)·B of the combined run's: the only difference left between the
runs is the data parallelism itself (gradients all-reduced, batch norm synchronised, metrics averaged).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models.datasets import BUILTIN_DATASETS, DatasetInfo
from models.spec import JobSpec
from worker import ddp
from worker.gan import GAN, build_gan, load_builtin
from worker.gan import gan as gan_module
from worker.trainer import train

CPU = torch.device("cpu")
BATCH = 8  # per rank
WORLD = 2
STEPS = 3

CASES: dict[str, dict[str, Any]] = {
    # an MLP critic with a gradient penalty (double backward through DDP), 5 critic steps per G step
    "mlp-wgan-gp": {
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp", "hidden": 16, "depth": 2},
        "loss": {"name": "wgan-gp"},
    },
    # a convolutional G and D, both with batch norm (synchronised across the ranks)
    "dcgan-nsgan": {
        "dataset": {"builtin": "digits", "resize": 16},
        "architecture": {"name": "dcgan", "base_channels": 4, "latent_dim": 8},
        "loss": {"name": "nsgan"},
    },
}


def info_of(case: str) -> DatasetInfo:
    if case.startswith("mlp"):
        return BUILTIN_DATASETS["ring8"]
    return DatasetInfo(kind="images", shape=(1, 16, 16), num_classes=10, size=64)


def spec_of(case: str) -> JobSpec:
    return JobSpec.model_validate({**CASES[case], "training": {"batch_size": BATCH, "ema_decay": None}})


class Draws:
    """The k-th draw of each kind, as rows rank·n..(rank+1)·n of one table of WORLD·BATCH rows."""

    def __init__(self, rank: int, world: int, latent_dim: int, data: torch.Tensor) -> None:
        self.rank, self.world, self.latent_dim, self.data = rank, world, latent_dim, data
        self.counts = {"z": 0, "eps": 0, "batch": 0}

    def _rows(self, kind: str, shape: tuple[int, ...], uniform: bool) -> torch.Tensor:
        k = self.counts[kind]
        self.counts[kind] += 1
        g = torch.Generator().manual_seed(1000 * len(kind) + k)
        table = (
            torch.rand((WORLD * BATCH, *shape), generator=g)
            if uniform
            else torch.randn((WORLD * BATCH, *shape), generator=g)
        )
        n = WORLD * BATCH // self.world
        return table[self.rank * n : (self.rank + 1) * n]

    def sample(self, n: int, device: torch.device) -> dict[str, torch.Tensor]:  # noqa: ARG002 - LatentSpace's signature
        return {"z": self._rows("z", (self.latent_dim,), uniform=False)}

    def eps(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:  # noqa: ARG002 - as above
        return self._rows("eps", (1,) * (x.dim() - 1), uniform=True)

    def batch(self) -> tuple[torch.Tensor, None]:
        index = (self._rows("batch", (), uniform=True) * len(self.data)).long()
        return self.data[index], None


def data_of(case: str) -> torch.Tensor:
    if case.startswith("mlp"):
        return load_builtin("ring8").x[:512]
    return torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1


def run(case: str, rank: int, world: int) -> dict[str, Any]:
    """STEPS generator steps of `case` as rank `rank` of `world` (world 1: the combined batch in one process)."""
    spec = spec_of(case)
    torch.manual_seed(0)
    gan: GAN = build_gan(spec, info_of(case), CPU)
    draws = Draws(rank, world, spec.architecture.latent_dim, data_of(case))
    gan.latent = draws  # type: ignore[assignment]
    gan_module.per_sample_uniform = draws.eps  # type: ignore[assignment]  # this process only
    if world > 1:
        ddp.wrap(gan, CPU)
    losses = []
    for _ in range(STEPS):
        values = gan.train_step(draws.batch, diagnostics=True)
        if world > 1:
            values = ddp.average(values)
        losses.append({name: float(value) for name, value in values.items()})
    weights = {
        **{f"g.{k}": v.detach().clone() for k, v in gan.generator.state_dict().items()},
        **{f"d.{k}": v.detach().clone() for k, v in gan.discriminator.state_dict().items()},
    }
    return {"losses": losses, "weights": weights}


def _rank(rank: int, port: int, folder: str) -> None:
    torch.set_num_threads(1)
    with ddp.process_group("gloo", rank, WORLD, port):
        results = {case: run(case, rank, WORLD) for case in CASES}
        dist.barrier()
    torch.save(results, os.path.join(folder, f"rank{rank}.pt"))


@pytest.mark.slow
def test_two_gloo_processes_train_as_one_process_on_the_combined_batch(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(ddp.free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for case in CASES:
        single = run(case, 0, 1)
        for result in ranks:
            for got, want in zip(result[case]["losses"], single["losses"], strict=True):
                assert got.keys() == want.keys()
                for name in want:
                    assert got[name] == pytest.approx(want[name], rel=1e-4, abs=1e-5), (case, name)
            for name, tensor in single["weights"].items():
                torch.testing.assert_close(result[case]["weights"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
        # and the two ranks hold the very same networks
        for name, tensor in ranks[0][case]["weights"].items():
            assert torch.equal(tensor, ranks[1][case]["weights"][name]), (case, name)


class ListSink:
    """Records the steps of what rank 0 hands over (the Sink protocol's arguments are otherwise unused)."""

    def __init__(self) -> None:
        self.metrics_at: list[int] = []
        self.checkpoints: list[int] = []
        self.samples: list[int] = []

    def metrics(self, step: int, values: dict[str, float]) -> None:  # noqa: ARG002
        self.metrics_at.append(step)

    def sample(self, step: int, samples: Any, labels: Any, evaluation: Any) -> None:  # noqa: ARG002
        self.samples.append(step)

    def checkpoint(self, step: int, weights: Any, state: Any) -> None:  # noqa: ARG002
        self.checkpoints.append(step)

    def should_stop(self) -> bool:
        return len(set(self.metrics_at)) >= 3  # a cancel after the third reading: every rank stops at that step

    def alert(self, alert: dict[str, Any]) -> None:
        pass


@pytest.mark.slow
def test_a_job_with_two_gpus_runs_as_two_processes_on_a_cpu_worker_and_stops_together() -> None:
    spec = JobSpec.model_validate(
        {
            "dataset": {"builtin": "ring8"},
            "architecture": {"name": "mlp", "hidden": 16, "depth": 2},
            "loss": {"name": "nsgan"},
            "training": {"steps": 200, "batch_size": 16, "device": "cpu"},
            "every": {"metrics": 5, "samples": 10, "checkpoint": 100},
            "resources": {"gpus": 2},
        }
    )
    sink = ListSink()
    result = train(spec, load_builtin("ring8"), sink, CPU)
    assert result.stopped and result.step == 15  # stopped at the third metrics step, by every rank
    assert sorted(set(sink.metrics_at)) == [5, 10, 15] and sink.checkpoints == [15] and sink.samples == [10]
    assert not dist.is_initialized()  # the worker process leaves no process group behind
