"""The GAN zoo on the 2-D mode-collapse benchmark (PacGAN protocol), with the spec's defaults.

    python bench/zoo.py                                   # every loss on ring8 (5k steps) and grid25 (5k steps)
    python bench/zoo.py --losses nsgan,wgan-gp --datasets grid25 --steps grid25=20000
    python bench/zoo.py --digits                          # cgan class accuracy and infogan code purity on digits
    python bench/zoo.py --losses nsgan --set architecture.hidden=512   # try a non-default (not for the table)

Each run goes through `worker.trainer.train` (the loop the service runs) with a
sink that keeps the evaluation of the fixed 2,500-sample snapshot. Runs are
sequential, one CPU thread each (the machine is shared); `--jobs N` runs N at once.
The printed table puts the published rows of GAN_REFERENCE.md beside ours.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.catalog import LOSS_CLASSES  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from worker.gan import load_builtin  # noqa: E402
from worker.gan.classifier import evaluate_labelled_samples, train_classifier  # noqa: E402
from worker.gan.datasets import MIXTURES  # noqa: E402
from worker.gan.evaluation import nearest_modes  # noqa: E402
from worker.gan.factory import build_gan  # noqa: E402
from worker.trainer import train  # noqa: E402

PUBLISHED = [  # method, ring8 modes / %HQ, grid25 modes / %HQ, source (GAN_REFERENCE.md)
    ("GAN", "6.3 / 98.2", "17.3 / 94.8", "PacGAN Table 1 (10 runs)"),
    ("ALI", "6.6 / 97.6", "24.1 / 95.7", "PacGAN Table 1"),
    ("PacGAN2", "7.9 / 95.6", "23.8 / 91.3", "PacGAN Table 1"),
    ("PacGAN4", "7.8 / 95.9", "24.8 / 93.6", "PacGAN Table 1"),
    ("Unrolled GAN", "7.6 / 35.6", "23.6 / 16", "VEEGAN Table 1"),
    ("VEEGAN", "8 / 52.9", "24.6 / 40", "VEEGAN Table 1"),
]
ALL_LOSSES = list(LOSS_CLASSES)
# Small enough for a shared CPU: DCGAN at 16 px, 32 base channels, batch 64 (--set overrides any of them).
DIGITS_SETTINGS = [
    "architecture.name=dcgan",
    "architecture.base_channels=32",
    "architecture.latent_dim=64",
    "dataset.resize=16",
    "training.batch_size=64",
]


class EvaluationSink:
    """Keeps the evaluation of every snapshot (and prints it to stderr as progress); drops checkpoints."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.last_samples: np.ndarray | None = None
        self.evaluations: list[tuple[int, dict[str, float]]] = []

    def metrics(self, step: int, values: dict[str, float]) -> None:
        pass

    def sample(
        self, step: int, samples: np.ndarray, labels: np.ndarray | None, evaluation: dict[str, float] | None  # noqa: ARG002
    ) -> None:
        self.last_samples = samples
        if evaluation is not None:
            self.evaluations.append((step, evaluation))
            modes, hq = int(evaluation["modes_covered"]), 100 * evaluation["hq_fraction"]
            print(f"[{self.label}] step {step}: {modes} modes, {hq:.1f} % HQ", file=sys.stderr, flush=True)

    def checkpoint(self, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def alert(self, alert: dict[str, Any]) -> None:
        print(f"[{self.label}] training.watch: {alert}", file=sys.stderr, flush=True)


def _set(body: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for name in parents:
        body = body.setdefault(name, {})
    body[leaf] = value


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)  # numbers, true/false/null, lists
    except json.JSONDecodeError:
        return raw  # a bare word such as a loss name


def make_spec(loss: str, dataset: str, steps: int, seed: int, overrides: list[str]) -> JobSpec:
    body: dict[str, Any] = {
        "name": f"zoo-{loss}-{dataset}",
        "dataset": {"builtin": dataset},
        "architecture": {"name": "mlp"},
        "loss": {"name": loss},
        "training": {"steps": steps, "seed": seed},
        "every": {"metrics": 1000, "samples": max(steps // 10, 1), "checkpoint": steps},
    }
    for item in overrides:
        key, _, raw = item.partition("=")
        _set(body, key, _value(raw))
    return JobSpec.model_validate(body)


def run_points(
    loss: str, dataset: str, steps: int, seed: int, overrides: list[str], threads: int, save: str | None
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    spec = make_spec(loss, dataset, steps, seed, overrides)
    sink = EvaluationSink(f"{loss} {dataset} seed {seed}")
    result = train(spec, load_builtin(dataset), sink, torch.device("cpu"))
    if save and sink.last_samples is not None:
        Path(save).mkdir(parents=True, exist_ok=True)
        np.save(Path(save) / f"{loss}-{dataset}-{steps}-{seed}.npy", sink.last_samples)
    final = {**sink.evaluations[-1][1], **spread(sink.last_samples, dataset)}
    trace = " ".join(f"{int(e['modes_covered'])}/{round(100 * e['hq_fraction'])}" for _, e in sink.evaluations)
    return {
        "loss": loss,
        "dataset": dataset,
        "steps": result.step,
        "seed": seed,
        "seconds": result.seconds,
        **final,
        "trace": trace,
    }


def spread(samples: np.ndarray | None, dataset: str) -> dict[str, float]:
    """Diagnostics beside the protocol, to tell collapse from imprecision: the median standardised
    distance to the nearest mode, and how many modes hold at least 1 % of the samples at any distance."""
    if samples is None:
        return {}
    nearest, sigmas, modes = nearest_modes(samples, dataset)
    counts = np.bincount(nearest, minlength=modes)
    return {
        "median_sigma": float(np.median(sigmas)),
        "modes_with_mass": float((counts >= 0.01 * len(samples)).sum()),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| loss | data | steps | seed | wall s | modes covered | HQ % | reverse KL (HQ) | reverse KL (all) | median dist/σ | modes with ≥1 % mass | modes / HQ % at each tenth of the run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        modes = len(MIXTURES[r["dataset"]][0])
        lines.append(
            f"| {r['loss']} | {r['dataset']} | {r['steps']} | {r['seed']} | {r['seconds']:.0f} | "
            f"{int(r['modes_covered'])}/{modes} | {100 * r['hq_fraction']:.1f} | {r['reverse_kl']:.3f} | "
            f"{r.get('reverse_kl_all', float('nan')):.3f} | "
            f"{r.get('median_sigma', float('nan')):.1f} | {int(r.get('modes_with_mass', -1))} | {r['trace']} |"
        )
    lines += [
        "",
        "Published (modes / % HQ; PacGAN trains 400k steps):",
        "",
        "| method | ring8 | grid25 | source |",
        "|---|---|---|---|",
    ]
    lines += [f"| {m} | {a} | {b} | {s} |" for m, a, b, s in PUBLISHED]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--losses", default=",".join(ALL_LOSSES), help="comma-separated loss names")
    parser.add_argument("--datasets", default="ring8,grid25", help="comma-separated: ring8, grid25")
    parser.add_argument("--steps", default="ring8=5000,grid25=5000", help="generator steps per data set, or one number")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--set", action="append", default=[], help="spec override, e.g. architecture.hidden=512")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one CPU thread each)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--digits", action="store_true", help="instead: cgan accuracy and infogan purity on digits")
    parser.add_argument("--digits-steps", type=int, default=3000)
    parser.add_argument("--save-samples", help="write each run's final 2,500 samples (.npy) into this folder")
    parser.add_argument(
        "--render", help="print the table of a previous run's JSON lines (log file) instead of training"
    )
    parser.add_argument("--out", help="append the table (with this command) to this markdown file")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.render:
        text = render(args.render, args.save_samples)
    elif args.digits:
        torch.set_num_threads(args.threads)
        text = digits_table(args.digits_steps, [int(s) for s in args.seeds.split(",")], args.set)
    else:
        text = points_table(args)
    print(text)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.out:
        command = "python bench/zoo.py " + " ".join(sys.argv[1:])
        with open(args.out, "a") as handle:
            handle.write(f"\n```\n{command}\n```\n\n{text}\n")


def points_table(args: argparse.Namespace) -> str:
    steps = {"ring8": 5000, "grid25": 5000}
    if "=" in args.steps:
        steps.update({k: int(v) for k, v in (item.split("=") for item in args.steps.split(","))})
    else:
        steps = dict.fromkeys(steps, int(args.steps))
    runs = [
        (loss, dataset, steps[dataset], int(seed), args.set, args.threads, args.save_samples)
        for dataset in args.datasets.split(",")
        for loss in args.losses.split(",")
        for seed in args.seeds.split(",")
    ]
    rows = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for row in pool.map(_run_packed, runs):
            rows.append(row)
            print(json.dumps(row), flush=True)
    return table(rows)


def render(log: str, samples_dir: str | None) -> str:
    """The table of the JSON rows in `log`, adding the spread columns from saved samples when missing."""
    rows = [json.loads(line) for line in Path(log).read_text().splitlines() if line.startswith("{")]
    for row in rows:
        saved = Path(samples_dir or ".") / f"{row['loss']}-{row['dataset']}-{row['steps']}-{row['seed']}.npy"
        if "median_sigma" not in row and saved.exists():
            row.update(spread(np.load(saved), row["dataset"]))
    return table(rows)


def _run_packed(run: tuple[Any, ...]) -> dict[str, Any]:
    return run_points(*run)


class LastStateSink(EvaluationSink):
    """Keeps the final GAN state (to rebuild the trained networks)."""

    state: dict[str, Any] | None = None

    def checkpoint(self, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:  # noqa: ARG002
        self.state = state


def digits_table(steps: int, seeds: list[int], overrides: list[str]) -> str:
    """cgan's class accuracy and infogan's code purity on digits, judged by a classifier trained on digits."""
    lines = [
        "| loss | arch | px | batch | steps | seed | wall s | cgan class accuracy | infogan code purity | infogan code NMI | Fréchet (classifier features) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for seed in seeds:
        classifier = None
        for loss in ("cgan", "infogan"):
            spec = make_spec(loss, "digits", steps, seed, [*DIGITS_SETTINGS, *overrides])
            data = load_builtin("digits", spec.dataset.resize)
            assert data.y is not None
            if classifier is None:
                classifier, accuracy = train_classifier(data.x, data.y, seed=seed)
                notes.append(
                    f"classifier (seed {seed}): held-out accuracy {accuracy:.3f} on real {data.info.shape[-1]} px digits"
                )
            sink = LastStateSink()
            result = train(spec, data, sink, torch.device("cpu"))
            assert sink.state is not None
            gan = build_gan(spec, data.info, torch.device("cpu"))
            gan.load_state_dict(sink.state["gan"])
            s = evaluate_labelled_samples(gan, classifier, data.x, data.info.num_classes, seed=seed)
            lines.append(
                f"| {loss} (base {getattr(spec.loss, 'base', '')}) | {spec.architecture.name} | {data.info.shape[-1]} | "
                f"{spec.training.batch_size} | {result.step} | {seed} | {result.seconds:.0f} | "
                f"{_fmt(s.get('class_accuracy'))} | {_fmt(s.get('code_purity'))} | {_fmt(s.get('code_nmi'))} | {s['frechet']:.1f} |"
            )
            print(lines[-1], flush=True)
    return "\n".join(lines + [""] + notes)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
