"""A sweep's validation split, rebuilt after the sweep, and a trial's best weights evaluated
on it: what ``export`` and ``report`` draw their confusion matrices and per-class F1 from
(through :func:`training.evaluation.evaluate_checkpoint`, the one evaluation path)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.checkpoint import CHECKPOINT_FILE, Checkpoint, CheckpointError
from training.config import TrainConfig
from training.engine import PreparedData, prepare_data
from training.evaluation import CheckpointEval, evaluate_checkpoint
from training.loop import EvalResult

if TYPE_CHECKING:
    from tuning.results import Sweep

__all__ = ["TrialEvaluation", "ValidationData", "checkpoint_dir", "confusion_png", "evaluate_trial"]


@dataclass
class ValidationData:
    """The sweep's validation splits, rebuilt on demand and shared by the evaluated trials.

    Trials that share decode settings and seed share a split; the data cache makes the
    rebuild cheap. A missing data folder only costs the evaluation artifacts.
    """

    root: str
    data_hash: str | None
    cache_dir: str | None = None
    warnings: list[str] = field(default_factory=list)
    _splits: dict[str, PreparedData | None] = field(default_factory=dict)

    @classmethod
    def of(cls, sweep: Sweep) -> ValidationData:
        """The data the sweep trained on, where its metadata says it was."""
        return cls(root=sweep.meta.data, data_hash=sweep.meta.data_hash, cache_dir=sweep.meta.options.get("cache_dir"))

    def get(self, cfg: TrainConfig, *, every_image: bool = False) -> PreparedData | None:
        """The split ``cfg`` trained on; ``every_image``: all training images (in x_train),
        for a cross-validated trial's out-of-fold predictions."""
        flat = cfg.to_flat()
        key = json.dumps(
            {k: v for k, v in flat.items() if k.startswith("data.") or k == "seed"} | {"all": every_image},
            sort_keys=True,
            default=str,
        )
        if key not in self._splits:
            self._splits[key] = self._prepare(cfg, every_image)
        return self._splits[key]

    def _prepare(self, cfg: TrainConfig, every_image: bool) -> PreparedData | None:
        try:
            data, _ = prepare_data(self.root, cfg, cache_dir=self.cache_dir, train_on_all=every_image)
        except (OSError, ValueError) as exc:
            self.warnings.append(f"no validation artifacts: cannot load the sweep's data {self.root} ({exc})")
            return None
        if self.data_hash and data.source_hash != self.data_hash:
            self.warnings.append(
                f"the data at {self.root} changed since the sweep (hash {data.source_hash}, sweep "
                f"{self.data_hash}); confusion matrices and reports use the data as it is now"
            )
        return data


def checkpoint_dir(row: dict[str, Any]) -> Path | None:
    """A trial's checkpoint folder here, from its :meth:`Sweep.trials` row (the recorded path
    may be on the cluster's storage; the trial folder of this copy is searched then)."""
    recorded = row.get("checkpoint")
    if isinstance(recorded, str) and (Path(recorded) / CHECKPOINT_FILE).is_file():
        return Path(recorded)
    trial_dir = Path(str(row.get("trial_dir", "")))
    found = sorted(trial_dir.glob(f"checkpoint_*/{CHECKPOINT_FILE}")) if trial_dir.is_dir() else []
    return found[-1].parent if found else None


@dataclass
class TrialEvaluation:
    """A trial's best weights on its validation split, and that split (its images and ids)."""

    eval: CheckpointEval
    data: PreparedData  # x_val/y_val/val_ids: the judged images, row for row with ``eval``
    title: str  # "trial ID, best weights (epoch N)"
    #: a ``--cv`` trial: every training image, each predicted by the fold that held it out
    out_of_fold: bool = False


def evaluate_trial(row: dict[str, Any], val: ValidationData) -> tuple[TrialEvaluation | None, str]:
    """The trial's best weights on its validation split, or None and why not."""
    folder = checkpoint_dir(row)
    if folder is None:
        return None, f"trial {row.get('trial_id')} has no checkpoint in {row.get('trial_dir')}"
    try:
        ckpt = Checkpoint.load(folder)
    except CheckpointError as exc:
        return None, f"trial {row.get('trial_id')}: cannot read {folder} ({exc})"
    if ckpt.oof is not None:
        return _out_of_fold(row, ckpt, val)
    data = val.get(ckpt.config)
    if data is None or not len(data.y_val):
        return None, val.warnings[-1] if val.warnings else f"no validation images in {val.root}"
    title = f"trial {row.get('trial_id')}, best weights (epoch {ckpt.best_epoch})"
    return TrialEvaluation(evaluate_checkpoint(ckpt, data), data, title), title


def _out_of_fold(row: dict[str, Any], ckpt: Checkpoint, val: ValidationData) -> tuple[TrialEvaluation | None, str]:
    """A cross-validated trial's out-of-fold predictions, judged against every training image."""
    assert ckpt.oof is not None
    oof = ckpt.oof
    data = val.get(ckpt.config, every_image=True)
    if data is None:
        return None, val.warnings[-1]
    where = {i: n for n, i in enumerate(data.train_ids)}
    missing = [i for i in oof.ids if i not in where]
    if missing or not oof.ids:
        return None, f"trial {row.get('trial_id')}: {len(missing)} out-of-fold images are not in {val.root} now"
    order = np.array([where[i] for i in oof.ids])
    held_out = dataclasses.replace(
        data, x_val=data.x_train[order], y_val=data.y_train[order], val_ids=tuple(oof.ids)
    )
    result = EvalResult.from_probs(oof.probs, oof.labels, ckpt.num_classes)
    title = f"trial {row.get('trial_id')}, out-of-fold predictions of its {len(ckpt.folds)} folds (epoch {oof.epoch})"
    return TrialEvaluation(CheckpointEval(result, list(ckpt.class_names)), held_out, title, out_of_fold=True), title


def confusion_png(ev: CheckpointEval, out: Path, title: str) -> None:
    """The confusion matrix as a PNG (matplotlib; rows: true class)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(6.0, 0.6 * len(ev.class_names) + 2)
    fig = Figure(figsize=(size, size), layout="constrained")
    ax = fig.subplots()
    ConfusionMatrixDisplay(ev.confusion(), display_labels=ev.class_names).plot(ax=ax, colorbar=False, xticks_rotation=45)
    ax.set_title(f"{title} (macro F1 {ev.macro_f1:.3f})")
    fig.savefig(out, dpi=100)
