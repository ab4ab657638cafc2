"""Early stopping on a monitored metric, plus the seeds' "F1 barely moved" rule."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from training.config import EarlyStopConfig
from training.metrics import is_improvement, mode_of

__all__ = ["EarlyStopping"]


@dataclass
class EarlyStopping:
    cfg: EarlyStopConfig
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    f1_history: list[float] = field(default_factory=list)

    @property
    def minimize(self) -> bool:
        return mode_of(self.cfg.monitor) == "min"

    def update(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Record an epoch's metrics (0-based ``epoch``); True when it is the best so far."""
        value = metrics[self.cfg.monitor]
        self.f1_history.append(metrics["val_f1"])
        if math.isnan(value):
            self.bad_epochs += 1
            return False
        if is_improvement(value, self.best, mode_of(self.cfg.monitor), self.cfg.min_delta):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    def should_stop(self, epoch: int) -> bool:
        if epoch + 1 < self.cfg.start_epoch:
            return False
        if self.cfg.patience > 0 and self.bad_epochs >= self.cfg.patience:
            return True
        w = self.cfg.f1_window
        if w > 0 and len(self.f1_history) >= w:
            window = self.f1_history[-w:]
            top = max(abs(v) for v in window)
            if top > 0 and (max(window) - min(window)) / top < self.cfg.f1_tol:
                return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "f1_history": list(self.f1_history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.bad_epochs = state["bad_epochs"]
        self.f1_history = list(state["f1_history"])
