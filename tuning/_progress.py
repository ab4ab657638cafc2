"""A compact live view of a sweep: one line per trial epoch instead of Tune's tables."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ray import tune

from tuning.space import SearchSpace

__all__ = ["ProgressPrinter"]


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


class ProgressPrinter(tune.Callback):
    """Prints ``trial  epoch  val_f1  best-so-far  key params`` as results arrive."""

    def __init__(
        self, *, space: SearchSpace, samples: int | None, max_epochs: int, stream: TextIO | None = None
    ) -> None:
        self.space = space
        self.samples = samples
        self.max_epochs = max_epochs
        self.stream = stream
        self.best: tuple[float, str] | None = None
        self.t0 = time.monotonic()
        self._index: dict[str, int] = {}

    def _out(self, line: str) -> None:
        print(line, file=self.stream or sys.stdout, flush=True)

    def _num(self, trial: Any) -> int:
        return self._index.setdefault(trial.trial_id, len(self._index) + 1)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        params = self.space.active_values(trial.config)
        text = "  ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in params.items())
        of = f"/{self.samples}" if self.samples else ""
        self._out(f"[{self._elapsed()}] trial {self._num(trial):>3}{of} {trial.trial_id} start  {text}")

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        if fallback := result.get("checkpoint_fallback"):
            # a retried trial whose latest checkpoint was corrupt (training.checkpoint)
            self._out(f"[{self._elapsed()}] trial {self._num(trial):>3} {trial.trial_id} {fallback}")
        metric = self.space.metric
        value = result.get(metric)
        if value is None:
            return
        better = self.best is None or (
            value > self.best[0] if self.space.mode == "max" else value < self.best[0]
        )
        if better:
            self.best = (float(value), trial.trial_id)
        best_value, best_id = self.best if self.best else (float("nan"), "-")
        self._out(
            f"[{self._elapsed()}] trial {self._num(trial):>3} {trial.trial_id} "
            f"epoch {result.get('epoch', '?'):>2}/{self.max_epochs}  "
            f"{metric} {value:.4f}  best {best_value:.4f} ({best_id})"
        )

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        epochs = last.get("epoch", 0)
        how = "early-stopped" if last.get("early_stopped") else (
            "finished" if epochs >= self.max_epochs else f"stopped at epoch {epochs} (ASHA or the budget)"
        )
        self._out(f"[{self._elapsed()}] trial {self._num(trial):>3} {trial.trial_id} {how}")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._out(f"[{self._elapsed()}] trial {self._num(trial):>3} {trial.trial_id} ERROR (see {trial.error_file or trial.path})")

    def _elapsed(self) -> str:
        s = int(time.monotonic() - self.t0)
        return f"{s // 60:02d}:{s % 60:02d}"
