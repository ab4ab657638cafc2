"""Cross-validated training: K stratified folds of one decoded dataset, trained in lockstep.

On a few thousand images one validation split is a noisy judge (a standard error of about
0.03 on val_f1 with ~200 validation images, as large as the differences a sweep ranks), so
``tune --cv K`` trains every trial on K folds and reports, each epoch, the mean over the
folds: ASHA prunes and Optuna learns on that mean. The folds advance one epoch at a time,
together, because a scheduler's decision at epoch ``e`` must see all K folds at ``e``.

They run one after another inside the trial's process, sharing its CPUs (torch's threads
already use them; on 2 cores a second process per fold would only contend). Each fold is a
:class:`~training.engine.Fitter`, the same epoch code ``fit`` runs; this module only
aggregates, judges the mean (early stopping, best epoch) and keeps the out-of-fold
predictions of the best epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score

from training.checkpoint import Checkpoint, CheckpointError, OutOfFold
from training.config import ConfigError, TrainConfig
from training.data import LoadReport, kfold_splits
from training.early_stopping import EarlyStopping
from training.engine import (
    CheckpointSchedule,
    FitResult,
    Fitter,
    LocalReporter,
    PreparedData,
    Reporter,
    prepare_data,
)
from training.features import FeatureStore

__all__ = ["FOLD_METRICS", "CVData", "fit_cv", "prepare_cv_data"]

#: the metrics reported per fold (``val_f1_fold0`` …) and as mean (``val_f1``) and std
#: (``val_f1_std``, numpy's population std like sklearn's ``cross_val_score(...).std()``)
FOLD_METRICS = ("train_loss", "val_loss", "val_f1", "val_acc")


@dataclass
class CVData:
    """Every training image, decoded once, and the K folds' index pairs into it."""

    data: PreparedData  # x_train/y_train/train_ids: all the images; no validation split
    folds: list[tuple[np.ndarray, np.ndarray]]  # (train_idx, val_idx) per fold

    @property
    def k(self) -> int:
        return len(self.folds)

    def fold(self, i: int) -> PreparedData:
        """Fold ``i`` as a train/validation split (copies of the rows: a trial's own memory)."""
        tr, va = self.folds[i]
        d = self.data
        return PreparedData(
            x_train=d.x_train[tr],
            y_train=d.y_train[tr],
            x_val=d.x_train[va],
            y_val=d.y_train[va],
            class_names=list(d.class_names),
            preprocessing=d.preprocessing,
            source_hash=d.source_hash,
            augment_fill=d.augment_fill,
            train_ids=tuple(d.train_ids[j] for j in tr) if d.train_ids else (),
            val_ids=tuple(d.train_ids[j] for j in va) if d.train_ids else (),
            split=f"fold {i + 1} of {self.k}",
        )


def prepare_cv_data(
    root: str | Path, cfg: TrainConfig, k: int, *, cache_dir: str | Path | None = None
) -> tuple[CVData, LoadReport]:
    """Decode (or read from the cache) the training images and cut ``k`` folds with
    ``cfg.seed``; ``data.group_duplicates`` keeps near-duplicate groups inside one fold."""
    data, report = prepare_data(root, cfg, cache_dir=cache_dir, train_on_all=True)
    groups = None
    if cfg.data.group_duplicates:
        from training.data.check import duplicate_groups

        groups = duplicate_groups(root, cfg.data, list(data.train_ids), cache_dir=cache_dir)
    folds = kfold_splits(data.y_train, k, cfg.seed, groups=groups, class_names=data.class_names)
    return CVData(data, folds), report


def _aggregate(fold_metrics: list[dict[str, Any]], k: int) -> dict[str, Any]:
    first = fold_metrics[0]
    out: dict[str, Any] = {"epoch": first["epoch"]}
    for key in FOLD_METRICS:
        values = np.array([m[key] for m in fold_metrics], dtype=float)
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std())
        out.update({f"{key}_fold{i}": float(v) for i, v in enumerate(values)})
    out.update(
        lr=first["lr"],
        epoch_time_s=float(sum(m["epoch_time_s"] for m in fold_metrics)),
        train_images_per_s=float(np.mean([m["train_images_per_s"] for m in fold_metrics])),
        phase=first["phase"],
        features=first["features"],
        feature_extract_s=float(sum(m["feature_extract_s"] for m in fold_metrics)),
        cv_folds=k,
    )
    return out


def _out_of_fold(fitters: list[Fitter], epoch: int) -> OutOfFold:
    """Each fold's validation predictions of the epoch just trained, concatenated."""
    ids: list[str] = []
    labels, probs, fold = [], [], []
    for i, f in enumerate(fitters):
        ev = f.last_eval
        assert ev is not None  # every fold has a validation split
        n = len(ev.y_true)
        ids.extend(f.data.val_ids or [f"{f.data.split}:{j}" for j in range(n)])
        labels.append(torch.as_tensor(np.asarray(ev.y_true), dtype=torch.int64))
        probs.append(torch.as_tensor(np.asarray(ev.probs), dtype=torch.float32))
        fold.append(torch.full((n,), i, dtype=torch.int64))
    return OutOfFold(ids, torch.cat(labels), torch.cat(probs), torch.cat(fold), epoch + 1)


def _cv_checkpoint(
    cfg: TrainConfig,
    data: PreparedData,
    fitters: list[Fitter],
    early: EarlyStopping,
    history: list[dict[str, Any]],
    best_epoch: int,
    oof: OutOfFold | None,
) -> Checkpoint:
    folds = [f.checkpoint() for f in fitters]
    head = folds[0]
    return Checkpoint(
        config=cfg,
        preprocessing=data.preprocessing,
        class_names=list(data.class_names),
        model=head.model,
        best_model=head.best_model,
        epoch=head.epoch,
        best_epoch=best_epoch + 1,
        history=[dict(h) for h in history],
        early_stop=early.state_dict(),
        source_hash=data.source_hash,
        folds=folds,
        oof=oof,
    )


def fit_cv(
    cfg: TrainConfig,
    data: CVData,
    reporter: Reporter | None = None,
    *,
    device: torch.device | None = None,
    features: FeatureStore | None = None,
) -> FitResult:
    """Train ``cfg`` on every fold of ``data`` in lockstep, reporting the folds' mean (and
    std, and each fold's value) every epoch; the checkpoint holds every fold's state and
    the out-of-fold predictions of the best epoch (by the mean of ``early_stop.monitor``).

    Resumes every fold from ``reporter.load_checkpoint()`` when it returns a CV checkpoint.
    Early stopping and the best epoch are judged on the mean, so all folds keep the weights
    of one epoch. Returns fold 0's model; the result's checkpoint is the last one reported.
    """
    reporter = reporter or LocalReporter()
    if reporter.world_size != 1:
        raise ConfigError(
            "cross-validated trials train on one worker (--cv with --workers-per-trial 1)"
        )
    resume = reporter.load_checkpoint()
    if resume is not None and len(resume.folds) != data.k:
        raise CheckpointError(
            f"the trial's checkpoint holds {len(resume.folds)} folds; this run has {data.k} (--cv {data.k})"
        )
    fitters = [
        Fitter(
            cfg,
            data.fold(i),
            resume=resume.folds[i] if resume is not None else None,
            device=device,
            features=features,
            seed_offset=i,
        )
        for i in range(data.k)
    ]
    early = EarlyStopping(cfg.early_stop)
    history: list[dict[str, Any]] = []
    best_epoch, oof = -1, None
    if resume is not None:
        early.load_state_dict(resume.early_stop)
        history, best_epoch, oof = list(resume.history), resume.best_epoch - 1, resume.oof
    lead = fitters[0]
    stopped_early = False
    checkpoint: Checkpoint | None = None
    schedule = CheckpointSchedule(cfg.checkpoint_every_s)
    while not lead.done:
        epoch = lead.epoch
        per_fold = [f.train_epoch() for f in fitters]
        metrics = _aggregate(per_fold, data.k)
        if lead.began_finetune:
            early.bad_epochs = 0  # as fit: fine-tuning gets its own patience
        # the folds' predictions pooled: one macro-F1 over every training image
        pooled = _out_of_fold(fitters, epoch)
        metrics["val_f1_oof"] = float(
            f1_score(
                pooled.labels,
                pooled.probs.argmax(1),
                average="macro",
                labels=range(data.data.num_classes),
                zero_division=0,
            )
        )
        improved = early.update(epoch, metrics)
        if improved:
            best_epoch, oof = epoch, pooled
            for f in fitters:
                f.keep_best()
        stop = not lead.in_head and early.should_stop(epoch)
        metrics["best_val_f1"] = max([h["val_f1"] for h in history] + [metrics["val_f1"]])
        metrics["early_stopped"] = bool(stop)
        for f, m in zip(fitters, per_fold, strict=True):
            f.end_epoch({**m, "early_stopped": bool(stop)})
        history.append(metrics)
        checkpoint = None
        if schedule.due(improved=improved, last=stop or lead.done):
            checkpoint = _cv_checkpoint(cfg, data.data, fitters, early, history, best_epoch, oof)
        reporter.report(metrics, checkpoint)
        if stop:
            stopped_early = True
            break
    models = [f.finish() for f in fitters]
    return FitResult(
        model=models[0],
        history=history,
        best_epoch=best_epoch + 1,
        stopped_early=stopped_early,
        checkpoint=checkpoint,
    )
