"""Tune's per-trial result files (its JSON and CSV logs) without the rows a restart loses.

Ray's result loggers copy a trial's result file from the sweep's storage over the driver's
local copy every time the trial starts again (a PBT exploit or synch pause, a retry after a
failure). That copy is meant for a sweep resumed by a new driver, which has no local file; in
a running sweep the storage only receives the local file at Tune's periodic experiment
syncs, so the copy is older and every row reported since the last sync was lost (measured:
a 6-epoch PBT trial's history kept one row). These loggers restore from storage only when
there is no local file, and otherwise keep appending to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

__all__ = ["KeepLocalCSVLogger", "KeepLocalJsonLogger", "result_loggers"]


class _KeepLocal:
    def _restore_from_remote(self, file_name: str, trial: Any) -> None:
        if Path(trial.local_path, file_name).exists():
            return  # this driver's own file: newer than the storage's copy
        super()._restore_from_remote(file_name, trial)  # type: ignore[misc]


class KeepLocalJsonLogger(_KeepLocal, JsonLoggerCallback):  # type: ignore[misc]
    """The JSON log, the file Tune's ``ExperimentAnalysis`` reads a trial's history from."""


class KeepLocalCSVLogger(_KeepLocal, CSVLoggerCallback):  # type: ignore[misc]
    """The CSV log, Tune's fallback when the JSON one is missing."""


def result_loggers() -> list[Any]:
    """Given to ``RunConfig(callbacks=...)``: Tune then adds its own loggers of these kinds no
    more (it adds each default logger only where no callback of its type is given)."""
    return [KeepLocalJsonLogger(), KeepLocalCSVLogger()]
