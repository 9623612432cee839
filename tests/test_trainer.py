"""The training loop in-process, behind a list-backed sink: resume exactness, divergence, the checkpoint layout.

No store, no broker, no processes: resume correctness is shown here on the CPU
bit for bit, not only by killing workers (tests/test_faults.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.artifacts import ArtifactStore
from models.spec import JobSpec
from models.store import MetricPoint
from worker import trainer
from worker.checkpoints import CheckpointKeys, latest_complete, load_checkpoint, load_weights, write_checkpoint
from worker.divergence import Diverged, NonFiniteWatch
from worker.gan import GAN, LoadedData, build_gan, load_builtin
from worker.trainer import train

CPU = torch.device("cpu")


class ListSink:
    """Keeps everything the trainer hands it; asks to stop once it has seen metrics at `stop_at`."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at
        self.metric_calls: list[tuple[int, dict[str, float]]] = []
        self.samples: list[tuple[int, np.ndarray]] = []
        self.checkpoints: list[tuple[int, dict[str, torch.Tensor], dict[str, Any]]] = []
        self.alerts: list[dict[str, Any]] = []
        self._last = 0

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.metric_calls.append((step, dict(values)))
        self._last = step

    def sample(
        self, step: int, samples: np.ndarray, labels: np.ndarray | None, evaluation: dict[str, float] | None
    ) -> None:
        del labels, evaluation  # the comparison needs the samples alone
        self.samples.append((step, samples.copy()))

    def checkpoint(self, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.checkpoints.append((step, weights, state))

    def should_stop(self) -> bool:
        return self.stop_at is not None and self._last >= self.stop_at

    def alert(self, alert: dict[str, Any]) -> None:
        self.alerts.append(alert)


def small_spec(**changes: Any) -> JobSpec:
    spec: dict[str, Any] = {
        "dataset": {"builtin": "ring8"},
        "architecture": {"name": "mlp", "hidden": 32, "depth": 2},
        "loss": {"name": "nsgan"},
        "training": {"steps": 200, "batch_size": 64, "seed": 3, "sample_count": 256},
        "every": {"metrics": 10, "samples": 50, "checkpoint": 100},
    }
    for key, value in changes.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and key in spec else value
    return JobSpec.model_validate(spec)


@pytest.fixture(scope="module")
def ring8() -> LoadedData:
    return load_builtin("ring8")


def metric_points(sink: ListSink) -> list[tuple[int, str, float]]:
    return [(step, name, value) for step, values in sink.metric_calls for name, value in values.items()]


@pytest.mark.parametrize("loss", ["nsgan", "wgan-gp"])
def test_train_k_steps_checkpoint_resume_equals_training_straight(ring8: LoadedData, tmp_path: Path, loss: str) -> None:
    spec = small_spec(loss={"name": loss})
    straight = ListSink()
    assert not train(spec, ring8, straight, CPU).stopped

    first = ListSink(stop_at=130)  # 130 is not a checkpoint step: the stop path writes one
    stopped = train(spec, ring8, first, CPU)
    assert stopped.stopped and stopped.step == 130
    assert [step for step, _, _ in first.checkpoints] == [100, 130]

    # Through the real layout: written to an artifact store, found as the latest, loaded with weights_only.
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    step, weights, state = first.checkpoints[-1]
    pending = [MetricPoint("loss_d", 130, 0.5)]
    written = write_checkpoint(
        artifacts,
        job_id="j",
        step=step,
        weights=weights,
        state=state,
        spec_json=spec.model_dump(mode="json"),
        scratch_dir=str(tmp_path / "scratch"),
        pending_metrics=pending,
        handed_back="store lost",
    )
    keys = latest_complete(artifacts, "j")
    assert keys == written.keys == CheckpointKeys.of("j", 130)
    loaded = load_checkpoint(artifacts, keys)
    assert loaded.pending_metrics == pending and loaded.handed_back == "store lost"
    assert "pending_metrics" not in loaded.state and "handed_back" not in loaded.state

    second = ListSink()
    resumed = train(spec, ring8, second, CPU, resume=loaded.state)
    assert not resumed.stopped and resumed.step == 200

    # Metrics: the first run's up to 130 and the resumed run's after it are the straight run's, exactly.
    everything = metric_points(straight)
    assert metric_points(first) == [p for p in everything if p[0] <= 130]
    assert metric_points(second) == [p for p in everything if p[0] > 130]
    # Weights, optimiser state and snapshots: bit for bit.
    final_straight, final_resumed = straight.checkpoints[-1], second.checkpoints[-1]
    assert final_straight[0] == final_resumed[0] == 200
    assert final_straight[1].keys() == final_resumed[1].keys()
    for name, tensor in final_straight[1].items():
        assert torch.equal(tensor, final_resumed[1][name]), name
    assert [s for s, _ in second.samples] == [150, 200]
    for (step_a, a), (step_b, b) in zip(straight.samples[-2:], second.samples, strict=True):
        assert step_a == step_b and np.array_equal(a, b)


def test_checkpoint_layout_size_is_the_weights_and_a_torn_checkpoint_is_not_the_latest(
    ring8: LoadedData, tmp_path: Path
) -> None:
    sink = ListSink()
    train(small_spec(training={"steps": 100}), ring8, sink, CPU)
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    step, weights, state = sink.checkpoints[-1]
    written = write_checkpoint(
        artifacts, job_id="j", step=step, weights=weights, state=state, spec_json={}, scratch_dir=str(tmp_path / "s")
    )
    # Fault 11: the size a user sees is the download's (the safetensors weights), not the resume state's.
    assert written.size_bytes == artifacts.size(written.keys.weights) != artifacts.size(written.keys.state)
    assert load_weights(artifacts, written.keys.weights).keys() == weights.keys()
    assert not list((tmp_path / "s").iterdir())  # no temporary file left behind
    # A later checkpoint whose state was never written (the worker died in between) is not complete.
    artifacts.put_bytes(CheckpointKeys.of("j", 200).weights, b"torn")
    assert latest_complete(artifacts, "j") == CheckpointKeys.of("j", 100)
    assert latest_complete(artifacts, "other") is None
    # A state under the wrong key is refused rather than resumed from the wrong step.
    artifacts.put_bytes(CheckpointKeys.of("j", 300).state, artifacts.read_bytes(written.keys.state))
    with pytest.raises(ValueError, match="holds step 100, not 300"):
        load_checkpoint(artifacts, CheckpointKeys.of("j", 300))


def test_the_issues_divergence_fails_at_step_1_and_publishes_nothing(ring8: LoadedData) -> None:
    # Fault 7's input: NaN from step 1, first read at the step-20 snapshot.
    spec = small_spec(
        loss={"name": "lsgan", "lr_g": 1e30, "lr_d": 1e30},
        training={"steps": 100},
        every={"metrics": 200, "samples": 20, "checkpoint": 1000},
    )
    sink = ListSink()
    with pytest.raises(Diverged) as caught:
        train(spec, ring8, sink, CPU)
    assert caught.value.step == 1, str(caught.value)
    assert caught.value.name in {"loss_g", "loss_d", "d_real", "d_fake", "grad_norm_g", "grad_norm_d"}
    assert not np.isfinite(caught.value.value)
    assert sink.samples == [] and sink.checkpoints == [] and sink.metric_calls == []


def poison_at(monkeypatch: pytest.MonkeyPatch, step: int, *, before: bool, module: str) -> None:
    """Make `module`'s weights inf just before (or just after) G step `step` of every GAN the trainer builds."""
    build = build_gan

    def build_poisoned(*args: Any, **kwargs: Any) -> GAN:
        gan = build(*args, **kwargs)
        original = gan.train_step

        def train_step(next_batch: Any, *args: Any) -> dict[str, torch.Tensor]:
            network = getattr(gan, module)
            if before and gan.generator_steps == step - 1:
                with torch.no_grad():
                    next(network.parameters()).fill_(float("inf"))
            values = original(next_batch, *args)
            if not before and gan.generator_steps == step:
                with torch.no_grad():
                    next(network.parameters()).fill_(float("inf"))
            return values

        gan.train_step = train_step  # type: ignore[method-assign]
        return gan

    monkeypatch.setattr(trainer, "build_gan", build_poisoned)


def test_a_divergence_mid_run_names_its_true_step_and_keeps_what_came_before(
    ring8: LoadedData, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison_at(monkeypatch, 37, before=True, module="discriminator")  # D is inf while step 37 computes its losses
    spec = small_spec(training={"steps": 100}, every={"metrics": 10, "samples": 20, "checkpoint": 30})
    sink = ListSink()
    with pytest.raises(Diverged, match=r"became (nan|inf|-inf) at step 37$") as caught:
        train(spec, ring8, sink, CPU)
    assert caught.value.step == 37
    assert [s for s, _ in sink.samples] == [20]  # the step-40 snapshot, computed after it, is not published
    assert [s for s, _, _ in sink.checkpoints] == [30]
    assert [s for s, _ in sink.metric_calls] == [10, 20, 20, 30]  # 20 twice: losses, then the snapshot's evaluation
    assert all(np.isfinite(v) for _, values in sink.metric_calls for v in values.values())


def test_non_finite_weights_are_not_checkpointed_even_while_the_losses_are_finite(
    ring8: LoadedData, monkeypatch: pytest.MonkeyPatch
) -> None:
    # G's weights go inf in step 30's update: step 30's losses were computed before, so only the checkpoint shows it.
    poison_at(monkeypatch, 30, before=False, module="generator")
    spec = small_spec(training={"steps": 100}, every={"metrics": 10, "samples": 1000, "checkpoint": 30})
    sink = ListSink()
    with pytest.raises(Diverged, match=r"^generator\.\S+ became inf at step 30$"):
        train(spec, ring8, sink, CPU)
    assert sink.checkpoints == [] and sink.samples == []


def test_non_finite_samples_are_not_published(ring8: LoadedData, monkeypatch: pytest.MonkeyPatch) -> None:
    poison_at(monkeypatch, 20, before=False, module="generator")
    spec = small_spec(
        training={"steps": 100, "ema_decay": None}, every={"metrics": 10, "samples": 20, "checkpoint": 1000}
    )
    sink = ListSink()
    with pytest.raises(Diverged, match=r"^samples became (nan|inf|-inf) at step 20$"):
        train(spec, ring8, sink, CPU)
    assert sink.samples == []


def test_the_watch_reports_the_first_bad_step_and_its_name_without_reading_the_device_each_step() -> None:
    watch = NonFiniteWatch(CPU)
    finite = {"loss_d": torch.tensor(0.5), "loss_g": torch.tensor(1.0)}
    for step in range(1, 5):
        watch.observe(step, finite)
    watch.check()  # nothing yet
    watch.observe(5, {"loss_d": torch.tensor(0.5), "loss_g": torch.tensor(float("nan"))})
    watch.observe(6, {"loss_d": torch.tensor(float("inf")), "loss_g": torch.tensor(float("nan"))})
    watch.observe(7, finite)
    with pytest.raises(Diverged, match="^loss_g became nan at step 5$"):
        watch.check()


@pytest.mark.parametrize(
    ("steps", "bad_steps", "first"),
    [
        (range(1, 601), [300, 450], 300),  # held steps folded across FOLD_EVERY boundaries
        (range(1, 601), [256, 257], 256),  # the last step of a fold
        (range(1, 601), [600], 600),  # still held when read
        (range(10, 1000, 10), [20, 500], 20),  # steps that are not consecutive
    ],
)
def test_the_watch_keeps_the_first_bad_step_however_the_steps_come(
    steps: range, bad_steps: list[int], first: int
) -> None:
    watch = NonFiniteWatch(CPU)
    for step in steps:
        bad = float("-inf") if step in bad_steps else 0.25
        watch.observe(step, {"loss_d": torch.tensor(0.5), "gradient_penalty": torch.tensor(bad)})
    with pytest.raises(Diverged, match=f"^gradient_penalty became -inf at step {first}$"):
        watch.check()


def test_observing_a_step_never_reads_the_device() -> None:
    # Meta tensors have no values: any read back to the host (a sync on a GPU) would raise here.
    watch = NonFiniteWatch(torch.device("meta"))
    for step in range(1, 100):
        watch.observe(step, {"loss_d": torch.zeros((), device="meta"), "loss_g": torch.zeros((), device="meta")})
    with pytest.raises(RuntimeError, match="meta"):
        watch.check()  # the one place that reads
