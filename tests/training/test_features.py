"""The frozen-backbone feature cache: same logits as the live backbone, computed once per
backbone × preprocessing × data, and only where a cached feature means the same thing."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import training.features as features
from training.config import TrainConfig
from training.data import cifar
from training.engine import LocalReporter, PreparedData, fit, prepare_data
from training.features import MemoryFeatureStore, feature_key, plan_features
from training.models import build_model
from training.tasks import preset_config


def _cfg(**over: Any) -> TrainConfig:
    base = {
        "model.name": "resnet18",
        "model.pretrained": False,
        "model.freeze_depth": 0,
        "model.head_hidden": [32],
        "model.head_dropout": [0.2],
        "data.image_size": 32,
        "optim.head_epochs": 0,
        "optim.epochs": 3,
        "optim.batch_size": 16,
        "optim.scheduler": "none",
        "early_stop.patience": 0,
        "num_threads": 1,
        "checkpoint_every_s": 0,
    }
    return preset_config("cifar10_transfer", {**base, **over})


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar-features")
    cifar.write_cifar10_batches(root, per_class=6, test_per_class=1)
    return root


def _prepare(root: Path, cfg: TrainConfig) -> PreparedData:
    with pytest.MonkeyPatch.context() as mp:  # the fixture's own files, not CIFAR's md5s
        mp.setattr(cifar, "EXPECTED_MD5", cifar.file_md5s(root / "cifar-10-batches-py"))
        prepared, _ = prepare_data(root, cfg)
    return prepared


@pytest.fixture(scope="module")
def data(cifar_root: Path) -> PreparedData:
    return _prepare(cifar_root, _cfg())


def _logits(model: torch.nn.Module, data: PreparedData) -> torch.Tensor:
    from training.data import normalize_batch

    with torch.no_grad():
        return model.eval()(normalize_batch(torch.as_tensor(data.x_val[:8]), data.preprocessing))


def test_cached_head_training_matches_the_live_frozen_backbone(data: PreparedData) -> None:
    cfg = _cfg()
    live = LocalReporter()
    live_fit = fit(cfg.replace(**{"features.cache": False}), data, live)
    cached = LocalReporter()
    cached_fit = fit(cfg, data, cached, features=MemoryFeatureStore())
    assert [m["features"] for m in live.history] == ["live"] * 3
    assert [m["features"] for m in cached.history] == ["cached"] * 3
    # same sampler order, same head, same dropout draws: the same training up to float error
    for a, b in zip(live.history, cached.history, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4, abs=1e-5)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4, abs=1e-5)
    torch.testing.assert_close(_logits(cached_fit.model, data), _logits(live_fit.model, data), rtol=1e-4, atol=1e-4)
    # both started from the same seeded backbone, and neither path changed it (BN buffers
    # included: the frozen backbone runs in eval mode)
    live_backbone = live_fit.model.backbone.state_dict()  # type: ignore[union-attr]
    for k, v in cached_fit.model.backbone.state_dict().items():  # type: ignore[union-attr]
        assert torch.equal(v, live_backbone[k]), k


def test_features_are_computed_once_and_reused_by_the_next_trial(
    data: PreparedData, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = features.extract_features

    def counting(*args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(len(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "extract_features", counting)
    store = MemoryFeatureStore()
    first, second = LocalReporter(), LocalReporter()
    fit(_cfg(), data, first, features=store)
    assert calls == [len(data.y_train), len(data.y_val)]
    assert first.history[0]["feature_extract_s"] > 0
    # another trial: other head and learning rate, same backbone and data
    fit(_cfg(**{"optim.lr": 3e-3, "model.head_hidden": [16]}), data, second, features=store)
    assert len(calls) == 2 and second.history[0]["feature_extract_s"] == 0.0
    assert second.history[0]["features"] == "cached"


def test_the_key_changes_with_backbone_weights_image_size_and_normalisation(
    data: PreparedData, cifar_root: Path
) -> None:
    def key(cfg: TrainConfig, d: PreparedData) -> str:
        model = build_model(cfg.model, in_channels=3, num_classes=10, image_size=cfg.data.image_size)
        plan = plan_features(cfg, world_size=1, augment=features.BatchAugment(cfg.augment, 10))
        return feature_key(cfg, d, model.backbone, plan)

    torch.manual_seed(0)
    base = key(_cfg(), data)
    torch.manual_seed(0)
    assert key(_cfg(), data) == base  # same random init, same data: same features
    torch.manual_seed(1)
    assert key(_cfg(), data) != base  # other initial weights
    torch.manual_seed(0)
    assert key(_cfg(**{"model.name": "resnet34"}), data) != base
    imagenet = dataclasses.replace(data, preprocessing=dataclasses.replace(data.preprocessing, normalize="half"))
    torch.manual_seed(0)
    assert key(_cfg(), imagenet) != base
    bigger = _prepare(cifar_root, _cfg(**{"data.image_size": 40}))
    torch.manual_seed(0)
    assert key(_cfg(**{"data.image_size": 40}), bigger) != base
    torch.manual_seed(0)
    other_split = key(_cfg(seed=3), data)
    assert other_split != base


def test_two_phase_caches_the_head_phase_only(data: PreparedData) -> None:
    cfg = _cfg(**{"optim.head_epochs": 2, "model.freeze_depth": 1, "optim.epochs": 3})
    rep = LocalReporter()
    fit(cfg, data, rep, features=MemoryFeatureStore())
    assert [m["features"] for m in rep.history] == ["cached", "cached", "live"]
    assert [m["phase"] for m in rep.history] == ["head", "head", "finetune"]


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"augment.hflip": 0.5}, ["live"] * 2),  # live augmentation: no cache by default
        ({"augment.hflip": 0.5, "features.views": 2}, ["cached"] * 2),
        ({"augment.mixup_alpha": 0.2, "features.views": 2}, ["live"] * 2),  # mixes pixels
        ({"model.freeze_depth": -1}, ["live"] * 2),  # the backbone trains
    ],
)
def test_augmentation_and_cached_features(data: PreparedData, over: dict[str, Any], expected: list[str]) -> None:
    rep = LocalReporter()
    store = MemoryFeatureStore()
    fit(_cfg(**{"optim.epochs": 2, **over}), data, rep, features=store)
    assert [m["features"] for m in rep.history] == expected
    if expected[0] == "cached" and over.get("features.views"):
        (feats,) = store._items.values()
        assert feats.train.shape[0] == 2 and not np.allclose(feats.train[0], feats.train[1])
