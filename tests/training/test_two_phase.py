"""Two-phase fine-tuning in ``fit``: head-only epochs with the backbone frozen, then the last
``model.freeze_depth`` stages unfreeze at ``optim.finetune_lr``; early stopping and the plateau
scheduler around it (the CIFAR-10 transfer study's schedule, on a tiny random-init ResNet-18)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

import training.engine as engine
from training.checkpoint import Checkpoint, build_model_for
from training.config import TrainConfig
from training.data import cifar
from training.engine import LocalReporter, PreparedData, fit, prepare_data
from training.tasks import preset_config

# resnet18's freeze units: stem, layer1..layer4; freeze_depth=2 trains layer3 + layer4
FROZEN = ("backbone.conv1.", "backbone.bn1.", "backbone.layer1.", "backbone.layer2.")
UNFROZEN = ("backbone.layer3.", "backbone.layer4.")


@pytest.fixture(scope="module")
def cifar_data(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    root = tmp_path_factory.mktemp("cifar")
    folder = cifar.write_cifar10_batches(root, per_class=4, test_per_class=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cifar, "EXPECTED_MD5", cifar.file_md5s(folder))
        data, _ = prepare_data(root, _cfg())
    return data


def _cfg(**over: Any) -> TrainConfig:
    """The study's transfer preset, shrunk: resnet18 at 32 px, random init, 2 + 2 epochs."""
    base = {
        "model.name": "resnet18",
        "model.pretrained": False,
        "model.freeze_depth": 2,
        "data.image_size": 32,
        "optim.head_epochs": 2,
        "optim.epochs": 4,
        "optim.lr": 1e-3,
        "optim.finetune_lr": 1e-4,
        "optim.batch_size": 32,
        "early_stop.patience": 0,
        "num_threads": 1,
        # these tests watch the live backbone's phases; the cached-feature head phase has its
        # own tests (test_features.py)
        "features.cache": False,
    }
    return preset_config("cifar10_transfer", {**base, **over})


class _Spy:
    """Wraps ``train_one_epoch``: which parameters train, at which lr, in each epoch."""

    def __init__(self) -> None:
        self.trainable: list[set[str]] = []
        self.optimized: list[int] = []
        self.lrs: list[float] = []
        self._real = engine.train_one_epoch

    def __call__(self, model: nn.Module, loader: Any, criterion: Any, optimizer: Any, *a: Any, **kw: Any) -> Any:
        self.trainable.append({n for n, p in model.named_parameters() if p.requires_grad})
        self.optimized.append(sum(p.numel() for g in optimizer.param_groups for p in g["params"]))
        self.lrs.append(optimizer.param_groups[0]["lr"])
        return self._real(model, loader, criterion, optimizer, *a, **kw)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Spy]:
    s = _Spy()
    monkeypatch.setattr(engine, "train_one_epoch", s)
    yield s


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> set[str]:
    """Keys under ``prefixes`` (parameters *and* BatchNorm buffers) whose values differ."""
    return {k for k in a if k.startswith(prefixes) and not torch.equal(a[k], b[k])}


def _under(keys: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> set[str]:
    return {k for k in keys if k.startswith(prefixes)}


def test_backbone_frozen_during_head_epochs_then_last_stages_unfreeze(
    cifar_data: PreparedData, spy: _Spy
) -> None:
    cfg = _cfg()
    torch.manual_seed(cfg.seed)  # fit seeds the same way before building: same initial weights
    init = {k: v.clone() for k, v in build_model_for(cfg, 10).state_dict().items()}
    rep = LocalReporter()
    fit(cfg, cifar_data, rep)
    states = [init] + [c.model for c in _checkpoints(rep)]  # weights after each epoch

    # which parameters train, and with what lr, per epoch
    head = spy.trainable[0]
    assert head and all(n.startswith("head.") for n in head)
    assert spy.trainable[1] == head
    for ep in (2, 3):
        assert {n for n in spy.trainable[ep] if not n.startswith("head.")} == {
            n for n in init if n.startswith(UNFROZEN) and "running" not in n and "num_batches" not in n
        }
    assert spy.optimized[0] == spy.optimized[1] < spy.optimized[2] == spy.optimized[3]
    assert spy.lrs == [1e-3, 1e-3, 1e-4, 1e-4]
    assert [m["lr"] for m in rep.history] == spy.lrs
    assert [m["phase"] for m in rep.history] == ["head", "head", "finetune", "finetune"]

    # the weights themselves: nothing in the backbone moves in the head phase (BatchNorm
    # statistics included), the head does; afterwards only the unfrozen stages move
    everything = ("backbone.",)
    for ep in (1, 2):
        assert not _changed(states[ep - 1], states[ep], everything), f"backbone moved in epoch {ep}"
        assert _changed(states[ep - 1], states[ep], ("head.",))
    for ep in (3, 4):
        assert not _changed(states[ep - 1], states[ep], FROZEN), f"frozen stage moved in epoch {ep}"
        moved = _changed(states[ep - 1], states[ep], UNFROZEN)
        assert moved == _under(init, UNFROZEN)  # every weight and BN buffer of layer3/layer4


def _checkpoints(rep: LocalReporter) -> list[dict[str, Any]]:
    return rep.checkpoints  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(autouse=True)
def keep_every_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """LocalReporter keeps only the last checkpoint; the tests want one per epoch."""
    real = LocalReporter.report

    def report(self: LocalReporter, metrics: dict[str, Any], checkpoint: Checkpoint | None) -> None:
        if not hasattr(self, "checkpoints"):
            self.checkpoints = []  # type: ignore[attr-defined]
        if checkpoint is not None:
            self.checkpoints.append(checkpoint)  # type: ignore[attr-defined]
        real(self, metrics, checkpoint)

    monkeypatch.setattr(LocalReporter, "report", report)


def test_all_stages_unfreeze_with_depth_minus_one(cifar_data: PreparedData, spy: _Spy) -> None:
    cfg = _cfg(**{"model.freeze_depth": -1, "optim.head_epochs": 1, "optim.epochs": 2})
    model = fit(cfg, cifar_data, LocalReporter()).model
    assert spy.trainable[1] == {n for n, _ in model.named_parameters()}


def test_finetune_lr_defaults_to_lr(cifar_data: PreparedData, spy: _Spy) -> None:
    cfg = _cfg(**{"optim.finetune_lr": None, "optim.head_epochs": 1, "optim.epochs": 2})
    fit(cfg, cifar_data, LocalReporter())
    assert spy.lrs == [1e-3, 1e-3]
    assert spy.optimized[0] < spy.optimized[1]  # still a new phase: more parameters train


def test_early_stopping_restores_the_best_weights(cifar_data: PreparedData) -> None:
    # a huge fine-tune lr wrecks the model: val_loss gets worse, patience 1 stops the run and
    # the returned model is the best epoch's, not the last one's
    cfg = _cfg(
        **{
            "optim.head_epochs": 2,
            "optim.epochs": 8,
            "optim.finetune_lr": 1.0,
            "optim.scheduler": "none",
            "model.freeze_depth": -1,
            "early_stop.patience": 1,
        }
    )
    rep = LocalReporter()
    result = fit(cfg, cifar_data, rep)
    assert result.stopped_early and len(rep.history) < 8
    losses = [m["val_loss"] for m in rep.history]
    assert result.best_epoch == 1 + losses.index(min(losses))
    assert result.best_epoch < len(rep.history)
    ckpt = _checkpoints(rep)[-1]
    best, last = ckpt.best_model, ckpt.model
    assert best is not None
    assert ckpt.best_epoch == result.best_epoch
    final = result.model.state_dict()
    assert all(torch.equal(final[k].cpu(), best[k]) for k in best)
    assert any(not torch.equal(best[k], last[k]) for k in best)


def test_head_phase_is_not_cut_short_and_finetuning_gets_its_own_patience(
    cifar_data: PreparedData,
) -> None:
    # min_delta so large that nothing after epoch 1 counts as an improvement: patience 1 alone
    # would stop after epoch 2, inside the head phase, and fine-tuning would never start
    cfg = _cfg(
        **{
            "optim.head_epochs": 3,
            "optim.epochs": 8,
            "early_stop.patience": 1,
            "early_stop.min_delta": 100.0,
        }
    )
    rep = LocalReporter()
    result = fit(cfg, cifar_data, rep)
    assert [m["phase"] for m in rep.history] == ["head"] * 3 + ["finetune"]
    assert result.stopped_early and rep.history[-1]["early_stopped"]
    assert result.best_epoch == 1


def test_study_preset_schedule() -> None:
    cfg = preset_config("cifar10_transfer")
    # 4 head-only epochs, then fine-tuning of everything from epoch 4 up to epoch 18 at 5e-6
    assert (cfg.optim.head_epochs, cfg.optim.epochs) == (4, 18)
    assert cfg.model.freeze_depth == -1 and cfg.optim.finetune_lr == 5e-6
    assert (cfg.optim.scheduler, cfg.optim.plateau_factor, cfg.optim.plateau_patience) == (
        "plateau", 0.5, 2,
    )
    assert cfg.optim.min_lr == 1e-8 and cfg.optim.batch_size == 128
    es = cfg.early_stop
    assert (es.monitor, es.patience, es.min_delta, es.restore_best) == ("val_loss", 3, 1e-5, True)
