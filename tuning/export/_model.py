"""A trial's model and evaluation artifacts: the best weights as the same ``mlflow.pyfunc``
model a retrain registers (:func:`tuning._mlflow.log_model`, one member), the validation
confusion matrix, the learning curves and the classification report."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import classification_report

from training.checkpoint import CHECKPOINT_FILE, Checkpoint
from training.data import Preprocessing, normalize_batch
from training.engine import PreparedData
from training.evaluation import CheckpointEval, evaluate_checkpoint
from tuning._mlflow import MODEL_ARTIFACT, log_model
from tuning.validation import ValidationData, confusion_png

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "CHECKPOINT_ARTIFACT",
    "learning_curve_figure",
    "log_trial_model",
]

log = logging.getLogger("poketune")

#: where a trial's raw checkpoint goes in its run
CHECKPOINT_ARTIFACT = f"checkpoint/{CHECKPOINT_FILE}"
#: images in the model's input example
_EXAMPLE_IMAGES = 2


def learning_curve_figure(history: pd.DataFrame, metric: str, maximize: bool, out: Path) -> None:
    """Train/val loss and the validation metrics per epoch, the best epoch marked."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, score_ax = fig.subplots(1, 2)
    epochs = history["step"]
    for key in ("train_loss", "val_loss"):
        if key in history:
            loss_ax.plot(epochs, history[key], marker="o", label=key)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    for key in dict.fromkeys(("val_f1", "val_acc", metric)):
        if key in history and key != "val_loss":
            score_ax.plot(epochs, history[key], marker="o", label=key)
    if metric in history and history[metric].notna().any():
        best = history.loc[history[metric].idxmax() if maximize else history[metric].idxmin()]
        score_ax.axvline(best["step"], color="grey", linestyle=":", label=f"best epoch {int(best['step'])}")
    score_ax.set(xlabel="epoch", title="validation")
    for ax in (loss_ax, score_ax):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.savefig(out, dpi=100)


def _write_report(ev: CheckpointEval, folder: Path) -> None:
    (folder / "classification_report.txt").write_text(ev.report())
    report = classification_report(
        ev.result.y_true, ev.result.y_pred, labels=ev.labels, target_names=ev.class_names,
        zero_division=0, output_dict=True,
    )
    (folder / "classification_report.json").write_text(json.dumps(report, indent=2))


def _example(data: PreparedData | None, prep: Preprocessing, size: int) -> np.ndarray:
    """The float normalised N×C×H×W batch the model takes (what the signature describes)."""
    if data is not None and len(data.x_val) >= _EXAMPLE_IMAGES:
        raw = torch.as_tensor(data.x_val[:_EXAMPLE_IMAGES])
    else:
        raw = torch.full((_EXAMPLE_IMAGES, prep.channels, size, size), 128, dtype=torch.uint8)
    return normalize_batch(raw, prep).numpy()


def _delete_old_models(client: MlflowClient, experiment_id: str, run_id: str) -> None:
    """Re-logging a trial's model (it trained further since the last export) replaces it."""
    old = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
    for m in old:
        if m.name == MODEL_ARTIFACT:
            client.delete_logged_model(m.model_id)


def log_trial_model(
    client: MlflowClient,
    experiment_id: str,
    run_id: str,
    checkpoint_dir: Path,
    ckpt: Checkpoint,
    history: pd.DataFrame,
    metric: str,
    maximize: bool,
    val: ValidationData,
) -> None:
    """Log the checkpoint's best model, its evaluation artifacts and the raw checkpoint
    (``ckpt`` is the loaded ``checkpoint_dir/checkpoint.pt``)."""
    import mlflow

    cfg, prep = ckpt.config, ckpt.preprocessing
    data = val.get(cfg)
    with tempfile.TemporaryDirectory(prefix="poketune-export-") as tmp:
        folder = Path(tmp)
        if data is not None and len(data.y_val):
            ev = evaluate_checkpoint(ckpt, data)
            confusion_png(ev, folder / "confusion_matrix.png", "validation, best weights")
            _write_report(ev, folder)
        if len(history):
            learning_curve_figure(history, metric, maximize, folder / "learning_curve.png")
        (folder / "config.json").write_text(
            json.dumps({"config": cfg.to_flat(), "class_names": ckpt.class_names,
                        "preprocessing": prep.to_dict(), "best_epoch": ckpt.best_epoch,
                        "epoch": ckpt.epoch}, indent=2, default=str)
        )
        (folder / "checkpoint").mkdir()
        shutil.copy2(checkpoint_dir / CHECKPOINT_FILE, folder / CHECKPOINT_ARTIFACT)
        client.log_artifacts(run_id, str(folder))
    example = _example(data, prep, cfg.data.image_size)
    _delete_old_models(client, experiment_id, run_id)
    with tempfile.TemporaryDirectory(prefix="poketune-export-model-") as tmp:
        member = ckpt.for_inference().save(Path(tmp))
        # log_model needs the fluent API's active run; the caller sets the run's real status after
        with mlflow.start_run(run_id=run_id):
            log_model([member], preprocessing=prep, class_names=ckpt.class_names, example=example)
