"""The frozen-backbone feature cache: train a transfer model's head on pooled features.

While a transfer backbone is frozen (``model.freeze_depth: 0``, or the head phase of two-phase
fine-tuning) it is a fixed function in eval mode (frozen stages keep BatchNorm statistics and
drop-connect off, see :meth:`TransferModel.train`): every epoch it would compute the same
features for the same images, and its forward pass is nearly all of a step's cost. So
:func:`fit` computes them once per (backbone weights × preprocessing × data split × views)
and trains the head on them; logits equal the live path's within float tolerance.

Augmentation and a cached feature do not mix: with ``features.views: N`` the training set is
augmented N times once and featurised, and epoch ``e`` uses view ``e % N``; without views a
config that augments trains live. MixUp/CutMix (soft targets mixed in pixel space) always
train live, as does data parallelism (each rank would featurise the whole set).

Where features are kept: :class:`MemoryFeatureStore` (this process: reused Tune trial actors
and ``poketune train``), or :class:`RayFeatureStore` (a sweep's actor that owns the arrays in
Ray's object store, so every trial on the cluster reuses one extraction).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from training.data.augment import BatchAugment
from training.loop import ArrayLoader, EvalResult, autocast_for, norm_constants

if TYPE_CHECKING:
    from training.config import TrainConfig
    from training.engine import PreparedData

__all__ = [
    "FeaturePlan",
    "FeatureStore",
    "Features",
    "MemoryFeatureStore",
    "RayFeatureStore",
    "evaluate_head",
    "extract_features",
    "feature_key",
    "plan_features",
    "train_head_one_epoch",
]


@dataclass(frozen=True)
class FeaturePlan:
    """Which epochs train on cached features (``[0, epochs)``) and why the others do not."""

    epochs: int
    views: int  # 0: the plain images; N: N augmented views of the training set
    reason: str  # one line for logs: why cached, or why live

    @property
    def enabled(self) -> bool:
        return self.epochs > 0


def plan_features(cfg: TrainConfig, *, world_size: int, augment: BatchAugment) -> FeaturePlan:
    """When ``fit`` may train on cached features instead of running the backbone."""
    from training.models import BACKBONES

    def live(reason: str) -> FeaturePlan:
        return FeaturePlan(0, 0, f"live backbone: {reason}")

    if not cfg.features.cache:
        return live("features.cache is off")
    if cfg.model.name not in BACKBONES:
        return live(f"{cfg.model.name} is not a transfer backbone")
    if cfg.model.freeze_depth == 0:
        frozen = cfg.optim.epochs  # head only throughout, whatever the phases
    else:
        frozen = min(cfg.optim.head_epochs, cfg.optim.epochs)
    if frozen == 0:
        return live(f"the backbone trains from the first epoch (freeze depth {cfg.model.freeze_depth})")
    if world_size > 1:
        return live("data-parallel workers")
    if augment.soft_targets:
        return live("MixUp/CutMix mix pixels")
    views = cfg.features.views if augment.enabled else 0
    if augment.enabled and views == 0:
        return live("live augmentation (set features.views: N to cache N augmented views)")
    what = f"{views} augmented views" if views else "the plain images"
    return FeaturePlan(frozen, views, f"cached features of {what} for {frozen} frozen epoch(s)")


# ------------------------------------------------------------------------------ identity
def _state_digest(module: nn.Module) -> str:
    """The weights themselves as the backbone's identity: pretrained file, weights_path or
    random seed all end up here, so no source can be confused with another."""
    h = hashlib.blake2b(digest_size=12)
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def feature_key(
    cfg: TrainConfig, data: PreparedData, backbone: nn.Module, plan: FeaturePlan
) -> str:
    """Backbone weights × preprocessing × data and its split × the augmented views."""
    parts: dict[str, Any] = {
        "backbone": [cfg.model.name, _state_digest(backbone)],
        "preprocessing": data.preprocessing.to_dict(),
        "data": [data.source_hash, cfg.seed, cfg.data.val_fraction, len(data.y_train), len(data.y_val), data.split],
        "views": plan.views,
    }
    if plan.views:
        parts["augment"] = [vars(cfg.augment), list(data.augment_fill)]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


# ------------------------------------------------------------------------------ extraction
@dataclass
class Features:
    """Pooled features: ``train`` is V×N×D (V views, 1 without augmentation), ``val`` N×D."""

    train: np.ndarray
    val: np.ndarray
    extract_s: float = 0.0  # time spent computing them (0 when they came from a store)

    def view(self, epoch: int) -> np.ndarray:
        return self.train[epoch % len(self.train)]


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    images: np.ndarray,
    data: PreparedData,
    device: torch.device,
    *,
    batch_size: int,
    augment: BatchAugment | None = None,
    amp: bool = False,
) -> np.ndarray:
    """``backbone``'s output (float32 N×D on the CPU) for uint8 N×C×H×W ``images``, in eval
    mode, optionally through one random ``augment`` pass."""
    mean, std = norm_constants(data.preprocessing, device)
    autocast, _ = autocast_for(device, amp)
    was_training = backbone.training
    backbone.eval()
    out = []
    labels = torch.zeros(batch_size, dtype=torch.long)
    try:
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            x = x.to(device).float().div_(255)
            if augment is not None:
                x, _ = augment(x, labels[: len(x)])
            with autocast:
                out.append(backbone((x - mean) / std).float().cpu())
    finally:
        backbone.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def compute_features(
    backbone: nn.Module,
    data: PreparedData,
    plan: FeaturePlan,
    augment: BatchAugment,
    device: torch.device,
    cfg: TrainConfig,
) -> Features:
    t0 = time.perf_counter()
    kw: dict[str, Any] = {"batch_size": cfg.eval_batch_size, "amp": cfg.optim.amp}
    if plan.views:
        train = np.stack(
            [extract_features(backbone, data.x_train, data, device, augment=augment, **kw) for _ in range(plan.views)]
        )
    else:
        train = extract_features(backbone, data.x_train, data, device, **kw)[None]
    val = extract_features(backbone, data.x_val, data, device, **kw)
    return Features(train, val, time.perf_counter() - t0)


# ------------------------------------------------------------------------------ stores
class FeatureStore(Protocol):
    """Where computed features are kept between trials."""

    def get_or_compute(self, key: str, compute: Callable[[], Features]) -> tuple[Features, bool]:
        """The features for ``key`` and whether they were already there."""
        ...


class MemoryFeatureStore:
    """This process's last few feature sets (a reused Tune trial actor keeps them)."""

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Features] = OrderedDict()

    def get_or_compute(self, key: str, compute: Callable[[], Features]) -> tuple[Features, bool]:
        if key in self._items:
            self._items.move_to_end(key)
            found = self._items[key]
            return Features(found.train, found.val, 0.0), True
        feats = compute()
        self._items[key] = feats
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return feats, False


#: the default store: per process
PROCESS_STORE = MemoryFeatureStore()


class _FeatureRegistry:
    """A sweep's Ray actor: holds the object refs so the arrays outlive the trial that made
    them (an object belongs to the process that put it; this actor lives as long as the
    sweep)."""

    def __init__(self) -> None:
        self.refs: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return [self.refs[key]] if key in self.refs else None

    def put(self, key: str, train: np.ndarray, val: np.ndarray) -> None:
        import ray

        self.refs.setdefault(key, ray.put((train, val)))

    def keys(self) -> list[str]:
        return list(self.refs)


class RayFeatureStore:
    """Features shared by every trial of a sweep through Ray's object store."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.local = MemoryFeatureStore()  # a reused actor needs no round trip

    @classmethod
    def start(cls, name: str) -> RayFeatureStore:
        import ray

        actor = ray.remote(num_cpus=0)(_FeatureRegistry).options(name=name).remote()
        return cls(actor)

    def get_or_compute(self, key: str, compute: Callable[[], Features]) -> tuple[Features, bool]:
        import ray

        def shared() -> Features:
            found = ray.get(self.actor.get.remote(key))
            if found is not None:
                train, val = ray.get(found[0])
                return Features(train, val, 0.0)
            feats = compute()
            ray.get(self.actor.put.remote(key, feats.train, feats.val))
            return feats

        return self.local.get_or_compute(key, shared)

    def keys(self) -> list[str]:
        import ray

        return list(ray.get(self.actor.keys.remote()))

    def stop(self) -> None:
        import ray

        ray.kill(self.actor)


# ------------------------------------------------------------------------------ the head loop
def train_head_one_epoch(
    head: nn.Module,
    features: np.ndarray,
    labels: torch.Tensor,
    order: Iterable[int],
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    batch_size: int,
    regularization: Callable[[], torch.Tensor] | None = None,
) -> dict[str, float]:
    """``train_one_epoch`` for the head alone on cached features (same sampler order)."""
    head.train()
    # the live loader's rule (a last batch of one image is dropped), so both paths train alike
    loader = ArrayLoader(torch.from_numpy(features), labels, batch_size, order, min_batch=2)
    loss_sum = torch.zeros((), device=device)
    seen = 0
    for xb, yb in loader:
        x, y = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss = criterion(head(x).float(), y)
        if regularization is not None:
            loss = loss + regularization()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(xb)
        seen += len(xb)
    return {"train_loss": float(loss_sum.item()) / max(seen, 1), "train_images": float(seen)}


@torch.no_grad()
def evaluate_head(
    head: nn.Module, features: np.ndarray, labels: torch.Tensor, device: torch.device, *, num_classes: int, batch_size: int
) -> EvalResult:
    """``evaluate`` for the head alone on cached validation features."""
    head.eval()
    x = torch.from_numpy(features)
    probs = [
        head(x[i : i + batch_size].to(device)).float().softmax(-1).cpu() for i in range(0, len(x), batch_size)
    ]
    return EvalResult.from_probs(
        torch.cat(probs) if probs else torch.empty(0, num_classes), labels.cpu(), num_classes
    )
