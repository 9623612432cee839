"""A study's comparison table and overlaid curves, computed from its jobs' series (pure: no torch, no SQL).

    rows = compare(runs, data_kind="points", modes=25)     # one row per (loss, grid point)
    body = curves(runs, ["loss_g", "modes_covered"], points=200)

The store reads each job of a study into a `Run` (status, step, times, alerts and the
series of `series_needed(...)`); the studies routes and the bench runner hand them here.
Every figure below can be recomputed by hand from the job's metrics (`GET
/v1/jobs/{id}/metrics`) and its `alerts`. A series is read in step order (any input order;
a repeated step keeps its last value); non-finite values (NaN, ±inf) and nulls are left out
of every figure, so no output holds one.

Aggregation over seeds. A row groups the runs of one loss at one grid point. Each figure
is first computed per run, then summarised as {"mean", "std", "n"}: the mean, the
*sample* standard deviation (ddof = 1) over the n runs that have the figure (None when
n < 2), and n; mean is None when no run has it.

Failed runs. One rule for every figure: a run that failed or was cancelled (or is being
cancelled) is left out of every mean ± std (quality, steps to a threshold, stability; time
counts succeeded runs only) and counted in its row's `failed`; `runs` counts every run,
`finished` the succeeded ones, so runs − finished − failed are still queued or running (their
figures so far are in). Only the event counts (collapse_events, divergence_events) count every
run: a run that diverged is what they report.

Quality (`measures`). PacGAN's 2-D protocol (Lin et al. 2018) for points: modes covered,
high-quality fraction, reverse KL of the HQ samples to uniform (worker/gan/evaluation.py);
for images the Fréchet distance (Heusel et al. 2017's formula) in a classifier's features
(`fd`), plus class accuracy for `cgan` and code purity for `infogan`
(worker/gan/classifier.py); only the measures the data set reports are compared (`reported`:
no point measure on other data than ring8/grid25, no fd on unlabelled images). A run's quality
is its series' value at its last logged step (its last snapshot: for a still-running run, the
last one it wrote).

Steps to a threshold. The first logged step at which the series reaches the measure's
threshold (≥ for higher-is-better, ≤ for lower-is-better). `reached` counts the runs that
got there; mean/std are over those runs only (an unreached run is not averaged in);
`n` counts the runs with the series. Thresholds (module constants, set between what
healthy and failing runs reach in bench/ZOO_RESULTS.md's 5,000-step rows: the healthy ones
(minimax, nsgan, lsgan on ring8; minimax on grid25) end at 87–96 % HQ and a reverse KL of
0.001–0.01; imprecise or collapsed ones at 7–36 % HQ or a reverse KL of 0.27–3.2):
  modes_covered  ≥ every mode (`modes`; no threshold when `modes` is not given)
  hq_fraction    ≥ 0.5    most samples within 3σ of a mode
  reverse_kl     ≤ 0.1    nats: HQ samples spread within 0.1 nats of uniform (log 8 = 2.08 is total collapse on ring8)
  fd             ≤ 1.5 × the lowest final fd over the runs compared (the whole study, failed runs left out): the
                 Fréchet distance's scale depends on the feature network, so no absolute level means
                 anything across data sets; and the first snapshot comes after `every.samples` steps of
                 training, so a level relative to a run's own start would favour slow starters.
  class_accuracy ≥ 0.8    of cgan samples classed as the class asked (the classifier itself scores 0.975 on
                          held-out digits; cgan reached 0.836 in 3,000 steps in the zoo)
  code_purity    ≥ 0.8    (infogan reached 0.978 in 3,000 steps in the zoo)
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
      G's whole parameter gradient) below VANISHING_GRAD_NORM = 1e-4 (pass `vanishing_grad_norm` for another);
      `training.watch` alerts on a relative fall instead (worker/watch.py), as the relative figure below does.
      Arjovsky & Bottou 2017 ("Towards principled methods for training GANs", Thm 2.4 and
      Fig. 2) show the gradient to G vanishes as D approaches a perfect discriminator, their
      measured norms falling by orders of magnitude; healthy runs here stay far above the level
      (ring8, MLP 3×128, 1,500 steps: minimax, nsgan and lsgan never went below 0.04). The level
      is absolute, like theirs, so a loss whose scale is small reads as vanishing sooner: wgan's
      clipped critic (outputs ~0.01) gave G norms of median 5.2e-4, 10 % below 1.9e-4 and 1 %
      below 2e-5 in that run, though its optimiser's step does not shrink with the gradient's
      scale. Hence also:
  vanishing_grad_fraction_relative (scale-free): the fraction of grad_norm_g readings below
      RELATIVE_VANISHING = 1 % of the run's own median grad_norm_g (a fall by two orders of
      magnitude from its typical level); None when the median is 0.
  mode_oscillation: the mean worsening of the primary quality between consecutive snapshots,
      improvements counted as 0 (so a run that only climbs scores 0): points, the mean over
      consecutive snapshot pairs of max(0, m[i-1] − m[i]) in modes covered (modes lost per
      snapshot interval); images, the mean of max(0, (fd[i] − fd[i-1]) / fd[i-1]) (relative
      rise of the Fréchet distance per interval). None with fewer than 2 snapshots.
  collapse_events: the number of the group's alerts (jobs.alerts) of kind "collapse".
  divergence_events: the number of alerts of kind "divergence", plus each failed run that has
      no divergence alert but whose error says it diverged (the worker's Diverged: "<name>
      became nan at step N", or a reason naming "diverged"). The worker now records a
      divergence alert for a non-finite value too; the error rule covers jobs from before.

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
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

DATA_KINDS = ("points", "images")
# A run in one of these will not finish: it is counted in its row's `failed`, and left out of every mean ± std.
FAILED_STATUSES = frozenset({"failed", "cancelled", "cancelling"})
# grad_norm_g below this counts as vanished (Arjovsky & Bottou 2017; see the module docstring).
VANISHING_GRAD_NORM = 1e-4
# ...and, scale-free, below this fraction of the run's own median grad_norm_g.
RELATIVE_VANISHING = 0.01
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


def measures(data_kind: str, losses: Sequence[str], *, reported: Collection[str] | None = None) -> list[Measure]:
    """The quality measures compared for `data_kind` ("points" or "images"), primary first.

    points: modes_covered, hq_fraction, reverse_kl; images: fd, plus class_accuracy when
    `losses` has cgan and code_purity when it has infogan. `reported`: the figures the data set's
    snapshots actually carry (models.catalog.quality_measures: points only on ring8/grid25, fd and
    the rest only on labelled images); only those are kept (None: every one above). Raises
    ValueError for another kind.
    """
    _check_kind(data_kind)
    if data_kind == "points":
        found = list(POINT_MEASURES)
    else:
        found = [FD]
        if "cgan" in losses:
            found.append(CLASS_ACCURACY)
        if "infogan" in losses:
            found.append(CODE_PURITY)
    return found if reported is None else [m for m in found if m.name in reported]


def series_needed(data_kind: str, losses: Sequence[str], *, reported: Collection[str] | None = None) -> list[str]:
    """Every series name compare reads for these runs: loss_g, grad_norm_g and the quality measures."""
    return ["loss_g", "grad_norm_g"] + [m.name for m in measures(data_kind, losses, reported=reported)]


def compare(
    runs: Sequence[Run],
    *,
    data_kind: str,
    modes: int | None = None,
    vanishing_grad_norm: float = VANISHING_GRAD_NORM,
    reported: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per (loss, grid point), in the order the runs first show them (see the module docstring).

    Row: {"loss", "point", "runs", "finished" (succeeded), "failed" (failed or cancelled: left out of every
    mean ± std), "statuses": {status: n},
    "quality": {measure: {"mean","std","n"}}, "steps_to_threshold": {measure: {"mean","std",
    "reached","n","threshold","rule"}}, "wall_seconds"/"cpu_seconds"/"gpu_seconds":
    {"mean","std","n"}, "stability": {"loss_g_spread_last_quarter", "loss_g_std_last_quarter",
    "vanishing_grad_fraction", "vanishing_grad_fraction_relative", "mode_oscillation":
    {"mean","std","n"}, "collapse_events": int,
    "divergence_events": int}}. `modes`: the data's mode count (points), for modes_covered's
    threshold. `reported`: the measures the data set reports (see `measures`). Raises ValueError
    for an unknown data_kind.
    """
    losses = list(dict.fromkeys(run.loss for run in runs))
    compared = measures(data_kind, losses, reported=reported)
    # Each series is cleaned once (a 200-run study reads ~10^6 values).
    table = _Table(runs, series_needed(data_kind, losses, reported=reported))
    counted = [run for run in runs if not _failed(run)]
    levels: dict[str, float | None] = {}
    for measure in compared:
        finals = [v for v in (table.last(run, measure.name) for run in counted) if v is not None]
        best = (max(finals) if measure.direction == "higher" else min(finals)) if finals else None
        levels[measure.name] = measure.resolve(modes=modes, best_final=best)
    rows = []
    for (loss, point), group in _groups(runs):
        statuses: dict[str, int] = {}
        for run in group:
            statuses[run.status] = statuses.get(run.status, 0) + 1
        succeeded = [run for run in group if run.status == "succeeded"]
        kept = [run for run in group if not _failed(run)]
        rows.append(
            {
                "loss": loss,
                "point": point,
                "runs": len(group),
                "finished": len(succeeded),
                "failed": len(group) - len(kept),
                "statuses": statuses,
                "quality": {m.name: summarise([table.last(run, m.name) for run in kept]) for m in compared},
                "steps_to_threshold": {m.name: _steps_to(table, kept, m, levels[m.name]) for m in compared},
                "wall_seconds": summarise([run.wall_seconds for run in succeeded]),
                "cpu_seconds": summarise([run.cpu_seconds for run in succeeded]),
                "gpu_seconds": summarise([run.gpu_seconds for run in succeeded]),
                "stability": _stability(table, group, kept, compared, data_kind, vanishing_grad_norm),
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
            present = [s for s in (_clean(run, name) for run in group) if len(s[0])]
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


def loss_g_spread(
    steps: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray
) -> tuple[float | None, float | None]:
    """(std over the last quarter / whole-run IQR, that std) of one run's loss_g; see the module docstring."""
    s, v = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if len(s) == 0:
        return None, None
    tail = v[s >= LAST_QUARTER * s.max()]
    if len(tail) < 2:
        return None, None
    std = float(np.std(tail))
    q25, q75 = np.percentile(v, [25, 75])
    iqr = float(q75 - q25)
    if iqr > 0:
        return std / iqr, std
    return (0.0 if std == 0 else None), std


def vanishing_fraction(values: Sequence[float] | np.ndarray, level: float = VANISHING_GRAD_NORM) -> float | None:
    """The share of grad_norm_g readings below `level`; None without readings."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.mean(v < level)) if len(v) else None


def relative_vanishing_fraction(values: Sequence[float] | np.ndarray) -> float | None:
    """The share of grad_norm_g readings below RELATIVE_VANISHING × their median; None without readings or at median 0."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return None
    median = float(np.median(v))
    return float(np.mean(v < RELATIVE_VANISHING * median)) if median > 0 else None


def oscillation(values: Sequence[float] | np.ndarray, data_kind: str) -> float | None:
    """Mean per-interval worsening of the primary measure (modes lost; fd's relative rise); None below 2 values."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return None
    before, after = v[:-1], v[1:]
    if data_kind == "points":
        return float(np.mean(np.maximum(0.0, before - after)))
    # fd ≥ 0; a rise from exactly 0 has no relative size: such an interval is left out.
    kept = before > 0
    if not kept.any():
        return None
    return float(np.mean(np.maximum(0.0, (after[kept] - before[kept]) / before[kept])))


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


Series = tuple[np.ndarray, np.ndarray]  # steps (int64, strictly ascending), values (float64, finite)


def _clean(run: Run, name: str) -> Series:
    """The run's series `name` sorted by step, non-finite values dropped; a repeated step keeps its last value."""
    pair = run.series.get(name)
    if pair is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    raw_steps, raw_values = pair
    n = min(len(raw_steps), len(raw_values))
    steps = np.asarray(raw_steps[:n], dtype=np.int64)
    try:
        values = np.asarray(raw_values[:n], dtype=np.float64)
    except TypeError:  # a None among the values (a JSON null): treat it as missing
        values = np.array([np.nan if v is None else v for v in raw_values[:n]], dtype=np.float64)
    keep = np.isfinite(values)
    steps, values = steps[keep], values[keep]
    if len(steps) > 1 and not (np.diff(steps) > 0).all():
        # Stable sort by step; then of each run of equal steps keep the last.
        order = np.argsort(steps, kind="stable")
        steps, values = steps[order], values[order]
        last = np.append(steps[1:] != steps[:-1], True)
        steps, values = steps[last], values[last]
    return steps, values


class _Table:
    """The cleaned series of `names` for each run, computed once per compare call."""

    def __init__(self, runs: Sequence[Run], names: Sequence[str]) -> None:
        self._series = {(id(run), name): _clean(run, name) for run in runs for name in names}

    def get(self, run: Run, name: str) -> Series:
        found = self._series.get((id(run), name))
        return found if found is not None else _clean(run, name)

    def last(self, run: Run, name: str) -> float | None:
        values = self.get(run, name)[1]
        return float(values[-1]) if len(values) else None


def _steps_to(table: _Table, group: Sequence[Run], measure: Measure, level: float | None) -> dict[str, Any]:
    firsts: list[float | None] = []
    n = 0
    for run in group:
        steps, values = table.get(run, measure.name)
        if not len(steps):
            continue
        n += 1
        if level is not None:
            hit = values >= level if measure.direction == "higher" else values <= level
            firsts.append(int(steps[np.argmax(hit)]) if hit.any() else None)
    summary = summarise(firsts)
    return {
        "mean": summary["mean"],
        "std": summary["std"],
        "reached": summary["n"],
        "n": n,
        "threshold": level,
        "rule": measure.rule(level),
    }


def _failed(run: Run) -> bool:
    """A run that failed or was cancelled (or is being cancelled): it will not finish, so no mean ± std has it."""
    return run.status in FAILED_STATUSES


def _stability(
    table: _Table,
    group: Sequence[Run],
    kept: Sequence[Run],
    compared: Sequence[Measure],
    data_kind: str,
    vanishing_level: float,
) -> dict[str, Any]:
    """The stability figures: mean ± std over the `kept` runs; the event counts over every run of the `group`."""
    # The data kind's primary measure, when the data set reports it.
    primary = compared[0].name if compared and compared[0] == measures(data_kind, [])[0] else None
    spreads, stds, vanishing, relative, oscillations = [], [], [], [], []
    for run in kept:
        spread, std = loss_g_spread(*table.get(run, "loss_g"))
        spreads.append(spread)
        stds.append(std)
        grad_norms = table.get(run, "grad_norm_g")[1]
        vanishing.append(vanishing_fraction(grad_norms, vanishing_level))
        relative.append(relative_vanishing_fraction(grad_norms))
        oscillations.append(oscillation(table.get(run, primary)[1], data_kind) if primary else None)
    return {
        "loss_g_spread_last_quarter": summarise(spreads),
        "loss_g_std_last_quarter": summarise(stds),
        "vanishing_grad_fraction": summarise(vanishing),
        "vanishing_grad_fraction_relative": summarise(relative),
        "mode_oscillation": summarise(oscillations),
        "collapse_events": sum(1 for run in group for a in run.alerts if a.get("kind") == "collapse"),
        "divergence_events": sum(divergence_events(run) for run in group),
    }


def _band(series: Sequence[Series], points: int) -> dict[str, list[Any]]:
    """steps/mean/std/min/max/count over `series` on their union grid, chunked to ≤ points steps."""
    if not series:
        return {"steps": [], "mean": [], "std": [], "min": [], "max": [], "count": []}
    union = np.unique(np.concatenate([steps for steps, _values in series]))
    k = max(1, -(-len(union) // points))
    ends = union[k - 1 :: k]
    if ends[-1] != union[-1]:
        ends = np.append(ends, union[-1])  # the last, shorter chunk
    # grid[r, c]: run r's last value in chunk c (NaN: none there). Chunk c holds the union steps in (ends[c-1], ends[c]].
    grid = np.full((len(series), len(ends)), np.nan)
    for r, (steps, values) in enumerate(series):
        chunk = np.searchsorted(ends, steps)  # steps ascend, so chunk does too
        last = np.append(chunk[1:] != chunk[:-1], True)
        grid[r, chunk[last]] = values[last]
    present = ~np.isnan(grid)
    count = present.sum(axis=0)  # ≥ 1: every union step is some run's
    mean = np.nansum(grid, axis=0) / count
    squares = np.nansum((grid - mean) ** 2, axis=0)
    std = [float(np.sqrt(q / (c - 1))) if c > 1 else None for q, c in zip(squares, count, strict=True)]
    return {
        "steps": [int(s) for s in ends],
        "mean": [float(m) for m in mean],
        "std": std,
        "min": [float(m) for m in np.nanmin(grid, axis=0)],
        "max": [float(m) for m in np.nanmax(grid, axis=0)],
        "count": [int(c) for c in count],
    }
