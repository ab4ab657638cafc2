"""``tune --cv K``: cross-validated trials through Ray Tune, ASHA on the folds' mean, the
results frame's fold columns, out-of-fold error reports, resume, and retrain of a CV sweep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from asha_check import FROZEN_LR, LEARNING_LR, asha_replay, make_colour_data, trial_order

from training.checkpoint import load_checkpoint
from training.config import ConfigError
from tuning import results
from tuning.sweep import SweepOptions, run_sweep

K = 3
# a learning and a frozen lr: ASHA must stop a frozen trial that follows a learner (the
# reasoning is in tests/asha_check.py); here it must do so on the mean of three folds
SPACE = """
task: task2
asha: {max_epochs: 2, grace_period: 1, reduction_factor: 2}
cv: 3
fixed:
  data.image_size: 16
  model.channels: 8
  model.stages: 2
params:
  optim.lr: {choice: LR_CHOICES}
""".replace("LR_CHOICES", f"[{FROZEN_LR}, {LEARNING_LR}]")
SAMPLES = 4
PLANTED = "red3"  # a red square labelled blue


@pytest.fixture(scope="module")
def cv_sweep(tmp_path_factory: pytest.TempPathFactory, ray_session: None) -> tuple[str, str, Path]:
    tmp = tmp_path_factory.mktemp("cv")
    data = make_colour_data(tmp / "colours", per_class=12)
    labels = pd.read_csv(data / "train.csv")
    labels.loc[labels["id"] == PLANTED, "label"] = "blue"
    labels.to_csv(data / "train.csv", index=False)
    space = tmp / "cv.yaml"
    space.write_text(SPACE)
    storage = str(tmp / "runs")
    # the space's cv: 3, no --cv: the space is enough
    result = run_sweep(SweepOptions(space=str(space), data=str(data), samples=SAMPLES, name="cv",
                                    storage=storage, seed=0, max_concurrent=1))  # fmt: skip
    assert result.best_trial_id is not None
    return "cv", storage, data


def test_every_epoch_reports_the_folds_mean_and_asha_prunes_on_it(cv_sweep: tuple[str, str, Path]) -> None:
    sweep = results.Sweep.open(*cv_sweep[:2])
    assert sweep.meta.cv == K
    hist = sweep.history()
    folds = hist[[f"val_f1_fold{i}" for i in range(K)]].to_numpy()
    np.testing.assert_allclose(hist["val_f1"], folds.mean(axis=1))
    np.testing.assert_allclose(hist["val_f1_std"], folds.std(axis=1))
    # ASHA's rule replayed on the mean: exactly the statuses Tune recorded
    frame = sweep.trials()
    order = trial_order(Path(cv_sweep[1]) / "cv")
    replay = asha_replay(hist, order, max_epochs=2, grace=1, rf=2, metric="val_f1")
    assert any(replay.values()), f"seed 0 no longer runs a frozen trial after a learner: {order}"
    assert dict(zip(frame["trial_id"], frame["status"], strict=True)) == {
        t: "stopped_asha" if e else "completed" for t, e in replay.items()
    }
    # the results frame: the spread and each fold at the trial's best epoch
    best = frame.iloc[0]
    at_best = hist[(hist["trial_id"] == best["trial_id"]) & (hist["epoch"] == best["best_epoch"])].iloc[0]
    for col in ["val_f1_std", "val_f1_oof", *(f"val_f1_fold{i}" for i in range(K))]:
        assert best[col] == pytest.approx(at_best[col]), col


def test_best_trial_keeps_out_of_fold_predictions_for_every_image(cv_sweep: tuple[str, str, Path]) -> None:
    sweep = results.Sweep.open(*cv_sweep[:2])
    best = sweep.best_trial()
    ckpt = load_checkpoint(best["checkpoint"])
    assert len(ckpt.folds) == K and ckpt.oof is not None
    ids = pd.read_csv(cv_sweep[2] / "train.csv")["id"].astype(str)
    assert sorted(ckpt.oof.ids) == sorted(ids)  # each image once
    # every image held out by exactly one fold, the folds a partition
    assert np.bincount(ckpt.oof.fold.numpy(), minlength=K).sum() == len(ids)
    assert ckpt.oof.epoch == best["best_epoch"]


def test_error_report_judges_every_image_and_finds_the_planted_label(
    cv_sweep: tuple[str, str, Path], tmp_path: Path
) -> None:
    from tuning.error_report import build_error_report

    report = build_error_report(results.Sweep.open(*cv_sweep[:2]), tmp_path)
    assert "out-of-fold" in report.source and "all 36 training images" in report.source
    assert report.suspects.iloc[0]["id"] == PLANTED  # held out by whichever fold it fell in
    assert int(report.per_class["support"].sum()) == 36
    oof = pd.read_csv(tmp_path / "out_of_fold.csv")
    assert sorted(oof["id"]) == sorted(pd.read_csv(cv_sweep[2] / "train.csv")["id"])
    assert oof.loc[oof["id"] == PLANTED, "label"].item() == "blue"
    np.testing.assert_allclose(oof[["p_blue", "p_green", "p_red"]].sum(axis=1), 1.0, atol=1e-5)


def test_resume_keeps_the_fold_count(cv_sweep: tuple[str, str, Path]) -> None:
    name, storage, data = cv_sweep
    space = Path(results.Sweep.open(name, storage).meta.space_file)
    with pytest.raises(ConfigError, match=r"--cv 2: sweep .* was started with --cv 3"):
        run_sweep(SweepOptions(space=str(space), data=str(data), name=name, storage=storage, resume=True, cv=2))
    with pytest.raises(ConfigError, match="trains its folds in one process"):
        run_sweep(SweepOptions(space=str(space), data=str(data), samples=1, name="x", storage=storage,
                               workers_per_trial=2))  # fmt: skip


def test_retrain_of_a_cv_sweep(cv_sweep: tuple[str, str, Path]) -> None:
    from tuning.retrain import retrain

    name, storage, _ = cv_sweep
    best = results.Sweep.open(name, storage).best_trial()
    kept = retrain(name, storage, mlflow_uri=None, refit=False)
    # --no-refit: the trial's K fold models, each its own best weights
    assert [m.fold for m in kept.members] == list(range(K))
    trial = load_checkpoint(best["checkpoint"])
    for path, fold in zip(kept.checkpoints, trial.folds, strict=True):
        member = load_checkpoint(path)
        assert not member.folds and member.oof is None
        for key, value in fold.best_weights.items():
            assert (member.model[key] == value).all(), key
    # a refit trains one model on every image, as for any sweep
    refit = retrain(name, storage, mlflow_uri=None)
    assert len(refit.checkpoints) == 1 and refit.members[0].fold is None
    assert load_checkpoint(refit.checkpoints[0]).history[-1]["epoch"] == best["best_epoch"]


def test_report_of_a_cv_sweep(cv_sweep: tuple[str, str, Path], tmp_path: Path) -> None:
    from tuning.report import build_report
    from tuning.validation import ValidationData, evaluate_trial

    sweep = results.Sweep.open(*cv_sweep[:2])
    report = build_report(sweep, tmp_path, pngs=False)
    page = report.html.read_text()
    assert "3-fold cross-validation" in page and "across folds" in page
    # the confusion matrix is drawn from the out-of-fold predictions: every image counted once
    assert report.not_drawn == {}, report.not_drawn
    te, title = evaluate_trial(sweep.best_trial().to_dict(), ValidationData.of(sweep))
    assert te is not None and te.out_of_fold and int(te.eval.confusion().sum()) == 36
    assert title in page[page.index('id="confusion"'):page.index('id="per-class"')]
