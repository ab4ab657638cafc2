"""Evaluate one resolved run on its validation split: the numbers a comparison shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from training.engine import prepare_data
from training.evaluation import EvaluationError, evaluate_checkpoint
from training.models import count_parameters
from tuning.resolve import ResolvedCheckpoint

__all__ = ["LabelledRun", "RunEvaluation", "evaluate_run"]


@dataclass
class LabelledRun(ResolvedCheckpoint):
    """A resolved checkpoint with the spec that named it."""

    spec: str = ""


@dataclass
class RunEvaluation:
    label: str
    spec: str
    source: str
    model: str
    image_size: int
    data_dir: str
    class_names: list[str]
    y_true: np.ndarray = field(repr=False)
    y_pred: np.ndarray = field(repr=False)
    accuracy: float
    macro_f1: float
    per_class: pd.DataFrame = field(repr=False)  # index class; precision, recall, f1, support
    params_total: int
    params_trainable: int  # in the run's last phase (model.freeze_depth)
    train_time_s: float  # sum of epoch_time_s
    epochs: int
    best_epoch: int
    history: pd.DataFrame = field(repr=False)
    notes: list[str] = field(default_factory=list)


def evaluate_run(
    run: LabelledRun,
    data_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    device: torch.device | None = None,
) -> RunEvaluation:
    """The run's best weights on the validation split of ``data_dir`` under its own config."""
    ckpt = run.checkpoint
    cfg = ckpt.config
    data, _ = prepare_data(data_dir, cfg, cache_dir=cache_dir)
    try:
        ev = evaluate_checkpoint(ckpt, data, device=device)
    except EvaluationError as exc:
        raise EvaluationError(f"run {run.label!r} on {data_dir}: {exc}") from None
    notes = []
    if ckpt.source_hash and ckpt.source_hash != data.source_hash:
        notes.append(f"evaluated on {data_dir}, whose files differ from the ones it trained on")
    history = pd.DataFrame(ckpt.history)
    if "val_loss" in history and history["val_loss"].isna().all():
        notes.append("trained on train+val (retrained): its validation scores are optimistic")
    total, trainable = count_parameters(ckpt.build_model())
    epoch_times = history["epoch_time_s"] if "epoch_time_s" in history else pd.Series(dtype=float)
    return RunEvaluation(
        label=run.label,
        spec=run.spec,
        source=run.source,
        model=cfg.model.name,
        image_size=cfg.data.image_size,
        data_dir=str(data_dir),
        class_names=list(ckpt.class_names),
        y_true=ev.result.y_true,
        y_pred=ev.result.y_pred,
        accuracy=ev.accuracy,
        macro_f1=ev.macro_f1,
        per_class=ev.per_class(),
        params_total=total,
        params_trainable=trainable,
        train_time_s=float(epoch_times.sum()),
        epochs=ckpt.epoch or len(history),
        best_epoch=ckpt.best_epoch,
        history=history,
        notes=notes,
    )
