"""Cross-validated training: folds, lockstep epochs, the mean, out-of-fold predictions, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.checkpoint import Checkpoint
from training.config import TrainConfig
from training.cv import CVData, fit_cv, prepare_cv_data
from training.data import DataError, kfold_splits
from training.engine import LocalReporter
from training.evaluation import evaluate_checkpoint
from training.tasks import preset_config

K = 3


def _small(**over: object) -> TrainConfig:
    base = {
        "data.image_size": 32,
        "optim.epochs": 2,
        "optim.batch_size": 16,
        "num_threads": 1,
        "model.channels": 8,
        "model.stages": 2,
        "checkpoint_every_s": 0,
    }
    return preset_config("task2", {**base, **over})


@pytest.fixture(scope="module")
def cv_data(task2_data: Path) -> CVData:
    data, _ = prepare_cv_data(task2_data, _small(), K)
    return data


def test_folds_partition_the_images_and_keep_class_shares() -> None:
    y = np.repeat(np.arange(4), [9, 12, 30, 6])
    folds = kfold_splits(y, K, seed=3)
    val = np.concatenate([v for _, v in folds])
    assert sorted(val.tolist()) == list(range(len(y)))  # each image validates exactly once
    for tr, va in folds:
        assert not set(tr) & set(va) and len(tr) + len(va) == len(y)
        # stratified: every class's share of a fold is within one image of a third of it
        counts = np.bincount(y[va], minlength=4)
        assert np.all(np.abs(counts - np.bincount(y) / K) <= 1)
    assert [v.tolist() for _, v in kfold_splits(y, K, seed=3)] == [v.tolist() for _, v in folds]


def test_grouped_folds_never_split_a_group() -> None:
    y = np.repeat(np.arange(3), 12)
    groups = np.arange(len(y)) // 3  # 12 groups of 3 copies, one class each
    for _, va in kfold_splits(y, K, seed=0, groups=groups):
        inside = set(groups[va])
        assert all(set(np.flatnonzero(groups == g)) <= set(va) for g in inside)


def test_a_class_smaller_than_k_is_named() -> None:
    y = np.array([0] * 5 + [1] * 2)
    with pytest.raises(DataError) as err:
        kfold_splits(y, K, seed=0, class_names=["Water", "Fire"])
    assert "Fire (2)" in str(err.value) and "lower --cv" in str(err.value)


def test_fit_cv_reports_the_folds_mean_and_keeps_out_of_fold_predictions(cv_data: CVData) -> None:
    rep = LocalReporter()
    result = fit_cv(_small(), cv_data, rep)
    assert [m["epoch"] for m in rep.history] == [1, 2]
    for m in rep.history:
        folds = [m[f"val_f1_fold{i}"] for i in range(K)]
        assert m["val_f1"] == pytest.approx(np.mean(folds))
        assert m["val_f1_std"] == pytest.approx(np.std(folds))
        assert m["val_loss"] == pytest.approx(np.mean([m[f"val_loss_fold{i}"] for i in range(K)]))
        assert m["cv_folds"] == K
    ckpt = result.checkpoint
    assert ckpt is not None and len(ckpt.folds) == K and ckpt.oof is not None
    best = max(range(2), key=lambda e: rep.history[e]["val_f1"])
    assert ckpt.best_epoch == best + 1 == ckpt.oof.epoch
    # every training image predicted once, by the fold that held it out
    assert sorted(ckpt.oof.ids) == sorted(cv_data.data.train_ids)
    assert len(set(ckpt.oof.ids)) == len(cv_data.data.y_train)
    # ... with that fold's best weights: the one evaluation path gives the same probabilities
    for i, fold_ckpt in enumerate(ckpt.folds):
        assert fold_ckpt.best_epoch == best + 1
        rows = (ckpt.oof.fold == i).numpy()
        fold = cv_data.fold(i)
        assert [ckpt.oof.ids[j] for j in np.flatnonzero(rows)] == list(fold.val_ids)
        ev = evaluate_checkpoint(fold_ckpt, fold, device=torch.device("cpu"))
        np.testing.assert_allclose(ckpt.oof.probs[rows].numpy(), ev.result.probs, atol=1e-5)
        assert rep.history[best][f"val_f1_fold{i}"] == pytest.approx(ev.macro_f1)


def test_cv_checkpoint_roundtrips_and_resume_continues_every_fold(cv_data: CVData, tmp_path: Path) -> None:
    cfg = _small(**{"optim.epochs": 3, "optim.scheduler": "step", "optim.step_size": 1})

    class StopAfter(LocalReporter):
        def report(self, metrics: dict[str, object], checkpoint: Checkpoint | None) -> None:
            super().report(metrics, checkpoint)
            if metrics["epoch"] == 2:
                raise KeyboardInterrupt

    first = StopAfter()
    with pytest.raises(KeyboardInterrupt):
        fit_cv(cfg, cv_data, first)
    assert first.last_checkpoint is not None
    first.last_checkpoint.save(tmp_path)
    saved = Checkpoint.load(tmp_path)  # through the file: folds and predictions survive
    assert [f.epoch for f in saved.folds] == [2] * K and saved.oof is not None
    assert len(saved.members()) == K and all(not m.folds and m.oof is None for m in saved.members())
    torch.testing.assert_close(saved.model, saved.folds[0].model)

    resumed = LocalReporter(resume_from=saved)
    out = fit_cv(cfg, cv_data, resumed)
    assert [m["epoch"] for m in resumed.history] == [3]
    assert resumed.history[0]["lr"] == pytest.approx(cfg.optim.lr * 0.1**2)  # step: every fold's scheduler came back
    assert out.checkpoint is not None and [len(f.history) for f in out.checkpoint.folds] == [3] * K
    assert [h["epoch"] for h in out.checkpoint.history] == [1, 2, 3]


def test_resume_refuses_another_fold_count(cv_data: CVData) -> None:
    rep = LocalReporter()
    fit_cv(_small(**{"optim.epochs": 1}), cv_data, rep)
    two = CVData(cv_data.data, kfold_splits(cv_data.data.y_train, 2, seed=0))
    with pytest.raises(Exception, match="holds 3 folds; this run has 2"):
        fit_cv(_small(**{"optim.epochs": 2}), two, LocalReporter(resume_from=rep.last_checkpoint))


def test_folds_of_one_size_do_not_share_cached_features(task2_data: Path) -> None:
    # frozen-backbone features are cached per data split: folds of equal sizes must not be
    # served each other's validation features
    from torch import nn

    from training.features import FeaturePlan, feature_key

    cfg = _small()
    data, _ = prepare_cv_data(task2_data, cfg, K)
    n_tr, n_va = (min(len(f[j]) for f in data.folds) for j in (0, 1))
    even = CVData(data.data, [(tr[:n_tr], va[:n_va]) for tr, va in data.folds])
    backbone, plan = nn.Linear(2, 2), FeaturePlan(epochs=1, views=0, reason="test")
    keys = {feature_key(cfg, even.fold(i), backbone, plan) for i in range(K)}
    assert len(keys) == K
