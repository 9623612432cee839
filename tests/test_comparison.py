"""models/comparison.py on hand-computed runs: every figure of the table, the curves' alignment, edge cases.

Pure functions on tiny in-memory runs: no service, no torch (well under a second).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from models.comparison import (
    VANISHING_GRAD_NORM,
    Run,
    compare,
    curves,
    loss_g_spread,
    measures,
    relative_vanishing_fraction,
    series_needed,
    summarise,
)

STEPS = [100, 200, 300, 400]


def run(
    loss: str,
    seed: int,
    series: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    *,
    status: str = "succeeded",
    point: dict[str, Any] | None = None,
    wall: float | None = None,
    cpu: float | None = None,
    gpu: float | None = None,
    alerts: Sequence[Mapping[str, Any]] = (),
    error: str | None = None,
) -> Run:
    steps = [s for pair in series.values() for s in pair[0]]
    return Run(
        job_id=f"job-{loss}-{seed}-{point}",
        loss=loss,
        point=point or {},
        seed=seed,
        status=status,
        step=max(steps, default=0),
        total_steps=400,
        series=series,
        wall_seconds=wall,
        cpu_seconds=cpu,
        gpu_seconds=gpu,
        alerts=alerts,
        error=error,
    )


def points_runs() -> list[Run]:
    """Two nsgan seeds that finished, one wgan run that diverged (error only), one still running with an alert."""
    a = run(
        "nsgan",
        0,
        {
            "modes_covered": (STEPS, [4, 8, 6, 8]),
            "hq_fraction": (STEPS, [0.2, 0.6, 0.4, 0.7]),
            "reverse_kl": (STEPS, [1.0, 0.05, 0.3, 0.08]),
            "loss_g": (STEPS, [1, 3, 2, 4]),
            "grad_norm_g": (STEPS, [5e-5, 0.5, 2e-5, 1.0]),
        },
        wall=10,
        cpu=20,
    )
    b = run(
        "nsgan",
        1,
        {
            "modes_covered": (STEPS, [2, 5, 7, 7]),
            "hq_fraction": (STEPS, [0.1, 0.3, 0.5, 0.9]),
            "reverse_kl": (STEPS, [2.0, 1.0, 0.1, 0.2]),
            "loss_g": (STEPS, [0, 0, 0, 0]),
            "grad_norm_g": (STEPS, [1e-4, 1, 1, 1]),  # exactly at the level: not below it
        },
        wall=14,
        cpu=30,
        alerts=[{"kind": "collapse", "step": 300, "evidence": {"modes": 1}, "action": "reported"}],
    )
    c = run(
        "wgan",
        0,
        {"modes_covered": ([100, 200], [3, 1]), "loss_g": ([100, 200], [5.0, 7.0])},
        status="failed",
        wall=5,
        cpu=5,
        error="loss_d became nan at step 250",
    )
    d = run(
        "wgan",
        1,
        {"modes_covered": ([100], [5]), "loss_g": ([100], [2.0])},
        status="running",
        alerts=[{"kind": "divergence", "step": 90, "evidence": {}, "action": "reported"}],
    )
    return [a, b, c, d]


def test_every_figure_of_a_points_row_matches_the_hand_computation() -> None:
    rows = compare(points_runs(), data_kind="points", modes=8)
    assert [(r["loss"], r["point"], r["runs"], r["finished"], r["failed"]) for r in rows] == [
        ("nsgan", {}, 2, 2, 0),
        ("wgan", {}, 2, 0, 1),
    ]
    nsgan, wgan = rows
    q = nsgan["quality"]
    assert q["modes_covered"] == pytest.approx({"mean": 7.5, "std": math.sqrt(0.5), "n": 2})
    assert q["hq_fraction"] == pytest.approx({"mean": 0.8, "std": math.sqrt(0.02), "n": 2})
    assert q["reverse_kl"] == pytest.approx({"mean": 0.14, "std": math.sqrt(0.0072), "n": 2})
    reach = nsgan["steps_to_threshold"]
    # seed 0 covers all 8 modes first at step 200; seed 1 never does (7 at most): not averaged in.
    assert reach["modes_covered"] == {
        "mean": 200.0, "std": None, "reached": 1, "n": 2, "threshold": 8.0, "rule": "modes_covered ≥ 8 (every mode)"
    }  # fmt: skip
    assert reach["hq_fraction"] | {"std": pytest.approx(math.sqrt(5000))} == {
        "mean": 250.0, "std": math.sqrt(5000), "reached": 2, "n": 2, "threshold": 0.5, "rule": "hq_fraction ≥ 0.5"
    }  # fmt: skip
    assert (reach["reverse_kl"]["mean"], reach["reverse_kl"]["reached"]) == (250.0, 2)
    assert nsgan["wall_seconds"] == pytest.approx({"mean": 12.0, "std": math.sqrt(8), "n": 2})
    assert nsgan["cpu_seconds"] == pytest.approx({"mean": 25.0, "std": math.sqrt(50), "n": 2})
    assert nsgan["gpu_seconds"] == {"mean": None, "std": None, "n": 0}
    st = nsgan["stability"]
    # seed 0: loss_g at steps ≥ 300 is [2, 4] (std 1); IQR of [1, 3, 2, 4] is 3.25 - 1.75 = 1.5 → 2/3.
    # seed 1: constant loss_g → std 0 and IQR 0 → 0.
    assert st["loss_g_spread_last_quarter"] == pytest.approx({"mean": 1 / 3, "std": (2 / 3) / math.sqrt(2), "n": 2})
    assert st["loss_g_std_last_quarter"] == pytest.approx({"mean": 0.5, "std": math.sqrt(0.5), "n": 2})
    assert st["vanishing_grad_fraction"] == pytest.approx({"mean": 0.25, "std": math.sqrt(0.125), "n": 2})
    # below 1 % of the run's median: seed 0's median 0.250025 → 5e-5 and 2e-5 (1/2); seed 1's median 1 → 1e-4 (1/4)
    assert st["vanishing_grad_fraction_relative"] == pytest.approx({"mean": 0.375, "std": math.sqrt(0.125) / 2, "n": 2})
    # seed 0's coverage 4 → 8 → 6 → 8 lost 2 modes over 3 intervals; seed 1 only climbed.
    assert st["mode_oscillation"] == pytest.approx({"mean": 1 / 3, "std": (2 / 3) / math.sqrt(2), "n": 2})
    assert (st["collapse_events"], st["divergence_events"]) == (1, 0)

    assert wgan["statuses"] == {"failed": 1, "running": 1}
    # One rule for a failed run: counted in `failed`, left out of every mean ± std (its last 1 mode is not averaged
    # in with the running run's 5); the running run's figures so far are in.
    assert wgan["quality"]["modes_covered"] == {"mean": 5.0, "std": None, "n": 1}
    assert wgan["steps_to_threshold"]["modes_covered"]["reached"] == 0
    assert wgan["steps_to_threshold"]["modes_covered"]["n"] == 1
    assert wgan["steps_to_threshold"]["modes_covered"]["mean"] is None
    assert wgan["quality"]["hq_fraction"] == {"mean": None, "std": None, "n": 0}
    # neither run succeeded: no time figure, though the failed one has a wall time
    assert wgan["wall_seconds"] == {"mean": None, "std": None, "n": 0}
    st = wgan["stability"]
    assert st["loss_g_spread_last_quarter"]["n"] == 0  # one value in each run's last quarter: no spread
    assert st["vanishing_grad_fraction"]["mean"] is None
    # the failed run's 3 → 1 is left out; the running run has one snapshot
    assert st["mode_oscillation"] == {"mean": None, "std": None, "n": 0}
    # events count every run: the failed run's error says it diverged; the running one carries a divergence alert
    assert (st["collapse_events"], st["divergence_events"]) == (0, 2)


def test_a_divergence_with_both_an_alert_and_an_error_counts_once_and_other_failures_not_at_all() -> None:
    alert = {"kind": "divergence", "step": 5, "evidence": {}, "action": "stopped"}
    runs = [
        run("lsgan", 0, {}, status="failed", alerts=[alert], error="loss_g became inf at step 5"),
        run("lsgan", 1, {}, status="failed", error="worker error: out of memory"),
        run("lsgan", 2, {}, status="succeeded", error="training diverged: grad_norm_g became nan at step 9"),
        run("lsgan", 3, {}, status="failed", error="training diverged: grad_norm_g became nan at step 9"),
    ]
    assert compare(runs, data_kind="points")[0]["stability"]["divergence_events"] == 2


def test_one_seed_has_no_std_and_no_modes_means_no_coverage_threshold() -> None:
    [row] = compare(points_runs()[:1], data_kind="points")
    assert row["quality"]["modes_covered"] == {"mean": 8.0, "std": None, "n": 1}
    assert row["steps_to_threshold"]["modes_covered"] == {
        "mean": None, "std": None, "reached": 0, "n": 1, "threshold": None, "rule": "modes_covered ≥ unknown (every mode)"
    }  # fmt: skip


def test_images_fd_threshold_is_relative_to_the_best_final_fd_and_oscillation_is_relative() -> None:
    runs = [
        run("nsgan", 0, {"fd": (STEPS, [10, 8, 12, 6])}),
        run("wgan", 0, {"fd": ([100, 200, 300], [20, 9, 9])}),
        run("cgan", 0, {"fd": ([100], [30]), "class_accuracy": ([100, 200], [0.5, 0.85])}),
    ]
    rows = {r["loss"]: r for r in compare(runs, data_kind="images")}
    assert set(rows["cgan"]["quality"]) == {"fd", "class_accuracy"}
    # best final fd 6 → threshold 9: nsgan reaches it at 200 (8), wgan at 200 (9), cgan never.
    for loss, first in [("nsgan", 200.0), ("wgan", 200.0), ("cgan", None)]:
        fd = rows[loss]["steps_to_threshold"]["fd"]
        assert (fd["threshold"], fd["mean"], fd["reached"]) == (9.0, first, 0 if first is None else 1)
    assert rows["cgan"]["steps_to_threshold"]["class_accuracy"]["mean"] == 200.0
    # nsgan's fd 10 → 8 → 12 → 6: one rise of 50 % over 3 intervals
    assert rows["nsgan"]["stability"]["mode_oscillation"]["mean"] == pytest.approx(0.5 / 3)
    assert rows["wgan"]["stability"]["mode_oscillation"]["mean"] == 0.0


def test_measures_and_series_needed_follow_the_data_kind_and_losses() -> None:
    assert [m.name for m in measures("points", ["nsgan"])] == ["modes_covered", "hq_fraction", "reverse_kl"]
    assert [m.name for m in measures("images", ["nsgan"])] == ["fd"]
    assert [m.name for m in measures("images", ["infogan", "cgan"])] == ["fd", "class_accuracy", "code_purity"]
    assert [m.direction for m in measures("points", [])] == ["higher", "higher", "lower"]
    assert series_needed("images", ["cgan"]) == ["loss_g", "grad_norm_g", "fd", "class_accuracy"]
    with pytest.raises(ValueError, match="data_kind"):
        measures("text", [])
    with pytest.raises(ValueError, match="data_kind"):
        compare([], data_kind="audio")


def test_empty_missing_and_non_finite_series() -> None:
    assert compare([], data_kind="points") == []
    assert curves([], ["loss_g"]) == {"names": ["loss_g"], "curves": {"loss_g": []}}
    bare = run("hinge", 0, {}, status="queued")
    nan = float("nan")
    noisy = run("hinge", 1, {"modes_covered": (STEPS, [3, 4, nan, float("inf")]), "loss_g": ([], [])})
    [row] = compare([bare, noisy], data_kind="points", modes=8)
    assert (row["runs"], row["finished"], row["statuses"]) == (2, 1, {"queued": 1, "succeeded": 1})
    # non-finite values are dropped: the last finite snapshot (4) is the run's quality
    assert row["quality"]["modes_covered"] == {"mean": 4.0, "std": None, "n": 1}
    assert row["stability"]["loss_g_spread_last_quarter"] == {"mean": None, "std": None, "n": 0}
    body = curves([bare, noisy], ["modes_covered", "loss_g"])
    json.dumps(body, allow_nan=False)
    json.dumps(row, allow_nan=False)
    [coverage] = body["curves"]["modes_covered"]
    assert (coverage["runs"], coverage["steps"], coverage["mean"]) == (1, [100, 200], [3.0, 4.0])
    assert body["curves"]["loss_g"][0] | {} == {
        "loss": "hinge", "point": {}, "runs": 0, "steps": [], "mean": [], "std": [], "min": [], "max": [], "count": []
    }  # fmt: skip


def test_grid_points_make_their_own_rows_in_order_of_appearance() -> None:
    runs = [
        run("nsgan", s, {"modes_covered": (STEPS, [8, 8, 8, 8 - s])}, point={"lr_multiplier": m})
        for m in (0.5, 1.0)
        for s in (0, 1)
    ] + [run("wgan", 0, {"modes_covered": (STEPS, [1, 2, 3, 4])}, point={"lr_multiplier": 0.5})]
    rows = compare(runs, data_kind="points", modes=8)
    assert [(r["loss"], r["point"], r["runs"]) for r in rows] == [
        ("nsgan", {"lr_multiplier": 0.5}, 2),
        ("nsgan", {"lr_multiplier": 1.0}, 2),
        ("wgan", {"lr_multiplier": 0.5}, 1),
    ]
    body = curves(runs, ["modes_covered"])
    assert [(c["loss"], c["point"], c["runs"]) for c in body["curves"]["modes_covered"]] == [
        (r["loss"], r["point"], r["runs"]) for r in rows
    ]


def test_curves_align_unequal_step_sets_and_leave_out_missing_runs() -> None:
    runs = [
        run("nsgan", 0, {"loss_g": ([10, 20, 30], [1, 2, 3])}),
        run("nsgan", 1, {"loss_g": ([20, 30, 40], [5, 6, 7])}),
    ]
    [entry] = curves(runs, ["loss_g"])["curves"]["loss_g"]
    assert entry["steps"] == [10, 20, 30, 40]
    assert entry["count"] == [1, 2, 2, 1]
    assert entry["mean"] == [1.0, 3.5, 4.5, 7.0]
    assert entry["std"] == [None, pytest.approx(math.sqrt(4.5)), pytest.approx(math.sqrt(4.5)), None]
    assert (entry["min"], entry["max"], entry["runs"]) == ([1, 2, 3, 7], [1, 5, 6, 7], 2)
    # two points: chunks {10, 20} and {30, 40}, each run's last value in the chunk
    [entry] = curves(runs, ["loss_g"], points=2)["curves"]["loss_g"]
    assert (entry["steps"], entry["mean"], entry["count"]) == ([20, 40], [3.5, 5.0], [2, 2])
    with pytest.raises(ValueError, match="points"):
        curves(runs, ["loss_g"], points=0)


@pytest.mark.parametrize("points", [1, 7, 200, 999, 1000, 5000])
def test_curves_downsample_to_at_most_points_steps_and_keep_the_last_step(points: int) -> None:
    steps = list(range(10, 10_010, 10))
    runs = [run("lsgan", s, {"loss_g": (steps, [i * (s + 1.0) for i in range(1000)])}) for s in range(2)]
    [entry] = curves(runs, ["loss_g"], points=points)["curves"]["loss_g"]
    assert 1 <= len(entry["steps"]) <= min(points, 1000)
    assert entry["steps"][-1] == 10_000 and entry["steps"] == sorted(entry["steps"])
    assert set(entry["steps"]) <= set(steps)
    # the runs share their steps: each grid value is exactly both runs' values there
    index = [s // 10 - 1 for s in entry["steps"]]
    assert entry["mean"] == pytest.approx([1.5 * i for i in index])
    assert entry["count"] == [2] * len(index)


def test_compare_and_curves_equal_numpys_mean_and_std_over_known_arrays() -> None:
    rng = np.random.default_rng(0)
    steps = np.arange(10, 1010, 10)
    for trial in range(20):
        seeds = int(rng.integers(2, 6))
        arrays = {
            name: rng.normal(size=(seeds, len(steps))) * scale + shift
            for name, scale, shift in [("loss_g", 3.0, 1.0), ("grad_norm_g", 1e-4, 1.2e-4), ("hq_fraction", 0.2, 0.5)]
        }
        arrays["modes_covered"] = rng.integers(0, 9, size=(seeds, len(steps))).astype(float)
        runs = [
            run("nsgan", i, {name: (list(steps), list(a[i])) for name, a in arrays.items()}, wall=float(trial + i))
            for i in range(seeds)
        ]
        [row] = compare(runs, data_kind="points", modes=8)
        for name in ("modes_covered", "hq_fraction"):
            last = arrays[name][:, -1]
            assert row["quality"][name] == pytest.approx({"mean": last.mean(), "std": last.std(ddof=1), "n": seeds})
        assert row["wall_seconds"]["mean"] == pytest.approx(np.mean([trial + i for i in range(seeds)]))
        vanished = (arrays["grad_norm_g"] < VANISHING_GRAD_NORM).mean(axis=1)
        assert row["stability"]["vanishing_grad_fraction"]["mean"] == pytest.approx(vanished.mean())
        grads = arrays["grad_norm_g"]
        relative = (grads < 0.01 * np.median(grads, axis=1, keepdims=True)).mean(axis=1)
        assert row["stability"]["vanishing_grad_fraction_relative"]["mean"] == pytest.approx(relative.mean())
        loss_g = arrays["loss_g"]
        tail = loss_g[:, steps >= 0.75 * steps[-1]]
        iqr = np.subtract(*np.percentile(loss_g, [75, 25], axis=1))
        spread = tail.std(axis=1) / iqr
        assert row["stability"]["loss_g_spread_last_quarter"]["mean"] == pytest.approx(spread.mean())
        assert row["stability"]["loss_g_spread_last_quarter"]["std"] == pytest.approx(spread.std(ddof=1))
        drops = np.clip(-np.diff(arrays["modes_covered"], axis=1), 0, None).mean(axis=1)
        assert row["stability"]["mode_oscillation"]["mean"] == pytest.approx(drops.mean())
        first = [int(steps[np.argmax(a >= 0.5)]) for a in arrays["hq_fraction"] if (a >= 0.5).any()]
        assert row["steps_to_threshold"]["hq_fraction"]["reached"] == len(first)
        assert row["steps_to_threshold"]["hq_fraction"]["mean"] == pytest.approx(np.mean(first))
        [entry] = curves(runs, ["loss_g"], points=len(steps))["curves"]["loss_g"]
        assert entry["mean"] == pytest.approx(list(loss_g.mean(axis=0)))
        assert entry["std"] == pytest.approx(list(loss_g.std(axis=0, ddof=1)))
        assert entry["min"] == pytest.approx(list(loss_g.min(axis=0)))


def test_summarise_and_spread_edge_cases() -> None:
    assert summarise([]) == {"mean": None, "std": None, "n": 0}
    assert summarise([None, float("nan"), 2.0]) == {"mean": 2.0, "std": None, "n": 1}
    assert loss_g_spread([], []) == (None, None)
    assert relative_vanishing_fraction([0.0, 0.0, 1.0]) is None  # median 0: no level to fall from
    assert relative_vanishing_fraction([]) is None
    # the whole run's IQR is 0 but its last quarter (steps ≥ 6: 0, 0, 1) moves: no ratio, the raw std stays
    ratio, std = loss_g_spread([1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 0, 1])
    assert ratio is None and std == pytest.approx(math.sqrt(2) / 3)


def test_unsorted_steps_repeated_steps_and_nulls_are_read_as_one_series_in_step_order() -> None:
    # step 200 appears twice (the later reading wins), a null is missing, the steps come out of order
    messy = run("dragan", 0, {"modes_covered": ([300, 100, 200, 200, 400], [3, 1, 2, 5, None])})  # type: ignore[list-item]
    [row] = compare([messy], data_kind="points", modes=5)
    assert row["quality"]["modes_covered"]["mean"] == 3.0  # step 300 is the last with a value
    assert row["steps_to_threshold"]["modes_covered"]["mean"] == 200.0
    assert row["stability"]["mode_oscillation"]["mean"] == 1.0  # 1 → 5 → 3: 2 modes lost over 2 intervals
    [entry] = curves([messy], ["modes_covered"])["curves"]["modes_covered"]
    assert (entry["steps"], entry["mean"]) == ([100, 200, 300], [1.0, 5.0, 3.0])


def test_only_the_measures_the_data_set_reports_are_compared() -> None:
    # An unlabelled points upload reports no PacGAN figure; unlabelled images no fd (models/catalog.py).
    assert measures("points", ["nsgan"], reported=set()) == []
    assert [m.name for m in measures("images", ["cgan", "infogan"], reported={"fd", "code_purity"})] == [
        "fd",
        "code_purity",
    ]
    assert series_needed("points", ["nsgan"], reported=set()) == ["loss_g", "grad_norm_g"]
    runs = [
        run("nsgan", seed, {"loss_g": (STEPS, [1, 2, 3, 4]), "grad_norm_g": (STEPS, [1, 1, 1, 1])}) for seed in (0, 1)
    ]
    [row] = compare(runs, data_kind="points", reported=set())
    assert row["quality"] == {} and row["steps_to_threshold"] == {}
    assert row["stability"]["mode_oscillation"] == {"mean": None, "std": None, "n": 0}
    assert row["stability"]["loss_g_spread_last_quarter"]["n"] == 2


def test_a_cancelled_run_is_counted_as_failed_and_left_out_of_every_figure() -> None:
    series = {"modes_covered": ([100, 200], [8.0, 8.0]), "loss_g": (STEPS, [1, 2, 3, 4])}
    runs = [
        run("nsgan", 0, series, status="succeeded", wall=10),
        run("nsgan", 1, {"modes_covered": ([100], [2.0]), "loss_g": (STEPS, [9, 1, 9, 1])}, status="cancelled"),
        run("nsgan", 2, {"modes_covered": ([100], [1.0]), "loss_g": (STEPS, [9, 1, 9, 1])}, status="cancelling"),
    ]
    [row] = compare(runs, data_kind="points", modes=8)
    assert (row["runs"], row["finished"], row["failed"]) == (3, 1, 2)
    assert row["quality"]["modes_covered"] == {"mean": 8.0, "std": None, "n": 1}
    assert row["steps_to_threshold"]["modes_covered"]["n"] == 1
    assert row["stability"]["loss_g_spread_last_quarter"]["n"] == 1
