"""Which way each metric is better: the one rule early stopping, schedulers, search spaces,
results, export and retrain share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

__all__ = ["COST_METRICS", "METRIC_MODES", "Mode", "best_index", "is_improvement", "mode_of"]

Mode = Literal["min", "max"]

#: every metric an epoch reports that can be optimised, and its direction
METRIC_MODES: dict[str, Mode] = {
    "val_f1": "max",
    "val_acc": "max",
    "val_loss": "min",
    "train_loss": "min",
}

#: what a model-cost objective may minimise (training/cost.py measures them)
COST_METRICS = ("latency_ms", "latency_batch_ms", "params", "flops_per_image")


def mode_of(metric: str) -> Mode:
    """``"max"`` for scores, ``"min"`` for losses; unknown names list the valid ones."""
    try:
        return METRIC_MODES[metric]
    except KeyError:
        raise KeyError(f"unknown metric {metric!r}; valid: {', '.join(METRIC_MODES)}") from None


def is_improvement(value: float, best: float | None, mode: Mode, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` in ``mode``'s direction."""
    if best is None:
        return True
    gain = value - best if mode == "max" else best - value
    return gain > min_delta


def best_index(values: Sequence[float], mode: Mode) -> int:
    """Index of the best of ``values`` (the first on ties); NaNs never win."""
    finite = [(v, i) for i, v in enumerate(values) if v == v]
    if not finite:
        raise ValueError("no finite value to rank")
    # best value first, then the earliest epoch
    return min(finite, key=lambda vi: (-vi[0] if mode == "max" else vi[0], vi[1]))[1]
