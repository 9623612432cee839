"""Checkpoint retention: which of a job's checkpoints stay, as a pure function of their steps.

A job keeps the newest `keep_last` checkpoints, each checkpoint whose step is a multiple of `keep_every`, and always
the latest (the final one once the job ends, and the one a resume starts from while it runs). Everything else is
pruned by the worker after it records a new checkpoint (worker/checkpoints.py prune_checkpoints); checkpoints that
another job's `init_from` or a pending generate request names are kept while they are needed (the store decides
that: models/store/results.py ResultsStore.prune_checkpoints).

The spec's `every.keep_last` / `every.keep_every` win; null takes the service's GANFORGE_CHECKPOINT_KEEP_LAST (3)
and GANFORGE_CHECKPOINT_KEEP_EVERY (0). Disk per job is then at most (keep_last + steps / keep_every + 1)
checkpoints, whatever the job's length. The model is Keras' and Lightning's ModelCheckpoint (`save_top_k`,
`every_n_train_steps`) and Hugging Face's `save_total_limit`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Retention:
    """keep_last: the newest N checkpoints stay (0: every checkpoint stays); keep_every: each checkpoint at a step
    that is a multiple of N stays too (0: none for its step)."""

    keep_last: int
    keep_every: int = 0

    def __post_init__(self) -> None:
        if self.keep_last < 0 or self.keep_every < 0:
            raise ValueError(f"keep_last and keep_every are 0 or more, got {self.keep_last}, {self.keep_every}")

    @property
    def keeps_all(self) -> bool:
        return self.keep_last == 0

    def kept(self, steps: Iterable[int]) -> set[int]:
        """The steps of `steps` that stay: the newest keep_last, multiples of keep_every, and the latest."""
        ordered = sorted(set(steps))
        if self.keeps_all or not ordered:
            return set(ordered)
        keep = set(ordered[-self.keep_last :])
        keep.add(ordered[-1])
        if self.keep_every:
            keep.update(step for step in ordered if step % self.keep_every == 0)
        return keep

    def pruned(self, steps: Iterable[int], protected: Iterable[int] = ()) -> list[int]:
        """The steps of `steps` to delete, ascending: those `kept` does not keep, less the `protected` ones."""
        all_steps = set(steps)
        return sorted(all_steps - self.kept(all_steps) - set(protected))

    def describe(self) -> str:
        """ "keep_last 3, keep_every 0" (for events and logs)."""
        return f"keep_last {self.keep_last}, keep_every {self.keep_every}"


def retention_of(spec_json: Mapping[str, Any], *, keep_last: int, keep_every: int) -> Retention:
    """The retention of a job whose stored spec is `spec_json`: its `every.keep_last` / `every.keep_every` where
    given (not null), else the service defaults `keep_last` / `keep_every` (GANFORGE_CHECKPOINT_KEEP_*)."""
    every = spec_json.get("every") or {}
    given_last, given_every = every.get("keep_last"), every.get("keep_every")
    return Retention(
        keep_last=keep_last if given_last is None else int(given_last),
        keep_every=keep_every if given_every is None else int(given_every),
    )
