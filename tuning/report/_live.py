"""``tune --report``: rewrite the sweep's report as its trials finish.

The report reads the sweep record (Tune's saved experiment state), and Tune saves that state
on its own schedule (every ≥ 10 s), not when a trial ends. So a finished trial is *due*, and
the page is rewritten at the first step after the state on disk has changed, until the page
shows every due trial as finished. The last rewrite, after ``Tuner.fit`` returns, is the
sweep's (``tuning.sweep.run_sweep``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ray import tune

__all__ = ["ReportCallback"]

log = logging.getLogger("poketune")

#: seconds between looks at the saved state while a finished trial is due
POLL_S = 1.0
#: the browser reloads a live page this often
REFRESH_S = 30


class ReportCallback(tune.Callback):
    """Rewrites ``out/report.html`` (no PNGs: those come with the final report) once the
    sweep's saved state shows each trial that has finished or failed since the last page."""

    def __init__(self, name: str, storage: str, out: str | None) -> None:
        from tuning.storage import sweep_uri

        self.name, self.storage, self.out = name, storage, out
        self.sweep_uri = sweep_uri(storage, name)
        self.due: set[str] = set()
        self._seen_state = 0.0
        self._last_look = 0.0

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.due.add(str(trial.trial_id))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.due.add(str(trial.trial_id))

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if not self.due or time.monotonic() - self._last_look < POLL_S:
            return
        self._last_look = time.monotonic()
        from tuning.results import state_saved_at

        saved = state_saved_at(self.sweep_uri)
        if saved <= self._seen_state:
            return  # Tune has not saved since the last page: it would show nothing new
        self._seen_state = saved
        self.write()

    def write(self) -> None:
        from tuning.report import build_report
        from tuning.results import Sweep, SweepStateError

        try:
            sweep = Sweep.open(self.name, self.storage)
            report = build_report(sweep, Path(self.out) if self.out else None, pngs=False, refresh_s=REFRESH_S)
        except SweepStateError as exc:
            log.warning("report not rewritten: %s", exc)
            return
        except Exception as exc:  # a report must never stop a sweep: whatever broke, say it and go on
            log.warning("report not rewritten: %s: %s", type(exc).__name__, exc)
            return
        self.due -= set(report.finished_trials)
        log.info("report rewritten: %d trials finished → %s", len(report.finished_trials), report.html)
