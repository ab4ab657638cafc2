from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.config import LossConfig, TrainConfig
from training.data import Preprocessing
from training.engine import LocalReporter, PreparedData, fit
from training.losses import (
    IMBALANCE,
    FocalLoss,
    balanced_class_weights,
    build_criterion,
    build_sampler,
)
from training.registry import UnknownNameError
from training.tasks import preset_config

STRATEGIES = ["none", "weighted_ce", "focal", "sampler"]
# 9 classes from 60 images down to 2: the Pokémon-type shape of imbalance
COUNTS = np.array([60, 40, 30, 20, 12, 8, 5, 3, 2])


def _batch(n: int = 16, c: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, requires_grad=True), torch.randint(
        0, c, (n,), generator=g
    )


def test_one_registry_holds_every_documented_strategy() -> None:
    assert IMBALANCE.names() == sorted(STRATEGIES)


def test_unknown_strategy_lists_valid_names() -> None:
    cfg = LossConfig(imbalance="oversample")
    with pytest.raises(
        UnknownNameError, match=r"'oversample'.*valid: focal, none, sampler, weighted_ce"
    ):
        build_criterion(cfg, COUNTS)
    with pytest.raises(UnknownNameError, match="valid: focal"):
        build_sampler(cfg, np.repeat(np.arange(9), COUNTS), seed=0)


@pytest.mark.parametrize("imbalance", STRATEGIES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_every_criterion_takes_index_and_soft_targets(imbalance: str, smoothing: float) -> None:
    criterion = build_criterion(LossConfig(imbalance=imbalance), COUNTS, smoothing)
    logits, y = _batch()
    hard = criterion(logits, y)
    # a MixUp batch: two one-hot targets blended
    lam = 0.7
    soft = lam * F.one_hot(y, 9).float() + (1 - lam) * F.one_hot(y.roll(1), 9).float()
    mixed = criterion(logits, soft)
    assert hard.ndim == mixed.ndim == 0 and torch.isfinite(hard) and torch.isfinite(mixed)
    mixed.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    if imbalance != "weighted_ce":  # weighted CE averages index targets by weight, soft by count
        one_hot = criterion(logits, F.one_hot(y, 9).float())
        assert one_hot.item() == pytest.approx(hard.item(), rel=1e-5)


def test_plain_strategies_are_cross_entropy_with_label_smoothing() -> None:
    logits, y = _batch()
    for imbalance in ("none", "sampler"):
        loss = build_criterion(LossConfig(imbalance=imbalance), COUNTS, 0.1)(logits, y)
        assert loss.item() == pytest.approx(F.cross_entropy(logits, y, label_smoothing=0.1).item())


def test_weighted_ce_weights_rarer_classes_more() -> None:
    weights = balanced_class_weights(COUNTS)
    assert np.all(np.diff(weights) > 0)  # counts decrease along the classes
    np.testing.assert_allclose(weights, COUNTS.sum() / (9 * COUNTS))
    criterion = build_criterion(LossConfig(imbalance="weighted_ce"), COUNTS)
    logits, y = _batch()
    expected = F.cross_entropy(logits, y, weight=torch.tensor(weights, dtype=torch.float32))
    assert criterion(logits, y).item() == pytest.approx(expected.item(), rel=1e-5)
    # the same (uniform) guess pulls harder on the rarest class's sample than the commonest's
    guess = torch.zeros(2, 9, requires_grad=True)
    criterion(guess, torch.tensor([0, 8])).backward()
    assert guess.grad is not None
    assert guess.grad[1].norm() > 10 * guess.grad[0].norm()


def test_weighted_ce_gives_absent_classes_zero_weight() -> None:
    counts = np.array([10, 0, 5])
    weights = balanced_class_weights(counts)
    assert weights[1] == 0 and weights[2] > weights[0] > 0


def test_bad_class_counts_and_smoothing_are_rejected() -> None:
    cfg = LossConfig(imbalance="weighted_ce")
    with pytest.raises(ValueError, match="class_counts"):
        build_criterion(cfg, np.array([3, -1, 2]))
    with pytest.raises(ValueError, match="label_smoothing"):
        build_criterion(cfg, COUNTS, 1.0)


def test_focal_loss_is_ce_at_gamma_zero_and_discounts_confident_hits() -> None:
    logits, y = _batch()
    soft = torch.softmax(torch.randn(16, 9), dim=1)
    for smoothing in (0.0, 0.2):
        focal0 = FocalLoss(gamma=0.0, label_smoothing=smoothing)
        for target in (y, soft):
            ce = F.cross_entropy(logits, target, label_smoothing=smoothing)
            assert focal0(logits, target).item() == pytest.approx(ce.item(), rel=1e-5)

    confident = torch.full((4, 9), -4.0)
    labels = torch.tensor([0, 3, 5, 8])
    confident[torch.arange(4), labels] = 4.0
    focal = build_criterion(LossConfig(imbalance="focal", focal_gamma=2.0), COUNTS)
    ce = F.cross_entropy(confident, labels)
    assert focal(confident, labels) < 0.01 * ce
    # a confident miss is barely discounted: the loss focuses on hard examples
    miss = F.cross_entropy(confident, labels.roll(1))
    assert focal(confident, labels.roll(1)) > 0.9 * miss


def test_focal_loss_class_weights_and_bad_targets() -> None:
    logits, y = _batch()
    weight = torch.linspace(0.5, 2.0, 9)
    weighted = FocalLoss(gamma=0.0, weight=weight)(logits, y)
    assert weighted.item() == pytest.approx(
        (F.cross_entropy(logits, y, reduction="none") * weight[y]).mean().item(), rel=1e-5
    )
    with pytest.raises(ValueError, match="targets must be"):
        FocalLoss()(logits, torch.rand(16, 4))
    with pytest.raises(ValueError, match="focal_gamma"):
        FocalLoss(gamma=-1.0)


def test_sampler_balances_classes() -> None:
    labels = np.repeat(np.arange(9), COUNTS)
    sampler = build_sampler(LossConfig(imbalance="sampler"), labels, seed=0)
    assert sampler is not None
    assert len(sampler) == len(labels)
    drawn = np.concatenate([labels[list(sampler)] for _ in range(10)])  # 10 epochs
    freq = np.bincount(drawn, minlength=9) / len(drawn)
    np.testing.assert_allclose(freq, 1 / 9, rtol=0.3)  # the data itself ranges 1/3 to 1/30 of that
    assert freq[-1] > 5 * COUNTS[-1] / COUNTS.sum()


def test_sampler_is_seeded_and_ranks_draw_their_own_share() -> None:
    labels = np.repeat(np.arange(9), COUNTS)
    cfg = LossConfig(imbalance="sampler")

    def draw(seed: int, **kw: int) -> list[int]:
        sampler = build_sampler(cfg, labels, seed, **kw)
        assert sampler is not None
        return list(sampler)

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)
    rank0, rank1 = draw(7, num_replicas=2, rank=0), draw(7, num_replicas=2, rank=1)
    assert len(rank0) == len(rank1) == (len(labels) + 1) // 2
    assert rank0 != rank1
    with pytest.raises(ValueError, match="rank"):
        draw(7, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match=">= 0"):
        build_sampler(cfg, np.array([0, 1, -1]), seed=0)


@pytest.mark.parametrize("imbalance", ["none", "weighted_ce", "focal"])
def test_only_the_sampler_strategy_builds_a_sampler(imbalance: str) -> None:
    assert build_sampler(LossConfig(imbalance=imbalance), np.array([0, 1, 1, 2]), seed=0) is None


# ------------------------------------------------------------------ through fit
# 3 classes, 36 / 8 / 4 training images (the rarest is 1/12 of the set)
FIT_COUNTS = np.array([36, 8, 4])


def _imbalanced_data(cfg: TrainConfig) -> PreparedData:
    rng = np.random.default_rng(0)
    size, ch = cfg.data.image_size, cfg.in_channels
    y_train = np.repeat(np.arange(3), FIT_COUNTS)
    y_val = np.repeat(np.arange(3), 2)
    return PreparedData(
        x_train=rng.integers(0, 256, (len(y_train), ch, size, size), dtype=np.uint8),
        y_train=y_train,
        x_val=rng.integers(0, 256, (len(y_val), ch, size, size), dtype=np.uint8),
        y_val=y_val,
        class_names=["common", "middle", "rare"],
        preprocessing=Preprocessing.from_config(cfg.data),
        source_hash="handmade",
    )


@pytest.mark.parametrize("imbalance", STRATEGIES)
def test_fit_trains_with_the_strategys_sampler_and_criterion(
    imbalance: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``fit`` really trains on: the labels its training loader draws each epoch and the
    criterion it hands the loop, seen through spies."""
    import training.engine as engine
    from training.loop import ArrayLoader

    epochs = 4
    cfg = preset_config("task2", {
        "data.image_size": 8, "model.channels": 4, "model.stages": 1, "optim.epochs": epochs,
        "optim.batch_size": 16, "num_threads": 1, "loss.imbalance": imbalance,
    })  # fmt: skip
    data = _imbalanced_data(cfg)
    drawn: list[np.ndarray] = []  # training-image indices, one array per epoch
    criteria: list[torch.nn.Module] = []
    indices = ArrayLoader._indices

    def spy_indices(self: ArrayLoader) -> torch.Tensor:
        idx = indices(self)
        if self.sampler is not None:  # the training loader (evaluation has none)
            drawn.append(idx.numpy().copy())
        return idx

    real_epoch = engine.train_one_epoch

    def spy_epoch(model: torch.nn.Module, loader: ArrayLoader, criterion: torch.nn.Module,
                  *args: object, **kwargs: object) -> dict[str, float]:
        criteria.append(criterion)
        return real_epoch(model, loader, criterion, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ArrayLoader, "_indices", spy_indices)
    monkeypatch.setattr(engine, "train_one_epoch", spy_epoch)
    rep = LocalReporter()
    fit(cfg, data, rep)
    assert len(rep.history) == epochs and len(drawn) == epochs and len(criteria) == epochs

    per_epoch = np.array([np.bincount(data.y_train[d], minlength=3) for d in drawn])
    assert (per_epoch.sum(axis=1) == FIT_COUNTS.sum()).all()  # one draw per image and epoch
    if imbalance == "sampler":
        # class-balanced: each class ~1/3 of the draws (16 of 48 an epoch), the rare class far
        # above its 4 images; with replacement, so some rare images come up several times
        assert per_epoch[:, 2].sum() > 2 * FIT_COUNTS[2] * epochs
        assert (per_epoch[:, 2] > FIT_COUNTS[2]).all()
        assert (per_epoch[:, 0] < FIT_COUNTS[0]).all()
    else:
        # plain shuffling: every image once an epoch
        assert all(sorted(d) == list(range(FIT_COUNTS.sum())) for d in drawn)
        assert (per_epoch == FIT_COUNTS).all()
    criterion = criteria[0]
    assert all(c is criterion for c in criteria)  # one criterion for the whole run
    if imbalance == "focal":
        assert isinstance(criterion, FocalLoss) and criterion.gamma == cfg.loss.focal_gamma
    else:
        assert isinstance(criterion, torch.nn.CrossEntropyLoss)
    if imbalance == "weighted_ce":
        # sklearn's "balanced": n / (classes · count) = 48 / (3 · [36, 8, 4])
        assert criterion.weight is not None
        np.testing.assert_allclose(criterion.weight.numpy(), [4 / 9, 2.0, 4.0], rtol=1e-6)
    else:
        assert getattr(criterion, "weight", None) is None
