"""Poketune's ASHA: Tune's ``ASHAScheduler`` with two options of a space's ``scheduler:``.

``prune_on: best`` judges each trial at a rung by its best value so far. Tune's scheduler
compares trials by the metric of the epoch that reaches the rung. On the real task2 set an
unscheduled CNN's val_f1 jumps by 0.2 between epochs: the seed-2 sweep of ``bench quality``
(2026-12-02) stopped the preset's trial at its 5-epoch rung on a dip (0.119, after 0.201 at
epoch 3), the same config that reached 0.472 trained alone. A trial keeps its best epoch's
weights (``early_stop.restore_best``) and the sweep ranks trials by their best epoch, so the
best so far is also what the rung should compare.

``spare: enqueued`` lets the space's own known-good configs (``enqueue:``) run past every
rung (the budget still stops them). They still count at the rungs, so they raise the bar for
the others. Why: a config is enqueued because it is known to end well, and a slow starter is
exactly what a rung misjudges. task2's enqueued config (val_f1 0.70–0.74 after 30–40 epochs
in the sweeps that found it) was at 0.195 at its 5-epoch rung in the seed-6 sweep of
2026-12-03, behind the preset trial, and was stopped there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from tuning.space import evaluates

__all__ = ["PoketuneASHA"]


class PoketuneASHA(ASHAScheduler):  # type: ignore[misc]
    """``ASHAScheduler`` that may judge by the best metric so far (``best_so_far``) and never
    stops a trial whose config is one of ``spared`` (points in Optuna's terms, as
    :attr:`SearchSpace.enqueue`; compared by :func:`tuning.space.evaluates`)."""

    def __init__(self, *, best_so_far: bool = False, spared: Sequence[dict[str, Any]] = (), **options: Any) -> None:
        super().__init__(**options)
        self.best_so_far = best_so_far
        self.spared = [dict(point) for point in spared]
        self._best: dict[str, float] = {}
        self._is_spared: dict[str, bool] = {}

    def _spares(self, trial: Any) -> bool:
        if trial.trial_id not in self._is_spared:
            config = getattr(trial, "config", None) or {}
            self._is_spared[trial.trial_id] = any(evaluates(config, point) for point in self.spared)
        return self._is_spared[trial.trial_id]

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        metric = self._metric
        value = result.get(metric) if metric else None
        if self.best_so_far and metric and value is not None:
            seen = self._best.get(trial.trial_id)
            best = value if seen is None else (max if self._mode == "max" else min)(seen, value)
            self._best[trial.trial_id] = best
            result = {**result, metric: best}  # the scheduler's view only
        decision = str(super().on_trial_result(tune_controller, trial, result))
        if decision == TrialScheduler.STOP and self._spares(trial) and result.get(self._time_attr, 0) < self._max_t:
            return str(TrialScheduler.CONTINUE)
        return decision

