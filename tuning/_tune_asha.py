"""ASHA that judges each trial at a rung by its best value so far (``scheduler: {name: asha,
prune_on: best}``).

Tune's ``ASHAScheduler`` compares trials by the metric of the epoch that reaches the rung. On
the real task2 set an unscheduled CNN's val_f1 jumps by 0.2 between epochs: the seed-2 sweep of
``bench quality`` (2026-12-02) stopped the preset's trial at its 5-epoch rung on a dip (0.119,
after 0.201 at epoch 3), the same config that reached 0.472 trained alone. A trial keeps its
best epoch's weights (``early_stop.restore_best``) and the sweep ranks trials by their best
epoch, so the best so far is also what the rung should compare.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler

__all__ = ["BestSoFarASHA"]


class BestSoFarASHA(ASHAScheduler):  # type: ignore[misc]
    """``ASHAScheduler`` that sees, in every result, the trial's best metric so far."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._best: dict[str, float] = {}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        metric = self._metric
        value = result.get(metric) if metric else None
        if metric and value is not None:
            seen = self._best.get(trial.trial_id)
            best = value if seen is None else (max if self._mode == "max" else min)(seen, value)
            self._best[trial.trial_id] = best
            result = {**result, metric: best}  # the scheduler's view only
        return str(super().on_trial_result(tune_controller, trial, result))
