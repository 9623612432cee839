"""training.watch: collapse and divergence detection on every job, from what the loop reads anyway.

    watch = build_watch(spec, data)                       # or TrainingWatch(spec.training.watch, ...)
    alerts = watch.observe_metrics(step, values)         # at each metrics reading (host floats)
    alerts += watch.observe_snapshot(step, evaluation, samples)   # at each sample snapshot
    state = watch.state_dict()                            # into the checkpoint's `state` (plain types)

An alert is a dict `{"kind": "collapse" | "divergence", "step": int, "evidence": {name: number},
"action": "reported" | "stopped"}`. Each kind fires at most once per job; the detector's state
travels in the checkpoint, so a resumed job goes on counting where it was and does not fire again
what it already fired (the store also keeps one alert per kind: models/store/alerts.py).

Collapse (mode dropping; the modes metric of PacGAN, Lin et al. 2018, arXiv 1712.04086): each
snapshot gives a diversity figure, a fraction where 1 is the data's own diversity:

- 2-D mixtures (ring8, grid25): the effective number of modes holding the samples,
  K·exp(−reverse_kl_all), the perplexity of the samples' nearest-mode histogram, over the data's K
  modes. It counts where the mass is, not only the high-quality samples, so a generator still
  spreading towards the modes early in a run is not taken for a collapsed one.
- images with a Fréchet distance in the evaluation (`fd`, else `fid`; lower is better): it is judged
  against the run's best instead (no data floor: the data's own FD is 0).
- anything else (images, spiral, uploaded points): the snapshot's mean pairwise L2 distance over
  the real data's (the "average pairwise distance" diversity score, e.g. Srivastava et al. 2017
  VEEGAN's discussion, and the minibatch-diversity idea of Salimans et al. 2016).

A snapshot after `warmup_steps` is down when its figure is below `collapse_floor` or below
`collapse_drop` × the run's best (FD: above best / `collapse_drop`); `patience` snapshots down in
a row is a collapse ("falling and staying down").

Divergence, judged per loss (the catalog's `watch` section says the same, models/catalog.py):

- every loss: a non-finite value (worker/divergence.py; the job fails, and the trainer records it here
  as a divergence alert).
- losses whose D scores how real a sample is against a fixed end (minimax, nsgan, dragan, cgan and
  infogan on one of them, lsgan, hinge): also D winning completely while G's gradient vanishes for
  `vanishing_steps` steps. Arjovsky & Bottou 2017 (arXiv 1701.04862, Theorem 2.4) show that as D
  approaches a perfect discriminator, the gradient the minimax generator gets goes to 0. D "wins"
  when its mean scores reach the loss's saturated ends (logistic losses: mean logit ≥ logit(0.99) on
  real, ≤ logit(0.01) on fake; least squares: within 10 % of |b − a| from b and a; hinge: both margins
  met, D's loss 0). G's gradient "vanishes" relative to its own scale in this run, not to an absolute
  figure (a gradient norm's size depends on the net, the data and the loss): below `vanishing_grad`
  (a fraction) of the largest norm G had at a reading where D was not winning. Until such a reading
  there is no scale, and nothing is judged.
- WGAN, WGAN-GP (critics) and BEGAN (an auto-encoder D): non-finite values only. A critic's score is
  an unbounded estimate of a distance, not a probability, so it has no end to "win" at, and G's
  gradient norm is set by the Lipschitz constraint, not by D's confidence: weight clipping at c = 0.01
  makes it ~1e-5 in a healthy run. The critic's distance estimate is no usable signal either: it
  rises while the critic learns (as it should) and its scale is set by c or λ and the data, so a
  "grows without bound" test would need a per-run bound nobody can set. BEGAN's D reconstructs
  samples; its balance term k_t is clipped to [0, 1] by design. A real blow-up of any of them ends
  in non-finite values, which are always caught.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from models.spec import JobSpec, Watch
from worker.gan.datasets import MIXTURES

ALERT_KINDS = ("collapse", "divergence")
LOGIT_WIN = math.log(0.99 / 0.01)  # logit(0.99) ≈ 4.6: D gives real p ≥ 0.99 and fake p ≤ 0.01
LSGAN_WIN = 0.1  # least squares: D's outputs within this fraction of |b − a| of their targets
FD_NAMES = ("fd", "fid")  # the data's own classifier's Fréchet distance (worker/quality.py), else Inception's FID
DIVERSITY_SAMPLES = 256  # samples the pairwise distance is taken over (bounded cost: 256² pairs)

Alert = dict[str, Any]
DWins = Callable[[Mapping[str, float]], bool]


class WatchStop(Exception):
    """An alert of training.watch with action "stop": the job ends as failed, without a retry."""

    def __init__(self, alert: Alert) -> None:
        self.alert = alert
        super().__init__(f"stopped by training.watch: {describe(alert)}")


def describe(alert: Alert) -> str:
    """One line for an alert, e.g. "collapse at step 1200 (effective modes 1.0/8, best 7.9/8; modes covered 1/8)"."""
    e, head = alert["evidence"], f"{alert['kind']} at step {alert['step']}"
    if alert["kind"] == "collapse":
        if "effective_modes" in e:
            return (
                f"{head} (effective modes {e['effective_modes']:.1f}/{e['modes_total']}, "
                f"best {e['best_effective_modes']:.1f}/{e['modes_total']}; "
                f"modes covered {e['modes_covered']:.0f}/{e['modes_total']})"
            )
        if name := next((name for name in FD_NAMES if name in e), None):
            label = "Fréchet distance" if name == "fd" else "FID"
            return f"{head} ({label} {e[name]:.4g}, best {e['best_' + name]:.4g} at step {e['best_step']})"
        return f"{head} (sample diversity {e['diversity']:.3f} of the data's, best {e['best_diversity']:.3f})"
    if "value" in e:
        return f"{head} ({e['metric']} became {e['value']})"
    scale = f" ({e['fraction']:.3g} of its {e['grad_scale']:.3g})" if "grad_scale" in e else ""
    return (
        f"{head} (G's gradient norm under {e['threshold']:.3g}{scale} with D winning for {e['steps']} steps: "
        f"last {e['grad_norm_g']:.3g})"
    )


def mean_pairwise_distance(samples: np.ndarray, limit: int = DIVERSITY_SAMPLES) -> float:
    """Mean L2 distance between distinct pairs of the first `limit` samples (any (N, ...) array); 0 for N < 2."""
    x = np.asarray(samples[:limit], dtype=np.float64).reshape(min(len(samples), limit), -1)
    n = len(x)
    if n < 2:
        return 0.0
    squared = (x * x).sum(axis=1)
    d2 = np.maximum(squared[:, None] + squared[None, :] - 2 * x @ x.T, 0.0)
    return float(np.sqrt(d2).sum() / (n * (n - 1)))


def d_wins_test(loss: Any) -> DWins | None:
    """Whether D has won completely, judged from one metrics reading (d_real, d_fake: mean D scores), for a spec
    loss; None for losses whose D has no such end (wgan, wgan-gp, began): no vanishing-gradient test for them.

    Logistic losses (minimax, nsgan, dragan's NS loss): D's score is the logit of "real", so its saturated ends
    mean certainty. LSGAN: D regresses real to b and fake to a, so reaching both targets is a perfect D. Hinge:
    D's loss is 0 once real ≥ 1 and fake ≤ −1, the margins; past them D has nothing left to learn.
    WGAN, WGAN-GP: a critic's score is an unbounded distance estimate, no probability. BEGAN: D is an
    auto-encoder scoring reconstructions. See the module docstring.
    """
    base = loss.base_loss() if loss.name in ("cgan", "infogan") else loss
    name = base.name
    if name in ("minimax", "nsgan", "dragan"):
        return lambda v: v["d_real"] >= LOGIT_WIN and v["d_fake"] <= -LOGIT_WIN
    if name == "lsgan":
        a, b = float(base.a), float(base.b)
        tolerance = LSGAN_WIN * abs(b - a)
        return lambda v: abs(v["d_real"] - b) <= tolerance and abs(v["d_fake"] - a) <= tolerance
    if name == "hinge":
        return lambda v: v["d_real"] >= 1.0 and v["d_fake"] <= -1.0
    return None


class TrainingWatch:
    """The detector of one run; fed by the trainer, pure (no I/O), its state plain numbers.

    `modes`: the data's mode count for a 2-D mixture (None otherwise); `data_diversity`: the real
    data's mean pairwise distance (None: that figure is not judged); `d_wins`: see d_wins_test.
    """

    def __init__(
        self,
        settings: Watch,
        *,
        modes: int | None = None,
        data_diversity: float | None = None,
        d_wins: DWins | None = None,
    ) -> None:
        self.settings = settings
        self.modes, self.data_diversity, self.d_wins = modes, data_diversity, d_wins
        self.fired: list[str] = []
        self.best: float | None = None  # the best figure so far (a fraction; FD: the lowest)
        self.best_step = 0
        self.down_since: int | None = None  # first step of the current run of down snapshots
        self.down_count = 0
        self.vanishing_since: int | None = None  # first metrics step of the current vanishing streak
        self.vanishing_max = 0.0  # G's largest gradient norm over that streak
        self.grad_scale: float | None = None  # G's largest gradient norm at a reading where D was not winning

    # ------------------------------------------------------------------ what the trainer calls

    def observe_metrics(self, step: int, values: Mapping[str, float]) -> list[Alert]:
        """One metrics reading (finite host floats); the alerts it raises (at most one)."""
        s = self.settings
        if not s.divergence or "divergence" in self.fired or self.d_wins is None or "grad_norm_g" not in values:
            return []  # d_wins None: a critic or BEGAN, whose divergence is a non-finite value only
        grad = float(values["grad_norm_g"])
        winning = "d_real" in values and "d_fake" in values and self.d_wins(values)
        if not winning:
            # The loss's own scale of G's gradient in this run: what it is while D is not saturated.
            self.grad_scale = grad if self.grad_scale is None else max(self.grad_scale, grad)
        threshold = None if self.grad_scale is None else s.vanishing_grad * self.grad_scale
        if not (winning and threshold is not None and grad < threshold):
            self.vanishing_since, self.vanishing_max = None, 0.0
            return []
        if self.vanishing_since is None:
            self.vanishing_since, self.vanishing_max = step, grad
        self.vanishing_max = max(self.vanishing_max, grad)
        steps = step - self.vanishing_since + 1
        if steps < s.vanishing_steps:
            return []
        evidence = {
            "grad_norm_g": grad,
            "max_grad_norm_g": self.vanishing_max,
            "threshold": threshold,
            "grad_scale": self.grad_scale,
            "fraction": s.vanishing_grad,
            "since_step": self.vanishing_since,
            "steps": steps,
        }
        evidence.update({k: float(values[k]) for k in ("d_real", "d_fake", "loss_d", "loss_g") if k in values})
        return [self._fire("divergence", step, evidence)]

    def observe_snapshot(
        self, step: int, evaluation: Mapping[str, float] | None, samples: np.ndarray | None
    ) -> list[Alert]:
        """One sample snapshot (its evaluation, and the samples as the sink got them); the alerts it raises."""
        s = self.settings
        if not s.collapse or "collapse" in self.fired:
            return []
        judged = self._figure(evaluation or {}, samples)
        if judged is None:
            return []
        figure, evidence, lower_is_better = judged
        if self.best is None or (figure < self.best if lower_is_better else figure > self.best):
            self.best, self.best_step = figure, step
        if step <= s.warmup_steps:
            return []
        if lower_is_better:
            down = self.best > 0 and figure > self.best / s.collapse_drop
        else:
            down = figure < s.collapse_floor or figure < s.collapse_drop * self.best
        if not down:
            self.down_since, self.down_count = None, 0
            return []
        if self.down_since is None:
            self.down_since = step
        self.down_count += 1
        if self.down_count < s.patience:
            return []
        evidence.update(best_step=self.best_step, down_since_step=self.down_since, snapshots_down=self.down_count)
        if lower_is_better:
            evidence[f"best_{next(name for name in FD_NAMES if name in evidence)}"] = self.best
        elif self.modes is not None and "effective_modes" in evidence:
            evidence["best_effective_modes"] = self.best * self.modes
        else:
            evidence["best_diversity"] = self.best
        return [self._fire("collapse", step, evidence)]

    def record(self, kind: str) -> None:
        """Note that `kind` fired outside the detector (a non-finite value): it will not fire again."""
        if kind not in self.fired:
            self.fired.append(kind)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers and strings only (a checkpoint's state loads with weights_only=True)."""
        return {
            "fired": list(self.fired),
            "best": self.best,
            "best_step": self.best_step,
            "down_since": self.down_since,
            "down_count": self.down_count,
            "vanishing_since": self.vanishing_since,
            "vanishing_max": self.vanishing_max,
            "grad_scale": self.grad_scale,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from `state_dict()`'s output."""
        self.fired = [str(kind) for kind in state["fired"]]
        self.best = None if state["best"] is None else float(state["best"])
        self.best_step = int(state["best_step"])
        self.down_since = None if state["down_since"] is None else int(state["down_since"])
        self.down_count = int(state["down_count"])
        self.vanishing_since = None if state["vanishing_since"] is None else int(state["vanishing_since"])
        self.vanishing_max = float(state["vanishing_max"])
        scale = state.get("grad_scale")  # checkpoints from before the relative test have none: learnt again
        self.grad_scale = None if scale is None else float(scale)

    # ------------------------------------------------------------------ internals

    def _fire(self, kind: str, step: int, evidence: dict[str, Any]) -> Alert:
        self.fired.append(kind)
        action = "stopped" if self.settings.action == "stop" else "reported"
        rounded = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in evidence.items()}
        return {"kind": kind, "step": step, "evidence": rounded, "action": action}

    def _figure(
        self, evaluation: Mapping[str, float], samples: np.ndarray | None
    ) -> tuple[float, dict[str, Any], bool] | None:
        """The snapshot's figure, its evidence, and whether lower is better; None when nothing can be judged."""
        for name in FD_NAMES:
            fd = evaluation.get(name)
            if fd is not None and math.isfinite(fd):
                return float(fd), {name: float(fd)}, True
        if self.modes is not None and "reverse_kl_all" in evaluation:
            share = math.exp(-float(evaluation["reverse_kl_all"]))  # perplexity / K
            evidence = {
                "effective_modes": share * self.modes,
                "modes_total": self.modes,
                "modes_covered": float(evaluation.get("modes_covered", 0.0)),
                "hq_fraction": float(evaluation.get("hq_fraction", 0.0)),
            }
            return share, evidence, False
        if samples is not None and self.data_diversity:
            diversity = mean_pairwise_distance(samples) / self.data_diversity
            return diversity, {"diversity": diversity}, False
        return None


def build_watch(spec: JobSpec, x: np.ndarray, dataset: str | None) -> TrainingWatch:
    """The detector for `spec`, with the real data `x` (any (N, ...) array) and a built-in data set's name."""
    modes = len(MIXTURES[dataset][0]) if dataset in MIXTURES else None
    spread = x[:: max(1, len(x) // DIVERSITY_SAMPLES)]  # strided: a data set stored class by class still mixes
    diversity = None if modes is not None else mean_pairwise_distance(spread) or None
    return TrainingWatch(spec.training.watch, modes=modes, data_diversity=diversity, d_wins=d_wins_test(spec.loss))
