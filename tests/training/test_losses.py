from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.config import LossConfig
from training.losses import (
    LOSSES,
    SAMPLERS,
    FocalLoss,
    balanced_class_weights,
    build_criterion,
    build_sampler,
)
from training.registry import UnknownNameError

STRATEGIES = ["none", "weighted_ce", "focal", "sampler"]
# 9 classes from 60 images down to 2: the Pokémon-type shape of imbalance
COUNTS = np.array([60, 40, 30, 20, 12, 8, 5, 3, 2])


def _batch(n: int = 16, c: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, requires_grad=True), torch.randint(
        0, c, (n,), generator=g
    )


def test_registries_cover_every_strategy() -> None:
    assert LOSSES.names() == SAMPLERS.names() == sorted(STRATEGIES)


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
