"""fit(): metrics every epoch, checkpoints that resume, early stopping, schedulers, phases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from training.checkpoint import Checkpoint, CheckpointError, load_checkpoint, without_head
from training.config import ConfigError, TrainConfig
from training.early_stopping import EarlyStopping
from training.engine import LocalReporter, PreparedData, fit, prepare_data
from training.tasks import preset_config

METRICS = {"epoch", "train_loss", "val_loss", "val_f1", "val_acc", "lr", "epoch_time_s"}


def _small(task: str, **over: object) -> TrainConfig:
    base = {"data.image_size": 32, "optim.epochs": 2, "optim.batch_size": 16, "num_threads": 1}
    if task == "task2":
        base.update({"model.channels": 8, "model.stages": 2})
    return preset_config(task, {**base, **over})


@pytest.fixture(scope="module")
def task2_prepared(task2_data: Path) -> PreparedData:
    data, _ = prepare_data(task2_data, _small("task2"))
    return data


def test_fit_reports_every_metric_each_epoch_and_learns(task2_prepared: PreparedData) -> None:
    rep = LocalReporter()
    result = fit(_small("task2", **{"optim.epochs": 3}), task2_prepared, rep)
    assert [m["epoch"] for m in rep.history] == [1, 2, 3]
    for m in rep.history:
        assert set(m) >= METRICS
        assert 0 <= m["val_f1"] <= 1 and m["train_loss"] > 0 and not math.isnan(m["val_loss"])
    assert rep.history[-1]["train_loss"] < rep.history[0]["train_loss"]
    ckpt = result.checkpoint
    assert ckpt is not None and ckpt.epoch == 3
    assert ckpt.class_names == task2_prepared.class_names
    assert ckpt.preprocessing.rgba == "keep"
    assert ckpt.config.optim.epochs == 3


def test_checkpoint_roundtrips_through_the_file(task2_prepared: PreparedData, tmp_path: Path) -> None:
    """What fit hands the reporter is what a reader gets back from disk (weights_only)."""
    rep = LocalReporter(out_dir=tmp_path)
    cfg = _small("task2", **{"optim.epochs": 2, "checkpoint_every_s": 0})
    result = fit(cfg, task2_prepared, rep)
    sent = rep.last_checkpoint
    assert sent is not None and sent is result.checkpoint
    back = load_checkpoint(tmp_path)
    assert back.config == cfg and back.preprocessing == task2_prepared.preprocessing
    assert back.class_names == task2_prepared.class_names
    assert (back.epoch, back.best_epoch) == (2, sent.best_epoch)
    assert back.history == sent.history and len(back.history) == 2
    assert back.source_hash == task2_prepared.source_hash
    assert back.model.keys() == sent.model.keys()
    for k, v in sent.model.items():
        assert torch.equal(back.model[k], v)
    assert back.best_model is not None and sent.best_model is not None
    for k, v in sent.best_model.items():
        assert torch.equal(back.best_model[k], v)
    # the optimizer state restores into a fresh optimizer (Adam's moments came through)
    assert back.optimizer["state"] and back.early_stop == sent.early_stop
    # and the model it builds predicts like the one fit trained (last weights)
    x = torch.randn(3, 4, 32, 32)
    trained = result.model.eval()
    with torch.no_grad():
        if cfg.early_stop.restore_best:
            torch.testing.assert_close(back.build_model()(x), trained(x))
        else:
            torch.testing.assert_close(back.build_model(best=False)(x), trained(x))


def test_resume_continues_at_next_epoch_with_same_result(task2_prepared: PreparedData) -> None:
    cfg = _small("task2", **{"optim.epochs": 3, "optim.scheduler": "step", "optim.step_size": 1,
                             "checkpoint_every_s": 0})
    full = LocalReporter()
    fit(cfg, task2_prepared, full)

    first = LocalReporter()
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, task2_prepared, _StopAfter(first, 2))
    assert first.last_checkpoint is not None and first.last_checkpoint.epoch == 2
    resumed = LocalReporter(resume_from=first.last_checkpoint)
    fit(cfg, task2_prepared, resumed)
    assert [m["epoch"] for m in resumed.history] == [3]
    # the scheduler state came back: epoch 3's lr is the full run's epoch 3 lr
    assert resumed.history[0]["lr"] == pytest.approx(full.history[2]["lr"])
    assert resumed.last_checkpoint is not None and len(resumed.last_checkpoint.history) == 3


class _CheckpointLog(LocalReporter):
    def __init__(self) -> None:
        super().__init__()
        self.saved: list[int] = []

    def report(self, metrics: dict[str, object], checkpoint: Checkpoint | None) -> None:
        super().report(metrics, checkpoint)
        if checkpoint is not None:
            self.saved.append(int(metrics["epoch"]))  # type: ignore[call-overload]


def test_checkpoints_keep_best_and_last_epochs_between_intervals(task2_prepared: PreparedData) -> None:
    every = _CheckpointLog()
    fit(_small("task2", **{"optim.epochs": 5, "checkpoint_every_s": 0}), task2_prepared, every)
    assert every.saved == [1, 2, 3, 4, 5]

    rarely = _CheckpointLog()
    result = fit(_small("task2", **{"optim.epochs": 5, "checkpoint_every_s": 3600}), task2_prepared, rarely)
    f1 = [m["val_f1"] for m in rarely.history]
    improved = [i + 1 for i, v in enumerate(f1) if i == 0 or v > max(f1[:i])]
    assert rarely.saved == sorted({*improved, 5}) and len(rarely.saved) < 5, f1
    # what retrain and submit read is complete: the last state and the best weights
    assert result.checkpoint is not None and result.checkpoint.epoch == 5
    assert result.checkpoint.best_epoch == improved[-1]


def test_a_deadline_ends_the_fit_after_the_last_epoch_that_fits(
    task2_prepared: PreparedData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a clock that ticks 1 s per reading (3 readings an epoch: start, trained,
    reported), each epoch trains 1 s and reports 1 s. A deadline at 10 s: after epoch 1 the
    next would end at 2 + 1 (no report timed yet), after epoch 2 at 5 + 3 = 8, after epoch
    3 at 8 + 3 = 11 > 10, so epoch 3 is the last of the 8 asked, and its state is
    checkpointed though checkpoints are otherwise rare. No deadline: every epoch asked."""
    import functools
    import itertools

    import training.engine as engine
    from training.deadline import Deadline

    ticks = itertools.count(1)
    monkeypatch.setattr(engine, "Deadline", functools.partial(Deadline, clock=lambda: float(next(ticks))))
    rarely = _CheckpointLog()
    cfg = _small("task2", **{"optim.epochs": 8, "checkpoint_every_s": 3600})
    result = fit(cfg, task2_prepared, rarely, deadline=10.0)
    assert [m["epoch"] for m in rarely.history] == [1, 2, 3]
    assert result.stopped_by_deadline and not result.stopped_early
    assert result.checkpoint is not None and result.checkpoint.epoch == 3 and rarely.saved[-1] == 3
    # the first epoch always runs, even past the deadline
    once = fit(cfg, task2_prepared, LocalReporter(), deadline=0.0)
    assert len(once.history) == 1 and once.stopped_by_deadline
    free = fit(cfg.replace(**{"optim.epochs": 4}), task2_prepared, LocalReporter())
    assert len(free.history) == 4 and not free.stopped_by_deadline


class _StopAfter:
    """A reporter that interrupts training after ``n`` epochs (like a killed worker)."""

    def __init__(self, inner: LocalReporter, n: int) -> None:
        self.inner, self.n = inner, n
        self.rank, self.world_size = 0, 1

    def report(self, metrics: dict, checkpoint: Checkpoint | None) -> None:
        self.inner.report(metrics, checkpoint)
        if metrics["epoch"] >= self.n:
            raise KeyboardInterrupt

    def load_checkpoint(self) -> None:
        return None


def test_fit_interrupted_by_reporter_keeps_last_checkpoint(task2_prepared: PreparedData) -> None:
    rep = LocalReporter()
    with pytest.raises(KeyboardInterrupt):
        fit(_small("task2", **{"optim.epochs": 3}), task2_prepared, _StopAfter(rep, 1))
    assert rep.last_checkpoint is not None and rep.last_checkpoint.epoch == 1


def test_early_stopping_patience_and_start_epoch() -> None:
    es = EarlyStopping(TrainConfig().early_stop.__class__(patience=2, start_epoch=4))
    values = [0.5, 0.6, 0.55, 0.55, 0.55, 0.55]
    stops = []
    for epoch, v in enumerate(values):
        es.update(epoch, {"val_f1": v, "val_acc": v, "val_loss": 1 - v})
        stops.append(es.should_stop(epoch))
    # bad epochs reach 2 at epoch index 3, but no stop before epoch 4 (1-based)
    assert stops == [False, False, False, True, True, True]
    assert es.best_epoch == 1


def test_early_stopping_seed_rule_f1_window() -> None:
    cfg = TrainConfig().early_stop.__class__(f1_window=5, f1_tol=0.02)
    es = EarlyStopping(cfg)
    for epoch, v in enumerate([0.3, 0.5, 0.70, 0.705, 0.70, 0.71, 0.705]):
        es.update(epoch, {"val_f1": v, "val_acc": v, "val_loss": 1 - v})
    assert es.should_stop(6)  # the last five moved < 2 %
    es2 = EarlyStopping(cfg)
    for epoch, v in enumerate([0.3, 0.5, 0.6, 0.65, 0.7]):
        es2.update(epoch, {"val_f1": v, "val_acc": v, "val_loss": 1 - v})
    assert not es2.should_stop(4)


def test_fit_stops_early_and_restores_best(task2_prepared: PreparedData) -> None:
    # lr so small nothing improves after epoch 1: patience 1 stops at epoch 2
    cfg = _small(
        "task2",
        **{"optim.epochs": 5, "optim.lr": 1e-9, "early_stop.patience": 1, "early_stop.min_delta": 0.5},
    )
    rep = LocalReporter()
    result = fit(cfg, task2_prepared, rep)
    assert result.stopped_early and len(rep.history) == 2
    assert rep.history[-1]["early_stopped"] is True
    assert result.best_epoch == 1
    assert rep.last_checkpoint is not None
    best = rep.last_checkpoint.best_model
    assert best is not None
    for k, v in result.model.state_dict().items():
        assert torch.equal(v.cpu(), best[k])


@pytest.mark.parametrize("scheduler", ["step", "cosine", "plateau", "none"])
def test_schedulers_change_lr_as_configured(task2_prepared: PreparedData, scheduler: str) -> None:
    cfg = _small(
        "task2",
        **{"optim.epochs": 3, "optim.scheduler": scheduler, "optim.step_size": 1, "optim.step_gamma": 0.5,
           "optim.plateau_patience": 0, "optim.plateau_factor": 0.5, "optim.lr": 1e-3},
    )
    rep = LocalReporter()
    fit(cfg, task2_prepared, rep)
    lrs = [m["lr"] for m in rep.history]
    if scheduler == "step":
        assert lrs == pytest.approx([1e-3, 5e-4, 2.5e-4])
    elif scheduler == "cosine":
        assert lrs[0] == pytest.approx(1e-3) and lrs[1] < lrs[0] and lrs[2] < lrs[1]
    elif scheduler == "none":
        assert lrs == pytest.approx([1e-3] * 3)
    else:
        assert lrs[0] == pytest.approx(1e-3) and min(lrs) <= 1e-3


def test_train_on_all_has_no_val_and_still_checkpoints(task2_data: Path) -> None:
    cfg = _small("task2", **{"optim.epochs": 1})
    data, _ = prepare_data(task2_data, cfg, train_on_all=True)
    assert len(data.y_val) == 0
    rep = LocalReporter()
    result = fit(cfg, data, rep)
    assert math.isnan(rep.history[0]["val_f1"]) and result.checkpoint is not None


def _learned(state: dict[str, torch.Tensor]) -> list[str]:
    """The keys an optimizer moves (BatchNorm's running statistics move by forward passes)."""
    return [k for k in state if "running_" not in k and "num_batches" not in k]


def test_a_warm_start_begins_at_the_given_weights_with_a_fresh_run(task2_prepared: PreparedData) -> None:
    """``fit(init_weights=W)`` starts from W, the head included, at epoch 1: at a learning rate
    of ~0 one epoch leaves every learned weight at W, where the same fit without W does not
    come near them; weights of another shape are an error naming where they came from."""
    trained = fit(_small("task2"), task2_prepared).model.state_dict()
    still = _small("task2", **{"optim.epochs": 1, "optim.lr": 1e-12})
    rep = LocalReporter()
    warm = fit(still, task2_prepared, rep, init_weights=trained)
    assert [m["epoch"] for m in rep.history] == [1]
    assert warm.checkpoint is not None and warm.checkpoint.optimizer["state"]  # a fresh, stepped optimizer
    for key in _learned(trained):
        torch.testing.assert_close(warm.checkpoint.model[key], trained[key], atol=1e-6, rtol=0)
    cold = fit(still, task2_prepared, LocalReporter()).model.state_dict()
    assert any(not torch.allclose(cold[k], trained[k], atol=1e-3) for k in _learned(trained))
    wider = fit(_small("task2", **{"optim.epochs": 1, "model.channels": 16}), task2_prepared).model.state_dict()
    with pytest.raises(CheckpointError, match=r"the initial weights: .*shape mismatches"):
        fit(still, task2_prepared, LocalReporter(), init_weights=wider)
    # every weight but the head's (retrain --from-trial-weights backbone): the body starts from W,
    # the head from the seeded initialisation the cold fit had
    body = without_head(trained)
    assert body and len(body) < len(trained)
    fresh_head = fit(still, task2_prepared, LocalReporter(), init_weights=body).model.state_dict()
    for key in _learned(trained):
        expected = cold[key] if key.startswith("head.") else trained[key]
        torch.testing.assert_close(fresh_head[key], expected, atol=1e-6, rtol=0)
    assert any(not torch.allclose(cold[k], trained[k], atol=1e-3) for k in _learned(trained) if k.startswith("head."))
    part = {k: v for k, v in trained.items() if k != "head.1.bias"}  # a head, but not all of it
    with pytest.raises(CheckpointError, match=r"the initial weights: .*missing keys \(1\): head.1.bias"):
        fit(still, task2_prepared, LocalReporter(), init_weights=part)


def test_channel_mismatch_is_a_clear_error(task2_prepared: PreparedData) -> None:
    with pytest.raises(ConfigError, match="channels"):
        fit(_small("task2", **{"data.rgba": "composite"}), task2_prepared, LocalReporter())


def test_split_is_stratified_and_seeded(task2_data: Path) -> None:
    a, _ = prepare_data(task2_data, _small("task2"))
    b, _ = prepare_data(task2_data, _small("task2"))
    assert np.array_equal(a.y_val, b.y_val)
    assert set(np.unique(a.y_val)) == set(range(9))


@pytest.mark.parametrize(("has_val", "monitor", "cuts"), [(False, "val_f1", False), (True, "val_f1", True), (True, "val_loss", False)])
def test_plateau_direction_follows_what_it_watches(has_val: bool, monitor: str, cuts: bool) -> None:
    """Without validation the plateau scheduler steps on train_loss: falling values are
    improvements ("min") whatever the monitor says; with validation the monitor decides."""
    from training.engine import _Phases
    from training.models import build_model

    cfg = _small("task2", **{"optim.scheduler": "plateau", "optim.plateau_patience": 0,
                             "optim.plateau_factor": 0.5, "early_stop.monitor": monitor})
    model = build_model(cfg.model, in_channels=4, num_classes=9, image_size=32)
    phases = _Phases(cfg, model, has_val=has_val)
    phases.enter(0)
    lr0 = phases.optimizer.param_groups[0]["lr"]
    for value in (1.0, 0.8, 0.6):  # a falling series: a loss improving, an F1 getting worse
        phases.scheduler.step(value)
    lr = phases.optimizer.param_groups[0]["lr"]
    assert (lr < lr0) is cuts, (lr0, lr)
