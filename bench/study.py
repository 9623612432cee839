"""Run a loss study (a `POST /v1/studies` body in a YAML file) in-process, and print its comparison.

    python bench/study.py bench/studies/grid25.yaml                 # every run, one lane
    python bench/study.py bench/studies/grid25.yaml --jobs 2        # two lanes (processes)
    python bench/study.py bench/studies/grid25.yaml --seeds 0       # only seed 0 of each loss (resumable)
    python bench/study.py bench/studies/grid25.yaml --report        # only print the table of what has finished
    python bench/study.py bench/studies/grid25.yaml --report --write  # ... and write it to bench/studies/grid25.md

The same fan-out as the service (`models.study.expand`: one job per loss × grid point × seed),
the same loop (`worker.trainer.train`, one CPU thread per run), and the same comparison
(`models.comparison.compare`): a recording sink keeps each run's metric series, snapshot
evaluations, watch alerts, wall and CPU seconds, and writes them to
`bench/studies/results/<study>/<loss>__<point>__seed<n>.json` as soon as the run ends. A
re-run skips every run that has a result, so a study can be stopped and resumed at any time.
Runs are ordered so that whatever finishes first is useful: seed 0 of every loss, then
seed 1, ...; the cheapest losses first within a seed.

The table (markdown) is printed and, after runs (or with --write), written to `bench/studies/<study>.md`:
`--report` alone leaves the tracked file as it is.

Through the service instead (same spec file, the jobs run on the service's workers):

    ganforge study submit bench/studies/grid25.yaml --follow
    curl -s -X POST localhost:8000/v1/studies -H 'Content-Type: application/json' \\
        -d "$(python -c 'import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))' bench/studies/grid25.yaml)"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ganforge.specfile import read_spec_file  # noqa: E402
from models.admission import check_compatible, fill_defaults  # noqa: E402
from models.datasets import BUILTIN_DATASETS  # noqa: E402
from models.spec import JobSpec  # noqa: E402
from models.study import Cell, StudySpec, expand, point_label  # noqa: E402

if TYPE_CHECKING:
    from models.comparison import Run

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "studies" / "results"
# CPU seconds per generator step of each loss's defaults on grid25 (MLP 3 × 512, batch 256), one thread, on the
# project's 2-core machine (bench/studies/grid25.yaml: 200-step sizing runs and the study's 3,000-step runs):
# used only to put the cheap losses first. An unknown loss ranks by its n_critic.
STEP_SECONDS = {
    "nsgan": 0.052,
    "lsgan": 0.057,
    "infogan": 0.058,
    "minimax": 0.059,
    "cgan": 0.060,
    "dragan": 0.069,
    "began": 0.084,
    "hinge": 0.16,
    "wgan": 0.166,
    "wgan-gp": 0.289,
}


# --------------------------------------------------------------------------- the study and its cells


def load_study(path: str | Path) -> dict[str, Any]:
    """The study body of a YAML or JSON file (ganforge's safe spec-file reader: no aliases, ≤ 1 MiB)."""
    return read_spec_file(Path(path))


def expand_study(body: Mapping[str, Any], study_id: str) -> list[Cell]:
    """The study's jobs as the service fans them out (models.study.expand), each spec with its data's defaults.

    Raises pydantic.ValidationError for a malformed body and models.study.StudyRejected for one that cannot run,
    as POST /v1/studies answers 422.
    """
    cells = expand(StudySpec.model_validate(body), study_id)
    return [Cell(c.loss, dict(c.point), c.seed, _admit(c.spec)) for c in cells]


def _admit(spec: JobSpec) -> JobSpec:
    """What the service's admission does for a built-in data set: refuse what cannot run, fill data defaults."""
    assert spec.dataset.builtin, "bench studies run on built-in data sets"
    info = BUILTIN_DATASETS[spec.dataset.builtin]
    problems = check_compatible(spec, info)
    if problems:
        raise ValueError("; ".join(f"{'.'.join(map(str, p.loc))}: {p.message}" for p in problems))
    return fill_defaults(spec, info)


def _point_text(point: Mapping[str, Any]) -> str:
    return point_label(point)  # "param=value,param=value", as the jobs' study_point tag


def run_name(cell: Cell) -> str:
    """`<loss>__<point>__seed<n>`: the result file's stem (the point 'default' without a grid)."""
    point = _point_text(cell.point).replace("/", "_") or "default"
    return f"{cell.loss}__{point}__seed{cell.seed}"


def order(cells: Sequence[Cell]) -> list[Cell]:
    """Seed 0 of every loss and point first, then seed 1, ...; cheapest losses first within a seed."""

    def cost(cell: Cell) -> float:
        n_critic = getattr(cell.spec.loss, "n_critic", 1) or 1
        return STEP_SECONDS.get(cell.loss, 0.06 * n_critic) * cell.spec.training.steps

    return sorted(cells, key=lambda c: (c.seed, cost(c), c.loss, _point_text(c.point)))


# --------------------------------------------------------------------------- one run


class RecordingSink:
    """The trainer's Sink for a study run: keeps the metric series, snapshot evaluations and alerts; no files."""

    def __init__(self) -> None:
        self.series: dict[str, tuple[list[int], list[float]]] = {}
        self.snapshots: list[tuple[int, dict[str, float]]] = []
        self.alerts: list[dict[str, Any]] = []

    def metrics(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            steps, vals = self.series.setdefault(name, ([], []))
            if steps and steps[-1] == step:  # the evaluation at a snapshot also comes as metrics: keep one
                vals[-1] = float(value)
            else:
                steps.append(step)
                vals.append(float(value))

    def sample(
        self,
        step: int,
        samples: np.ndarray,  # noqa: ARG002
        labels: np.ndarray | None,  # noqa: ARG002
        evaluation: dict[str, float] | None,
    ) -> None:
        if evaluation is not None:
            self.snapshots.append((step, dict(evaluation)))

    def checkpoint(self, step: int, weights: Any, state: dict[str, Any]) -> None:
        pass

    def alert(self, alert: dict[str, Any]) -> None:
        self.alerts.append(dict(alert))

    def should_stop(self) -> bool:
        return False


def run_cell(cell: Cell, out: Path | None = None, threads: int = 1) -> dict[str, Any]:
    """Train one cell with worker.trainer.train; the result dict (also written atomically to `out`)."""
    import torch

    from worker.divergence import Diverged
    from worker.gan import load_builtin
    from worker.trainer import train

    torch.set_num_threads(threads)
    spec = cell.spec
    assert spec.dataset.builtin
    data = load_builtin(spec.dataset.builtin, spec.dataset.resize)
    sink = RecordingSink()
    status, error, step = "succeeded", None, 0
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        step = train(spec, data, sink, torch.device("cpu")).step
    except Diverged as exc:
        status, error = "failed", str(exc)
        step = max((s[-1] for s, _ in sink.series.values() if s), default=0)
        if not any(a.get("kind") == "divergence" for a in sink.alerts):
            sink.alerts.append({"kind": "divergence", "step": step, "evidence": {"error": error}, "action": "stopped"})
    result = {
        "job_id": run_name(cell),
        "loss": cell.loss,
        "point": cell.point,
        "seed": cell.seed,
        "status": status,
        "error": error,
        "step": step,
        "total_steps": spec.training.steps,
        "wall_seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "gpu_seconds": None,
        "series": {name: [steps, vals] for name, (steps, vals) in sink.series.items()},
        "snapshots": sink.snapshots,
        "alerts": sink.alerts,
        "spec": spec.model_dump(mode="json"),
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, out)  # a run killed mid-write leaves no half result behind
    return result


def _run_packed(args: tuple[Cell, Path]) -> tuple[str, float]:
    result = run_cell(*args)
    return result["job_id"], result["wall_seconds"]


def run_study(
    body: Mapping[str, Any],
    results: Path,
    *,
    jobs: int = 1,
    seeds: Sequence[int] | None = None,
    losses: Sequence[str] | None = None,
    log: Any = sys.stderr,
) -> list[Cell]:
    """Train every cell of the study without a result in `results` (filtered by seeds/losses), `jobs` at a time."""
    cells = order(expand_study(body, body["name"]))
    todo = [
        c
        for c in cells
        if (seeds is None or c.seed in seeds)
        and (losses is None or c.loss in losses)
        and not (results / f"{run_name(c)}.json").exists()
    ]
    print(
        f"{body['name']}: {len(cells)} runs in the study, {len(todo)} to run now, {jobs} lane(s)", file=log, flush=True
    )
    work = [(c, results / f"{run_name(c)}.json") for c in todo]
    if jobs <= 1:
        for cell, out in work:
            result = run_cell(cell, out)
            print(f"  {result['job_id']}: {result['status']}, {result['wall_seconds']:.0f} s", file=log, flush=True)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(_run_packed, item) for item in work]
            for future in as_completed(futures):
                name, seconds = future.result()
                print(f"  {name}: done, {seconds:.0f} s", file=log, flush=True)
    return cells


# --------------------------------------------------------------------------- the comparison


def load_runs(results: Path) -> list[Run]:
    """Every stored result of a study as a models.comparison.Run."""
    from models.comparison import Run

    runs = []
    for path in sorted(results.glob("*.json")):
        r = json.loads(path.read_text())
        runs.append(
            Run(
                job_id=r["job_id"],
                loss=r["loss"],
                point=r["point"],
                seed=r["seed"],
                status=r["status"],
                step=r["step"],
                total_steps=r["total_steps"],
                series={name: (sv[0], sv[1]) for name, sv in r["series"].items()},
                wall_seconds=r["wall_seconds"],
                cpu_seconds=r["cpu_seconds"],
                gpu_seconds=r.get("gpu_seconds"),
                alerts=r["alerts"],
                error=r.get("error"),
            )
        )
    return runs


def _num(value: Any, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _mean_std(figure: Mapping[str, Any] | None, digits: int, scale: float = 1.0) -> str:
    if not figure or figure.get("mean") is None:
        return "–"
    mean = figure["mean"] * scale
    std = figure.get("std")
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std * scale:.{digits}f}"


def report(body: Mapping[str, Any], cells: Sequence[Cell], runs: Sequence[Run]) -> str:
    """The markdown comparison of `runs` (what has finished of `cells`)."""
    from models.comparison import compare, measures

    dataset = body["dataset"]["builtin"]
    info = BUILTIN_DATASETS[dataset]
    modes = None
    if info.kind == "points":
        from worker.gan.datasets import MIXTURES

        modes = len(MIXTURES[dataset][0])
    losses = sorted({c.loss for c in cells})
    names = [m.name for m in measures(info.kind, losses)]
    rows = compare(runs, data_kind=info.kind, modes=modes)
    percent = {"hq_fraction", "class_accuracy", "code_purity"}
    head = ["loss", "point", "runs"]
    head += [f"{n} (%)" if n in percent else n for n in names]
    reach_names = names[:2]  # the primary measure and the next (points: every mode; ≥ 50 % HQ)
    thresholds = {n: _threshold(rows, n) for n in reach_names}
    head += [f"steps to {n} {thresholds[n]}" for n in reach_names]
    head += [
        "wall s",
        "CPU s",
        "G-loss spread (last ¼)",
        "vanishing ∇G",
        "mode oscillation",
        "collapse",
        "divergence",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        quality = row.get("quality", {})
        cols = [row["loss"], _point_text(row.get("point") or {}) or "–", f"{row.get('finished', 0)}/{row['runs']}"]
        for n in names:
            cols.append(
                _mean_std(quality.get(n), 1 if n in percent or n == "fd" else 2, 100.0 if n in percent else 1.0)
            )
        for n in reach_names:
            reach = (row.get("steps_to_threshold") or {}).get(n) or {}
            cols.append(f"{_mean_std(reach, 0)} ({reach.get('reached', 0)}/{reach.get('n', 0)} runs)" if reach else "–")
        cols.append(_mean_std(row.get("wall_seconds"), 0))
        cols.append(_mean_std(row.get("cpu_seconds"), 0))
        stab = row.get("stability") or {}
        cols.append(_mean_std(stab.get("loss_g_spread_last_quarter"), 3))
        cols.append(_mean_std(stab.get("vanishing_grad_fraction"), 3))
        cols.append(_mean_std(stab.get("mode_oscillation"), 2))
        cols.append(str(stab.get("collapse_events", "–")))
        cols.append(str(stab.get("divergence_events", "–")))
        lines.append("| " + " | ".join(cols) + " |")
    done = {r.job_id for r in runs}
    missing = [run_name(c) for c in order(cells) if run_name(c) not in done]
    total_wall = sum(r.wall_seconds or 0 for r in runs)
    total_cpu = sum(r.cpu_seconds or 0 for r in runs)
    lines += [
        "",
        f"Finished {len(done & {run_name(c) for c in cells})} of {len(cells)} runs; "
        f"their wall time adds up to {total_wall:.0f} s ({total_wall / 3600:.2f} h), CPU {total_cpu:.0f} s "
        "(one thread per run).",
    ]
    if missing:
        lines.append(f"Not run yet ({len(missing)}): " + ", ".join(missing) + ".")
    lines += ["", "Per run (last snapshot):", "", _per_run(runs, names, percent)]
    return "\n".join(lines)


def _threshold(rows: Sequence[Mapping[str, Any]], name: str) -> str:
    """'≥ 25' / '≤ 12.3': the rule of a measure's steps-to-threshold column, from the first row that has it."""
    for row in rows:
        reach = (row.get("steps_to_threshold") or {}).get(name) or {}
        if reach.get("threshold") is not None:
            higher = next((m.direction for m in _measures_of(name)), "higher") == "higher"
            return f"{'≥' if higher else '≤'} {reach['threshold']:g}"
    return ""


def _measures_of(name: str) -> list[Any]:
    from models.comparison import measures

    return [m for kind in ("points", "images") for m in measures(kind, ["cgan", "infogan"]) if m.name == name]


def _per_run(runs: Sequence[Run], names: Sequence[str], percent: set[str]) -> str:
    head = ["run", "status", "step", *names, "wall s", "CPU s", "alerts", f"{_trace_name(names)} at each snapshot"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(runs, key=lambda r: (r.loss, _point_text(r.point), r.seed)):
        cols = [r.job_id, r.status, f"{r.step}/{r.total_steps}"]
        for n in names:
            series = r.series.get(n)
            if series and len(series[1]):
                value = series[1][-1] * (100 if n in percent else 1)
                cols.append(f"{value:.1f}" if n in percent or n == "fd" else f"{value:.2f}")
            else:
                cols.append("–")
        cols += [_num(r.wall_seconds, 0), _num(r.cpu_seconds, 0)]
        cols.append(", ".join(f"{a.get('kind')}@{a.get('step')}" for a in r.alerts) or "–")
        cols.append(_trace(r, names))
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines)


def _trace_name(names: Sequence[str]) -> str:
    return "modes / HQ %" if names[0] == "modes_covered" else names[0]


def _trace(run: Run, names: Sequence[str]) -> str:
    """The primary measure at every snapshot (points: modes covered / HQ %), to see oscillation and speed."""
    first = run.series.get(names[0])
    if not first:
        return "–"
    if names[0] == "modes_covered" and "hq_fraction" in run.series:
        hq = dict(zip(*run.series["hq_fraction"], strict=True))
        return " ".join(f"{m:.0f}/{100 * hq.get(s, float('nan')):.0f}" for s, m in zip(*first, strict=True))
    return " ".join(f"{v:.3g}" for v in first[1])


def write_report(
    spec_path: Path, body: Mapping[str, Any], cells: Sequence[Cell], results: Path, out: Path | None
) -> str:
    """Render the report of what is in `results`; write it (with the command that re-runs it) to `out` unless None."""
    text = report(body, cells, load_runs(results))
    header = (
        f"# Study `{body['name']}` ({body['dataset']['builtin']})\n\n"
        f"Spec: [{spec_path.name}]({spec_path.name}). Re-run (resumable; `--jobs 2` for two lanes):\n\n"
        f"```\npython bench/study.py bench/studies/{spec_path.name} --jobs 2\n```\n\n"
        "Mean ± sample std over the seeds that finished (one value: one seed). Quality at each run's last "
        "snapshot; stability figures and thresholds as defined in models/comparison.py. Wall seconds are the "
        "machine's that ran each run (one thread; on a shared machine they exceed CPU seconds), CPU seconds the "
        "run's process time.\n\n"
    )
    if out is not None:
        out.write_text(header + text + "\n")
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="the study body: a YAML or JSON file (bench/studies/*.yaml)")
    parser.add_argument("--jobs", type=int, default=1, help="lanes: runs at once, one process and one thread each")
    parser.add_argument("--seeds", help="only these seeds now, comma-separated (the rest stay to run)")
    parser.add_argument("--losses", help="only these losses now, comma-separated")
    parser.add_argument("--results", help=f"the results folder (default {RESULTS}/<study name>)")
    parser.add_argument("--report", action="store_true", help="no training: print the table of the results so far")
    parser.add_argument("--write", action="store_true", help="with --report: also write the markdown (see --out)")
    parser.add_argument("--out", help="where to write the markdown (default bench/studies/<study name>.md)")
    args = parser.parse_args(argv)
    spec_path = Path(args.spec)
    body = load_study(spec_path)
    results = Path(args.results) if args.results else RESULTS / body["name"]
    started = time.perf_counter()
    if args.report:
        cells = order(expand_study(body, body["name"]))
    else:
        cells = run_study(
            body,
            results,
            jobs=args.jobs,
            seeds=[int(s) for s in args.seeds.split(",")] if args.seeds else None,
            losses=args.losses.split(",") if args.losses else None,
        )
    out = Path(args.out) if args.out else HERE / "studies" / f"{body['name']}.md"
    # A look at the results so far must not rewrite the tracked table: only runs, --write or --out do.
    write = not args.report or args.write or args.out is not None
    print(write_report(spec_path, body, cells, results, out if write else None))
    where = f"table written to {out}" if write else f"not written (--write writes {out})"
    print(f"\n{time.perf_counter() - started:.0f} s; {where}", file=sys.stderr)


if __name__ == "__main__":
    main()
