"""A wall-clock deadline for a fit: it ends after the last epoch that finishes in time.

Why the fit keeps it rather than its caller: ``poketune retrain --time-budget`` sizes a
member's epochs from a timing of a few batches in the driver (:mod:`training.epoch_time`),
and that estimate can be low. On the task3 quality set an epoch was timed at 44.5 s and
took 52.5 s in the Ray Train worker, so 8 planned epochs overran the refit's budget by
82 s (``docs/benchmarks.md``). The plan still sizes the schedule; the deadline is the
guarantee: before an epoch's report the fit asks whether one more epoch, its report
included, ends by the deadline, and if not this epoch is its last (its checkpoint saved as
for any last epoch). Losing the plan's last epoch costs little: a cosine or one-cycle
schedule's tail runs at a tiny rate.

The deadline is unix time (``time.time``), not a monotonic clock, because the driver sets
it and a worker on another node checks it; across a cluster it is as good as the nodes'
clock sync. Data-parallel workers agree on the answer (any rank out of time stops all), so
no rank waits in a collective for a peer that stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Deadline"]


@dataclass
class Deadline:
    """Whether one more epoch fits before ``at`` (unix seconds), from the epochs timed so far."""

    at: float
    clock: Callable[[], float] = field(default=time.time, repr=False)
    #: the longest training part and the longest report part of an epoch so far
    longest_train_s: float = 0.0
    longest_report_s: float = 0.0
    _epoch_start: float | None = field(default=None, init=False, repr=False)
    _report_start: float | None = field(default=None, init=False, repr=False)

    def epoch_started(self) -> None:
        self._epoch_start = self.clock()

    def next_fits(self) -> bool:
        """Called after an epoch trained, before its report: whether this epoch's report,
        one more epoch and its report all end by the deadline."""
        now = self.clock()
        if self._epoch_start is not None:
            self.longest_train_s = max(self.longest_train_s, now - self._epoch_start)
        self._report_start = now
        need = self.longest_report_s + self.longest_train_s + self.longest_report_s
        return now + need <= self.at

    def reported(self) -> None:
        """Called after the epoch's report (its checkpoint, if one was due, is saved)."""
        if self._report_start is not None:
            self.longest_report_s = max(self.longest_report_s, self.clock() - self._report_start)
