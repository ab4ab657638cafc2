"""Ray Tune adapters of a budget-first sweep (see :mod:`tuning.budget`): the searcher that
stops proposing at the deadline, the stopper that ends running trials there, and the callback
that finds the preset's trial."""

from __future__ import annotations

import json
from typing import Any

from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from tuning.budget import ledger_of, past_deadline

__all__ = ["BudgetStopper", "DeadlineOptunaSearch", "LedgerCallback"]


class DeadlineOptunaSearch(OptunaSearch):  # type: ignore[misc]
    """OptunaSearch that proposes no trial once the sweep's deadline has passed."""

    def __init__(self, *args: Any, sweep_uri: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sweep_uri = sweep_uri

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if past_deadline(self.sweep_uri):
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's "no more" signal
        result: dict[str, Any] | None = super().suggest(trial_id)
        return result


class BudgetStopper(tune.Stopper):  # type: ignore[misc]
    """Stops each running trial at its first report after the deadline, and records it."""

    def __init__(self, sweep_uri: str) -> None:
        self.sweep_uri = sweep_uri

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if not past_deadline(self.sweep_uri):
            return False
        ledger = ledger_of(self.sweep_uri)
        if trial_id not in ledger.budget_stopped:
            ledger.budget_stopped.append(trial_id)
            ledger.write(self.sweep_uri)
        return True

    def stop_all(self) -> bool:
        return False  # running trials finish their epoch; the searcher stops proposing


class LedgerCallback(tune.Callback):  # type: ignore[misc]
    """Records which trial evaluates the preset's point (the sweep's first, enqueued)."""

    def __init__(self, sweep_uri: str) -> None:
        self.sweep_uri = sweep_uri

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        ledger = ledger_of(self.sweep_uri)
        if ledger.preset_trial is not None or not ledger.preset_point:
            return
        config = trial.config or {}
        if all(_same(config.get(k), v) for k, v in ledger.preset_point.items()):
            ledger.preset_trial = str(trial.trial_id)
            ledger.write(self.sweep_uri)


def _same(a: Any, b: Any) -> bool:
    """Config values compared as Optuna stored them (lists as their JSON labels)."""
    if isinstance(a, list):
        a = json.dumps(a, separators=(",", ":"))
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
        except (TypeError, ValueError):
            return False
    return bool(a == b)
