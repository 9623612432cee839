"""A study's comparison table and overlaid curves, computed from its jobs' series (pure: no torch, no SQL).

    rows = compare(runs, data_kind="points", modes=25)     # one row per (loss, grid point)
    body = curves(runs, ["loss_g", "modes_covered"], points=200)

The store reads each job of a study into a `Run` (status, step, times, alerts and the
series of `series_needed(...)`); the studies routes and the bench runner hand them here.
Every figure below can be recomputed by hand from the job's metrics (`GET
/v1/jobs/{id}/metrics`) and its `alerts`. Non-finite values (NaN, ±inf) in a series are
left out of every figure, so no output holds one.

Aggregation over seeds. A row groups the runs of one loss at one grid point. Each figure
is first computed per run, then summarised as {"mean", "std", "n"}: the mean, the
*sample* standard deviation (ddof = 1) over the n runs that have the figure (None when
n < 2), and n; mean is None when no run has it.

Quality (`measures`). PacGAN's 2-D protocol (Lin et al. 2018) for points: modes covered,
high-quality fraction, reverse KL of the HQ samples to uniform (worker/gan/evaluation.py);
for images the Fréchet distance (Heusel et al. 2017's formula) in a classifier's features
(`fd`), plus class accuracy for `cgan` and code purity for `infogan`
(worker/gan/classifier.py). A run's quality is its series' value at its last logged step
(its last snapshot: for a failed or still-running run, the last one it wrote).

Steps to a threshold. The first logged step at which the series reaches the measure's
threshold (≥ for higher-is-better, ≤ for lower-is-better). `reached` counts the runs that
got there; mean/std are over those runs only (an unreached run is not averaged in);
`n` counts the runs with the series. Thresholds (module constants, chosen to mean
something on the benchmark's published rows, see bench/ZOO_RESULTS.md):
  modes_covered  ≥ every mode (`modes`; no threshold when `modes` is not given)
  hq_fraction    ≥ 0.5    most samples within 3σ of a mode
  reverse_kl     ≤ 0.1    nats: HQ samples spread within 0.1 nats of uniform (log 8 = 2.08 is total collapse on ring8)
  fd             ≤ 1.5 × the lowest final fd over all the runs compared (the whole study): the
                 Fréchet distance's scale depends on the feature network, so no absolute level means
                 anything across data sets; and the first snapshot comes after `every.samples` steps of
                 training, so a level relative to a run's own start would favour slow starters.
  class_accuracy ≥ 0.8    of cgan samples are classed as the class asked (the classifier itself scores 0.975)
  code_purity    ≥ 0.8
The threshold actually used is in each row (`threshold`, with `rule` in words).

Time. wall_seconds / cpu_seconds / gpu_seconds over the runs that *succeeded* (a run
cut short says nothing about what training costs); n says how many.

Stability, per run, then summarised over seeds as above:
  loss_g_spread_last_quarter (headline, scale-free): the population std (ddof = 0) of
      loss_g over the logged steps s ≥ 0.75 · S (S the run's last logged step of loss_g),
      divided by the interquartile range (numpy's linear percentiles) of loss_g over the
      whole run. Each loss has its own loss_g scale (a WGAN critic's is unbounded, a
      non-saturating loss's is a log-likelihood), so the raw std is not comparable across
      losses; this ratio is near 0 when G's loss has settled and near or above 0.5 when it
      still swings as widely as it did over the whole run. None with fewer than 2 values in
      the last quarter; 0 when both std and IQR are 0, None when only the IQR is.
  loss_g_std_last_quarter: that raw std, in loss_g's units (compare within one loss).
  vanishing_grad_fraction: the fraction of the logged grad_norm_g values (the L2 norm of
      G's whole parameter gradient) below VANISHING_GRAD_NORM = 1e-4, the level
      `training.watch.vanishing_grad` uses by default (pass `vanishing_grad_norm` for another).
      Arjovsky & Bottou 2017 ("Towards principled methods for training GANs", Thm 2.4 and
      Fig. 2) show the gradient to G vanishes as D approaches a perfect discriminator, their
      measured norms falling by orders of magnitude; healthy runs here stay far above the level
      (ring8, MLP 3×128, 1,500 steps: minimax, nsgan and lsgan never went below 0.04). The level
      is absolute, like theirs, so a loss whose scale is small reads as vanishing sooner.
  mode_oscillation: the mean worsening of the primary quality between consecutive snapshots,
      improvements counted as 0 (so a run that only climbs scores 0): points, the mean over
      consecutive snapshot pairs of max(0, m[i-1] − m[i]) in modes covered (modes lost per
      snapshot interval); images, the mean of max(0, (fd[i] − fd[i-1]) / fd[i-1]) (relative
      rise of the Fréchet distance per interval). None with fewer than 2 snapshots.
  collapse_events: the number of the group's alerts (jobs.alerts) of kind "collapse".
  divergence_events: the number of alerts of kind "divergence", plus each failed run that has
      no divergence alert but whose error says it diverged (the worker's Diverged: "<name>
      became nan at step N", or a reason naming "diverged").

Curves. Per series name and (loss, point): the union of the runs' steps is the grid; longer
than `points`, it is cut into consecutive chunks of k = ⌈len/points⌉ union steps, each
labelled by its last step, and each run contributes its last value within the chunk (when
the runs share their steps this is plain subsampling: each run's value at the grid step).
A run with no value at a grid step (chunk) is left out there; mean, sample std (None below
two runs), min and max are over the runs present, `count` says how many.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

DATA_KINDS = ("points", "images")
# grad_norm_g below this counts as vanished (Arjovsky & Bottou 2017; see the module docstring).
VANISHING_GRAD_NORM = 1e-4
# loss_g's "last quarter": logged steps at or after this fraction of the run's last logged step.
LAST_QUARTER = 0.75
# fd's threshold: this many times the lowest final fd among the runs compared.
FD_TIMES_BEST = 1.5
# A failed run's error that says it diverged: the worker's Diverged message or a reason naming it.
DIVERGED_ERROR = re.compile(r"diverged|became (nan|inf|-inf)\b", re.IGNORECASE)

Direction = Literal["higher", "lower"]
ThresholdKind = Literal["absolute", "all_modes", "times_best_final"]


@dataclass(frozen=True)
class Measure:
    """A quality figure compared across losses.

    `direction`: which way is better. `threshold` is read through `threshold_kind`:
    "absolute" → the level itself; "all_modes" → `threshold` × the data's mode count (1.0:
    every mode); "times_best_final" → `threshold` × the best (lowest) final value of any run
    compared (for lower-is-better figures).
    """

    name: str
    direction: Direction
    threshold: float
    threshold_kind: ThresholdKind
    description: str

    def resolve(self, *, modes: int | None, best_final: float | None) -> float | None:
        """The level a series must reach, or None when it cannot be known (no `modes`, no final value)."""
        if self.threshold_kind == "absolute":
            return self.threshold
        if self.threshold_kind == "all_modes":
            return None if modes is None else self.threshold * modes
        return None if best_final is None else self.threshold * best_final

    def rule(self, level: float | None) -> str:
        """The threshold in words, e.g. "modes_covered ≥ 25 (every mode)"."""
        sign = "≥" if self.direction == "higher" else "≤"
        how = {
            "absolute": "",
            "all_modes": " (every mode)" if self.threshold == 1 else f" ({self.threshold:g} of the modes)",
            "times_best_final": f" ({self.threshold:g} × the lowest final {self.name} of the runs compared)",
        }[self.threshold_kind]
        shown = "unknown" if level is None else f"{level:g}"
        return f"{self.name} {sign} {shown}{how}"

    def reached(self, value: float, level: float) -> bool:
        """Whether `value` is at `level` or better."""
        return value >= level if self.direction == "higher" else value <= level


POINT_MEASURES = (
    Measure("modes_covered", "higher", 1.0, "all_modes", "modes holding a high-quality sample (PacGAN)"),
    Measure("hq_fraction", "higher", 0.5, "absolute", "share of samples within 3σ of a mode (PacGAN)"),
    Measure("reverse_kl", "lower", 0.1, "absolute", "KL(HQ samples' mode histogram ‖ uniform), nats"),
)
FD = Measure(
    "fd", "lower", FD_TIMES_BEST, "times_best_final", "Fréchet distance in a classifier's features (Heusel et al.)"
)
CLASS_ACCURACY = Measure(
    "class_accuracy", "higher", 0.8, "absolute", "cgan: share of samples classed as the class asked"
)
CODE_PURITY = Measure(
    "code_purity", "higher", 0.8, "absolute", "infogan: share of samples agreeing with their code's majority class"
)


@dataclass(frozen=True)
class Run:
    """One job of a study, as compare and curves read it.

    `series`: metric name → (steps, values), steps ascending (any order is accepted);
    `alerts`: the job's alerts, each {kind, step, evidence, action}; `error`: the job's
    error text when it failed (for the divergence rule), else None.
    """

    job_id: str
    loss: str
    point: dict[str, Any]
    seed: int
    status: str
    step: int
    total_steps: int
    series: Mapping[str, tuple[Sequence[int], Sequence[float]]]
    wall_seconds: float | None
    cpu_seconds: float | None
    gpu_seconds: float | None
    alerts: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    error: str | None = None


def measures(data_kind: str, losses: Sequence[str]) -> list[Measure]:
    """The quality measures compared for `data_kind` ("points" or "images"), primary first.

    points: modes_covered, hq_fraction, reverse_kl; images: fd, plus class_accuracy when
    `losses` has cgan and code_purity when it has infogan. Raises ValueError for another kind.
    """
    _check_kind(data_kind)
    if data_kind == "points":
        return list(POINT_MEASURES)
    found = [FD]
    if "cgan" in losses:
        found.append(CLASS_ACCURACY)
    if "infogan" in losses:
        found.append(CODE_PURITY)
    return found


def series_needed(data_kind: str, losses: Sequence[str]) -> list[str]:
    """Every series name compare reads for these runs: loss_g, grad_norm_g and the quality measures."""
    return ["loss_g", "grad_norm_g"] + [m.name for m in measures(data_kind, losses)]


def compare(
    runs: Sequence[Run],
    *,
    data_kind: str,
    modes: int | None = None,
    vanishing_grad_norm: float = VANISHING_GRAD_NORM,
) -> list[dict[str, Any]]:
    """One row per (loss, grid point), in the order the runs first show them (see the module docstring).

    Row: {"loss", "point", "runs", "finished" (succeeded), "statuses": {status: n},
    "quality": {measure: {"mean","std","n"}}, "steps_to_threshold": {measure: {"mean","std",
    "reached","n","threshold","rule"}}, "wall_seconds"/"cpu_seconds"/"gpu_seconds":
    {"mean","std","n"}, "stability": {"loss_g_spread_last_quarter", "loss_g_std_last_quarter",
    "vanishing_grad_fraction", "mode_oscillation": {"mean","std","n"}, "collapse_events": int,
    "divergence_events": int}}. `modes`: the data's mode count (points), for modes_covered's
    threshold. Raises ValueError for an unknown data_kind.
    """
    losses = list(dict.fromkeys(run.loss for run in runs))
    compared = measures(data_kind, losses)
    levels: dict[str, float | None] = {}
    for measure in compared:
        finals = [v for v in (_last_value(run, measure.name) for run in runs) if v is not None]
        best = (max(finals) if measure.direction == "higher" else min(finals)) if finals else None
        levels[measure.name] = measure.resolve(modes=modes, best_final=best)
    rows = []
    for (loss, point), group in _groups(runs):
        statuses: dict[str, int] = {}
        for run in group:
            statuses[run.status] = statuses.get(run.status, 0) + 1
        succeeded = [run for run in group if run.status == "succeeded"]
        rows.append(
            {
                "loss": loss,
                "point": point,
                "runs": len(group),
                "finished": len(succeeded),
                "statuses": statuses,
                "quality": {m.name: summarise([_last_value(run, m.name) for run in group]) for m in compared},
                "steps_to_threshold": {m.name: _steps_to(group, m, levels[m.name]) for m in compared},
                "wall_seconds": summarise([run.wall_seconds for run in succeeded]),
                "cpu_seconds": summarise([run.cpu_seconds for run in succeeded]),
                "gpu_seconds": summarise([run.gpu_seconds for run in succeeded]),
                "stability": _stability(group, data_kind, vanishing_grad_norm),
            }
        )
    return rows


def curves(runs: Sequence[Run], names: Sequence[str], *, points: int = 200) -> dict[str, Any]:
    """Each series in `names` per (loss, point), over seeds on a common step grid of ≤ `points` steps.

    Returns {"names": [...], "curves": {name: [{"loss", "point", "steps", "mean", "std", "min",
    "max", "count", "runs"}]}}: one entry per (loss, point) of the runs, in their order, even
    when no run has the series (then empty lists and runs 0); `runs` counts the runs with at
    least one value, `count[i]` those with a value at steps[i]; std is None where count < 2.
    Raises ValueError when points < 1.
    """
    if points < 1:
        raise ValueError("points must be at least 1")
    groups = _groups(runs)
    out: dict[str, list[dict[str, Any]]] = {}
    for name in dict.fromkeys(names):
        entries = []
        for (loss, point), group in groups:
            present = [s for s in (_clean(run, name) for run in group) if s[0]]
            entry: dict[str, Any] = {"loss": loss, "point": point, "runs": len(present)}
            entry.update(_band(present, points))
            entries.append(entry)
        out[name] = entries
    return {"names": list(out), "curves": out}


def summarise(values: Sequence[float | None]) -> dict[str, Any]:
    """{"mean", "std" (sample, ddof = 1; None when n < 2), "n"} over the finite values; mean None when n = 0."""
    kept = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not kept:
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": float(np.mean(kept)),
        "std": float(np.std(kept, ddof=1)) if len(kept) > 1 else None,
        "n": len(kept),
    }


# ---------------------------------------------------------------------------- per-run figures


def loss_g_spread(steps: Sequence[int], values: Sequence[float]) -> tuple[float | None, float | None]:
    """(std over the last quarter / whole-run IQR, that std) of one run's loss_g; see the module docstring."""
    if not steps:
        return None, None
    s, v = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    tail = v[s >= LAST_QUARTER * s.max()]
    if len(tail) < 2:
        return None, None
    std = float(np.std(tail))
    q25, q75 = np.percentile(v, [25, 75])
    iqr = float(q75 - q25)
    if iqr > 0:
        return std / iqr, std
    return (0.0 if std == 0 else None), std


def vanishing_fraction(values: Sequence[float], level: float = VANISHING_GRAD_NORM) -> float | None:
    """The share of grad_norm_g readings below `level`; None without readings."""
    if not values:
        return None
    return sum(1 for v in values if v < level) / len(values)


def oscillation(values: Sequence[float], data_kind: str) -> float | None:
    """Mean per-interval worsening of the primary measure (modes lost; fd's relative rise); None below 2 values."""
    if len(values) < 2:
        return None
    pairs = list(zip(values[:-1], values[1:], strict=True))
    if data_kind == "points":
        drops = [max(0.0, before - after) for before, after in pairs]
    else:
        # fd ≥ 0; a rise from exactly 0 has no relative size: count it as a doubling would be arbitrary, skip it.
        drops = [max(0.0, (after - before) / before) for before, after in pairs if before > 0]
        if not drops:
            return None
    return float(np.mean(drops))


def divergence_events(run: Run) -> int:
    """The run's divergence alerts, or 1 for a failed run without one whose error says it diverged."""
    alerts = sum(1 for alert in run.alerts if alert.get("kind") == "divergence")
    if alerts == 0 and run.status == "failed" and run.error and DIVERGED_ERROR.search(run.error):
        return 1
    return alerts


# ---------------------------------------------------------------------------- helpers


def _check_kind(data_kind: str) -> None:
    if data_kind not in DATA_KINDS:
        raise ValueError(f"data_kind must be one of {', '.join(DATA_KINDS)}, not {data_kind!r}")


def _point_key(point: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    # repr keeps 1 and 1.0 apart only if the spec did; grid values come from one list, so they match.
    return tuple(sorted((str(k), repr(v)) for k, v in point.items()))


def _groups(runs: Sequence[Run]) -> list[tuple[tuple[str, dict[str, Any]], list[Run]]]:
    """Runs grouped by (loss, point) in order of first appearance."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[tuple[str, dict[str, Any]], list[Run]]] = {}
    for run in runs:
        key = (run.loss, _point_key(run.point))
        if key not in found:
            found[key] = ((run.loss, dict(run.point)), [])
        found[key][1].append(run)
    return list(found.values())


def _clean(run: Run, name: str) -> tuple[list[int], list[float]]:
    """The run's series `name` sorted by step, non-finite values dropped; a repeated step keeps its last value."""
    pair = run.series.get(name)
    if pair is None:
        return [], []
    steps, values = pair
    by_step: dict[int, float] = {}
    for s, v in zip(steps, values, strict=False):
        if v is not None and math.isfinite(v):
            by_step[int(s)] = float(v)
    ordered = sorted(by_step)
    return ordered, [by_step[s] for s in ordered]


def _last_value(run: Run, name: str) -> float | None:
    _steps, values = _clean(run, name)
    return values[-1] if values else None


def _steps_to(group: Sequence[Run], measure: Measure, level: float | None) -> dict[str, Any]:
    firsts: list[float | None] = []
    n = 0
    for run in group:
        steps, values = _clean(run, measure.name)
        if not steps:
            continue
        n += 1
        if level is not None:
            firsts.append(next((s for s, v in zip(steps, values, strict=True) if measure.reached(v, level)), None))
    summary = summarise(firsts)
    return {
        "mean": summary["mean"],
        "std": summary["std"],
        "reached": summary["n"],
        "n": n,
        "threshold": level,
        "rule": measure.rule(level),
    }


def _stability(group: Sequence[Run], data_kind: str, vanishing_level: float) -> dict[str, Any]:
    primary = measures(data_kind, [])[0].name
    spreads, stds, vanishing, oscillations = [], [], [], []
    for run in group:
        spread, std = loss_g_spread(*_clean(run, "loss_g"))
        spreads.append(spread)
        stds.append(std)
        vanishing.append(vanishing_fraction(_clean(run, "grad_norm_g")[1], vanishing_level))
        oscillations.append(oscillation(_clean(run, primary)[1], data_kind))
    return {
        "loss_g_spread_last_quarter": summarise(spreads),
        "loss_g_std_last_quarter": summarise(stds),
        "vanishing_grad_fraction": summarise(vanishing),
        "mode_oscillation": summarise(oscillations),
        "collapse_events": sum(1 for run in group for a in run.alerts if a.get("kind") == "collapse"),
        "divergence_events": sum(divergence_events(run) for run in group),
    }


def _band(series: Sequence[tuple[list[int], list[float]]], points: int) -> dict[str, list[Any]]:
    """steps/mean/std/min/max/count over `series` on their union grid, chunked to ≤ points steps."""
    union = sorted({s for steps, _values in series for s in steps})
    k = max(1, -(-len(union) // points))
    chunks = [union[i : i + k] for i in range(0, len(union), k)]
    # Each step of the union falls in one chunk; a run's value for a chunk is its last one there.
    chunk_of = {s: c for c, chunk in enumerate(chunks) for s in chunk}
    table: list[dict[int, float]] = []
    for steps, values in series:
        at: dict[int, float] = {}
        for s, v in zip(steps, values, strict=True):
            at[chunk_of[s]] = v  # steps ascend: the last value in the chunk wins
        table.append(at)
    out: dict[str, list[Any]] = {"steps": [], "mean": [], "std": [], "min": [], "max": [], "count": []}
    for c, chunk in enumerate(chunks):
        here = [at[c] for at in table if c in at]
        out["steps"].append(chunk[-1])
        out["mean"].append(float(np.mean(here)))
        out["std"].append(float(np.std(here, ddof=1)) if len(here) > 1 else None)
        out["min"].append(min(here))
        out["max"].append(max(here))
        out["count"].append(len(here))
    return out
