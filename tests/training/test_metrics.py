"""The metric-direction rule that early stopping, schedulers and search spaces share."""

from __future__ import annotations

import math

import pytest

from training.config import EarlyStopConfig
from training.early_stopping import EarlyStopping
from training.metrics import best_index, is_improvement, mode_of
from tuning.space import METRIC_MODES as SPACE_MODES


def test_losses_are_minimised_and_scores_maximised() -> None:
    assert [mode_of(m) for m in ("val_f1", "val_acc", "val_loss", "train_loss")] == ["max", "max", "min", "min"]
    with pytest.raises(KeyError, match="valid: val_f1"):
        mode_of("val_f2")


def test_improvement_respects_direction_and_min_delta() -> None:
    assert is_improvement(0.6, 0.5, "max") and not is_improvement(0.4, 0.5, "max")
    assert is_improvement(0.4, 0.5, "min") and not is_improvement(0.6, 0.5, "min")
    assert not is_improvement(0.505, 0.5, "max", min_delta=0.01)
    assert is_improvement(1.0, None, "min")


def test_best_index_skips_nan_and_prefers_the_first_tie() -> None:
    assert best_index([0.2, math.nan, 0.7, 0.7, 0.1], "max") == 2
    assert best_index([0.9, 0.3, math.nan, 0.3], "min") == 1
    with pytest.raises(ValueError):
        best_index([math.nan], "max")


def test_early_stopping_and_search_spaces_use_the_same_rule() -> None:
    assert {k: mode_of(k) for k in ("val_f1", "val_acc", "val_loss")} == SPACE_MODES
    # val_acc is a score: a falling accuracy is no improvement (a hard-coded "val_loss is the
    # only minimised metric" rule would agree; one keyed on "acc" being a loss would not)
    es = EarlyStopping(EarlyStopConfig(monitor="val_acc", patience=1))
    assert es.update(0, {"val_acc": 0.5, "val_f1": 0.5, "val_loss": 1.0})
    assert not es.update(1, {"val_acc": 0.4, "val_f1": 0.4, "val_loss": 0.9})
    es = EarlyStopping(EarlyStopConfig(monitor="val_loss", patience=1))
    assert es.update(0, {"val_acc": 0.5, "val_f1": 0.5, "val_loss": 1.0})
    assert es.update(1, {"val_acc": 0.4, "val_f1": 0.4, "val_loss": 0.9})
