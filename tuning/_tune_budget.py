"""Ray Tune adapters of a budget-first sweep (see :mod:`tuning.budget`): the searcher that
stops proposing at the deadline (and keeps its Optuna study in a journal file the sweep's
record reads back), the stopper that ends running trials there, and the callback that finds
the preset's trial."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from tuning.budget import ledger_of, past_deadline
from tuning.space import evaluates

__all__ = ["BudgetStopper", "DeadlineOptunaSearch", "LedgerCallback"]


class DeadlineOptunaSearch(OptunaSearch):  # type: ignore[misc]
    """OptunaSearch that proposes no trial once the sweep's deadline has passed, on an
    Optuna journal storage (``journal``) that outlives the driver.

    With remote sweep storage the journal is written locally and copied next to Tune's own
    searcher state whenever Tune saves it (``upload_journal``), so it reaches the storage
    with it; with local storage it is written in the sweep folder directly.
    """

    def __init__(
        self, *, sweep_uri: str, journal: Path, study_name: str, upload_journal: bool = False,
        **kwargs: Any,
    ) -> None:
        from tuning.results import optuna_storage

        self.journal = Path(journal)
        self.journal_storage = optuna_storage(self.journal)
        self.journal_study = study_name
        self.upload_journal = upload_journal
        #: Tune trial id -> the Optuna trial number it was asked as (for a resume, below)
        self.asked: dict[str, int] = {}
        super().__init__(storage=self.journal_storage, study_name=study_name, **kwargs)
        self.sweep_uri = sweep_uri

    def _study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.journal_study, storage=self.journal_storage)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if past_deadline(self.sweep_uri):
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's "no more" signal
        result: dict[str, Any] | None = super().suggest(trial_id)
        if result is not None:
            # one driver asks one trial at a time: the running trial not yet mapped is this one
            taken = set(self.asked.values())
            running = self._study().get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            new = [t.number for t in running if t.number not in taken]
            if new:
                self.asked[trial_id] = max(new)
        return result

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        super().save_to_dir(checkpoint_dir, session_str)
        if self.upload_journal and self.journal.is_file():
            shutil.copyfile(self.journal, Path(checkpoint_dir) / self.journal.name)

    def restore(self, checkpoint_path: str) -> None:
        """Tune's saved searcher state, then: a trial the journal holds but that state does
        not (asked after Tune last saved, before the driver died) will never be told; it
        is marked failed, so the study does not keep it running forever."""
        super().restore(checkpoint_path)
        known = set(self.asked.values())
        study = self._study()
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if t.number not in known:
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)


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
        if evaluates(config, ledger.preset_point):
            ledger.preset_trial = str(trial.trial_id)
            ledger.write(self.sweep_uri)

