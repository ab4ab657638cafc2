"""Criteria and samplers, both chosen by ``loss.imbalance``:

- ``none``: cross-entropy; plain shuffling.
- ``weighted_ce``: cross-entropy with sklearn's "balanced" class weights; plain shuffling.
- ``focal``: focal loss with ``loss.focal_gamma``; plain shuffling.
- ``sampler``: plain cross-entropy; a class-balanced ``WeightedRandomSampler`` draws the batches.

Every criterion takes index targets ``(N,)`` long and probability targets ``(N, C)`` float
(MixUp/CutMix), applies ``optim.label_smoothing``, and keeps its class weights in a buffer, so
``criterion.to(device)`` moves them with the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from torch import Tensor, nn
from torch.utils.data import Sampler, WeightedRandomSampler

from training.config import LossConfig
from training.registry import Registry

__all__ = [
    "IMBALANCE",
    "FocalLoss",
    "Imbalance",
    "balanced_class_weights",
    "build_criterion",
    "build_sampler",
]

#: ``factory(cfg, class_counts, label_smoothing) -> criterion``
LossFactory = Callable[[LossConfig, np.ndarray, float], nn.Module]
#: ``factory(cfg, labels, generator, num_samples) -> sampler or None``
SamplerFactory = Callable[[LossConfig, np.ndarray, torch.Generator, int], "Sampler[int] | None"]



@dataclass(frozen=True)
class Imbalance:
    """An imbalance strategy: the criterion it trains with and the sampler it draws batches
    with (None: plain shuffling). One entry picks both, so they cannot disagree."""

    criterion: LossFactory
    sampler: SamplerFactory


#: ``loss.imbalance`` names → strategies (registered below the factories)
IMBALANCE: Registry[Imbalance] = Registry("loss.imbalance")


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by ``(1 - p_c) ** gamma`` per class.

    With probability targets ``t`` it is ``-Σ_c α_c t_c (1 - p_c)^γ log p_c``, averaged over the
    batch; ``gamma=0`` without ``weight`` is exactly cross-entropy. Confident correct
    predictions contribute little, so training concentrates on hard (often rare-class) images.
    Note the batch mean is over samples, not over target weights as weighted index-target
    cross-entropy does.
    """

    weight: Tensor | None

    def __init__(
        self, gamma: float = 2.0, weight: Tensor | None = None, label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"loss.focal_gamma must be >= 0, got {gamma}")
        _check_smoothing(label_smoothing)
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        # float32: (1 - p)^γ of half-precision probabilities underflows
        log_p = F.log_softmax(logits.float(), dim=1)
        t = _as_probabilities(target, logits.shape[1]).float()
        if self.label_smoothing:
            t = t * (1 - self.label_smoothing) + self.label_smoothing / logits.shape[1]
        per_class = -t * log_p
        if self.gamma:
            per_class = per_class * (1 - log_p.exp()).pow(self.gamma)
        if self.weight is not None:
            per_class = per_class * self.weight
        return per_class.sum(dim=1).mean()


def balanced_class_weights(class_counts: np.ndarray) -> np.ndarray:
    """sklearn's "balanced" weights ``n / (k · count_c)``; 0 for classes with no samples."""
    counts = _check_counts(class_counts)
    present = np.flatnonzero(counts)
    weights = np.zeros(len(counts), dtype=np.float64)
    # an absent class cannot be a target (only a smoothing share), so its weight is moot
    weights[present] = compute_class_weight(
        "balanced", classes=present, y=np.repeat(np.arange(len(counts)), counts)
    )
    return weights


def _cross_entropy(cfg: LossConfig, class_counts: np.ndarray, label_smoothing: float) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


def _weighted_cross_entropy(
    cfg: LossConfig, class_counts: np.ndarray, label_smoothing: float
) -> nn.Module:
    weight = torch.as_tensor(balanced_class_weights(class_counts), dtype=torch.float32)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)


def _focal(cfg: LossConfig, class_counts: np.ndarray, label_smoothing: float) -> nn.Module:
    return FocalLoss(cfg.focal_gamma, label_smoothing=label_smoothing)


def build_criterion(
    cfg: LossConfig, class_counts: np.ndarray, label_smoothing: float = 0.0
) -> nn.Module:
    """The criterion for ``cfg.imbalance``; ``class_counts[c]`` = training images of class c."""
    factory = IMBALANCE.get(cfg.imbalance).criterion
    _check_counts(class_counts)
    _check_smoothing(label_smoothing)
    return factory(cfg, np.asarray(class_counts), label_smoothing)


def _no_sampler(
    cfg: LossConfig, labels: np.ndarray, generator: torch.Generator, num_samples: int
) -> Sampler[int] | None:
    return None


def _class_balanced_sampler(
    cfg: LossConfig, labels: np.ndarray, generator: torch.Generator, num_samples: int
) -> Sampler[int] | None:
    # weight 1/count(class) per image: every class carries the same total probability
    counts = np.bincount(labels)
    weights: list[float] = (1.0 / counts[labels]).tolist()
    return WeightedRandomSampler(weights, num_samples, replacement=True, generator=generator)


IMBALANCE.register("none")(Imbalance(_cross_entropy, _no_sampler))
IMBALANCE.register("weighted_ce")(Imbalance(_weighted_cross_entropy, _no_sampler))
IMBALANCE.register("focal")(Imbalance(_focal, _no_sampler))
# the sampler balances the batches; the loss stays plain
IMBALANCE.register("sampler")(Imbalance(_cross_entropy, _class_balanced_sampler))


def build_sampler(
    cfg: LossConfig, labels: np.ndarray, seed: int, *, num_replicas: int = 1, rank: int = 0
) -> Sampler[int] | None:
    """The training sampler for ``cfg.imbalance``, or None for plain shuffling.

    Draws ``len(labels)`` indices per epoch (``/ num_replicas`` each under data parallelism,
    every rank from its own seeded stream); the generator advances, so epochs differ but a run
    is reproducible.
    """
    factory = IMBALANCE.get(cfg.imbalance).sampler
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"build_sampler: labels must be a non-empty 1-D integer array, got {labels!r}"
        )
    if labels.min() < 0:
        raise ValueError(
            "build_sampler: labels must be >= 0 (unlabelled images cannot be trained on)"
        )
    if not 0 <= rank < num_replicas:
        raise ValueError(
            f"build_sampler: need 0 <= rank < num_replicas, got {rank}, {num_replicas}"
        )
    generator = torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
    )
    return factory(cfg, labels, generator, -(-len(labels) // num_replicas))


def _as_probabilities(target: Tensor, num_classes: int) -> Tensor:
    if target.ndim == 1 and not target.is_floating_point():
        return F.one_hot(target, num_classes)
    if target.ndim == 2 and target.is_floating_point() and target.shape[1] == num_classes:
        return target
    raise ValueError(
        f"targets must be class indices (N,) integer or probabilities (N, {num_classes}) float; "
        f"got shape {tuple(target.shape)} {target.dtype}"
    )


def _check_counts(class_counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(class_counts)
    if counts.ndim != 1 or len(counts) < 2 or (counts < 0).any() or counts.sum() == 0:
        raise ValueError(
            f"class_counts must be a 1-D array of per-class counts (>= 2 classes, not all 0), "
            f"got {counts!r}"
        )
    return counts.astype(np.int64)


def _check_smoothing(label_smoothing: float) -> None:
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"optim.label_smoothing must be in [0, 1), got {label_smoothing}")
