"""One evaluation path: a :class:`Checkpoint` on a validation split, and its reports.

``poketune train`` (the report it prints), ``export`` (a trial's confusion matrix and
report) and ``compare`` (per-class tables) all evaluate through :func:`evaluate_checkpoint`
and read the per-class numbers from the same :class:`CheckpointEval`, so they agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import classification_report, confusion_matrix, precision_recall_fscore_support

from training.checkpoint import Checkpoint
from training.engine import PreparedData
from training.errors import PoketuneError
from training.loop import ArrayLoader, EvalResult, channels_last_for, evaluate

__all__ = ["CheckpointEval", "EvaluationError", "default_device", "evaluate_checkpoint"]


class EvaluationError(PoketuneError):
    """The data cannot evaluate the checkpoint (other classes, no validation images)."""


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@dataclass
class CheckpointEval:
    """A checkpoint's predictions on a validation split, with the sklearn views of them."""

    result: EvalResult
    class_names: list[str]

    @property
    def labels(self) -> np.ndarray:
        return np.arange(len(self.class_names))

    @property
    def macro_f1(self) -> float:
        return self.result.f1

    @property
    def accuracy(self) -> float:
        return self.result.acc

    def per_class(self) -> pd.DataFrame:
        """Index ``class``; columns precision, recall, f1, support."""
        p, r, f, s = precision_recall_fscore_support(
            self.result.y_true, self.result.y_pred, labels=self.labels, zero_division=0
        )
        return pd.DataFrame(
            {"precision": p, "recall": r, "f1": f, "support": s.astype(int)},
            index=pd.Index(self.class_names, name="class"),
        )

    def report(self) -> str:
        """scikit-learn's text classification report."""
        return str(
            classification_report(
                self.result.y_true,
                self.result.y_pred,
                labels=self.labels,
                target_names=self.class_names,
                zero_division=0,
                digits=3,
            )
        )

    def confusion(self) -> np.ndarray:
        """Rows: true class, columns: predicted class (counts)."""
        return np.asarray(confusion_matrix(self.result.y_true, self.result.y_pred, labels=self.labels))


def evaluate_checkpoint(
    ckpt: Checkpoint,
    data: PreparedData,
    *,
    best: bool = True,
    device: torch.device | None = None,
) -> CheckpointEval:
    """``ckpt``'s best (or last) weights on ``data``'s validation split.

    Runs with the checkpoint's own AMP setting, memory format and eval batch size (as
    ``fit`` chose them for this device), so the numbers are the ones the sweep reported for the
    same weights and split.
    """
    if list(data.class_names) != list(ckpt.class_names):
        raise EvaluationError(
            f"the checkpoint was trained on classes {ckpt.class_names}, the data has "
            f"{data.class_names}"
        )
    if len(data.y_val) == 0:
        raise EvaluationError("the data gives an empty validation split")
    device = device or default_device()
    cfg = ckpt.config
    # the kernels training used on this device (AMP dtype, memory format): the same numbers
    channels_last = channels_last_for(device, cfg.model.name)
    model = ckpt.build_model(best=best).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = ArrayLoader(torch.as_tensor(data.x_val), torch.as_tensor(data.y_val), cfg.eval_batch_size)
    result = evaluate(
        model,
        loader,
        device,
        data.preprocessing,
        num_classes=ckpt.num_classes,
        amp=cfg.optim.amp,
        channels_last=channels_last,
    )
    return CheckpointEval(result, list(ckpt.class_names))
