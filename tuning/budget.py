"""Budget-first sweeps (the record; the Tune adapters are in :mod:`tuning._tune_budget`): a wall-clock deadline instead of (or on top of) a trial count.

Until the deadline the searcher keeps proposing trials (``--samples`` becomes optional); at
the deadline it proposes no more, and every running trial stops at its next report, so the
sweep overruns by at most one epoch of its slowest running trial and keeps every epoch that
was reported. The sweep's ledger (``sweep_ledger.json`` in the sweep folder) records the
budget, the deadline, which trials the budget stopped and which trial is the preset's, so
``poketune results`` can say so. Everything reads the deadline from the ledger: a resumed
sweep runs for ``--time-budget`` more (default: its original budget again).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from training.errors import PoketuneError
from tuning.storage import read_text, write_text

__all__ = ["LEDGER", "BudgetError", "Ledger", "ledger_of", "parse_duration", "past_deadline", "start_ledger"]

LEDGER = "sweep_ledger.json"
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[smh]?)\s*$", re.IGNORECASE)


class BudgetError(PoketuneError, ValueError):
    """A time budget that is not a positive duration."""


def parse_duration(text: str) -> float:
    """``"20m"`` → 1200.0; accepts ``s``, ``m``, ``h`` or a bare number of seconds."""
    m = _DURATION.match(str(text))
    if m is None:
        raise BudgetError(f"time budget {text!r}: expected a duration such as 90s, 20m or 1.5h")
    seconds = float(m["n"]) * _UNITS[m["unit"].lower()]
    if seconds <= 0:
        raise BudgetError(f"time budget {text!r}: must be more than 0 seconds")
    return seconds


@dataclass
class Ledger:
    """What a sweep records about itself as it runs (driver-side, one writer)."""

    budget_s: float | None = None
    deadline: float | None = None  # unix time; None: no budget
    started: float = 0.0
    preset_trial: str | None = None
    preset_point: dict[str, Any] = field(default_factory=dict)
    budget_stopped: list[str] = field(default_factory=list)
    #: unix time ``Tuner.fit`` returned (None while it runs, or after a crash): trials still
    #: marked paused then were left there by the scheduler, not waiting to run
    finished: float | None = None

    @classmethod
    def read(cls, sweep_uri: str) -> Ledger:
        try:
            data = json.loads(read_text(f"{sweep_uri}/{LEDGER}"))
        except (FileNotFoundError, OSError):
            return cls()
        return cls(**data)

    def write(self, sweep_uri: str) -> None:
        write_text(f"{sweep_uri}/{LEDGER}", json.dumps(asdict(self), indent=2))

    def seconds_left(self, now: float | None = None) -> float | None:
        return None if self.deadline is None else self.deadline - (now or time.time())


# the ledger each driver process has read: the objects below are pickled into Tune's
# experiment state, so they hold only the sweep's URI and look the ledger up here
_LEDGERS: dict[str, Ledger] = {}


def ledger_of(sweep_uri: str) -> Ledger:
    if sweep_uri not in _LEDGERS:
        _LEDGERS[sweep_uri] = Ledger.read(sweep_uri)
    return _LEDGERS[sweep_uri]


def start_ledger(sweep_uri: str, ledger: Ledger) -> Ledger:
    """Make ``ledger`` this process's view of the sweep and write it."""
    _LEDGERS[sweep_uri] = ledger
    ledger.write(sweep_uri)
    return ledger


def past_deadline(sweep_uri: str) -> bool:
    left = ledger_of(sweep_uri).seconds_left()
    return left is not None and left <= 0
