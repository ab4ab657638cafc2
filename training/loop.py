"""The training loop as plain functions (torchvision ``references/classification`` style).

Data lives in memory as uint8 tensors (decoded once by :mod:`training.data`); batches are
index slices, converted to float, augmented and normalised on the compute device. Nothing
here decodes images, talks to Ray or reads config dicts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torch.nn import functional as F

from training.data import Preprocessing

__all__ = ["ArrayLoader", "EvalResult", "autocast_for", "evaluate", "train_one_epoch"]

Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class ArrayLoader:
    """Batches of an in-memory uint8 N×C×H×W tensor.

    ``sampler`` yields indices over the whole set; under data parallelism every rank draws
    the same indices (same seed) and keeps every ``world_size``-th one, so the shards are
    disjoint without a DistributedSampler per sampler type.
    """

    images: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    sampler: Iterable[int] | None = None
    rank: int = 0
    world_size: int = 1
    drop_last: bool = False

    def _indices(self) -> torch.Tensor:
        idx = (
            torch.arange(len(self.labels))
            if self.sampler is None
            else torch.as_tensor(list(self.sampler), dtype=torch.long)
        )
        return idx[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self._indices()
        n = len(idx)
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            sel = idx[start : start + self.batch_size]
            yield self.images[sel], self.labels[sel]

    def __len__(self) -> int:
        n = len(range(self.rank, len(self.labels), self.world_size))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def autocast_for(device: torch.device, enabled: bool) -> tuple[AbstractContextManager[None], bool]:
    """(autocast context, needs GradScaler). AMP only on CUDA: bf16 where supported, else fp16."""
    if not enabled or device.type != "cuda":
        return nullcontext(), False
    if torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16), False
    return torch.autocast("cuda", dtype=torch.float16), True


def _normalize(x: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    mean = torch.tensor(prep.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(prep.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


def _to_input(
    x: torch.Tensor, device: torch.device, prep: Preprocessing, channels_last: bool
) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def train_one_epoch(
    model: nn.Module,
    loader: ArrayLoader,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    prep: Preprocessing,
    *,
    augment: Augment | None = None,
    amp: bool = False,
    scaler: torch.amp.GradScaler | None = None,
    regularization: Callable[[], torch.Tensor] | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """One pass over ``loader``; returns ``train_loss`` (mean per image) and ``train_images``."""
    model.train()
    autocast, _ = autocast_for(device, amp)
    # accumulate on device: a .item() per step would sync the host with the GPU every batch
    loss_sum = torch.zeros((), device=device)
    seen = 0
    for xb, yb in loader:
        x = _to_input(xb, device, prep, channels_last).float().div_(255)
        y = yb.to(device, non_blocking=True)
        if augment is not None:
            # augmentation works on [0, 1] data (colour jitter is meaningless after normalising)
            x, y = augment(x, y)
        x = _normalize(x, prep)
        with autocast:
            logits = model(x)
            loss = criterion(logits.float(), y)
            if regularization is not None:
                loss = loss + regularization()
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        loss_sum += loss.detach() * len(xb)
        seen += len(xb)
    return {"train_loss": float(loss_sum.item()) / max(seen, 1), "train_images": float(seen)}


@dataclass
class EvalResult:
    loss: float
    f1: float
    acc: float
    y_true: np.ndarray
    y_pred: np.ndarray
    probs: np.ndarray = field(repr=False)

    def metrics(self, prefix: str = "val_") -> dict[str, float]:
        return {f"{prefix}loss": self.loss, f"{prefix}f1": self.f1, f"{prefix}acc": self.acc}


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    prep: Preprocessing,
    *,
    batch_size: int = 512,
    amp: bool = False,
    channels_last: bool = False,
    tta: bool = False,
) -> torch.Tensor:
    """Softmax probabilities (float32, on CPU) for uint8 N×C×H×W ``images``."""
    model.eval()
    autocast, _ = autocast_for(device, amp)
    out = []
    for start in range(0, len(images), batch_size):
        x = _to_input(images[start : start + batch_size], device, prep, channels_last)
        x = _normalize(x.float().div_(255), prep)
        with autocast:
            p = model(x).float().softmax(-1)
            if tta:  # horizontal-flip test-time augmentation: average both views
                p = (p + model(torch.flip(x, dims=[-1])).float().softmax(-1)) / 2
        out.append(p.cpu())
    n_classes = out[0].shape[-1] if out else 0
    return torch.cat(out) if out else torch.empty(0, n_classes)


def evaluate(
    model: nn.Module,
    loader: ArrayLoader,
    device: torch.device,
    prep: Preprocessing,
    *,
    num_classes: int,
    amp: bool = False,
    channels_last: bool = False,
) -> EvalResult:
    """Loss, macro-F1 and accuracy on ``loader``; gathers every rank's shard under DDP.

    The loss is the plain (unweighted) cross-entropy whatever the training criterion, so
    val_loss stays comparable across imbalance strategies in a sweep.
    """
    probs = predict_proba(
        model,
        loader.images[loader._indices()],
        device,
        prep,
        batch_size=loader.batch_size,
        amp=amp,
        channels_last=channels_last,
    )
    y_true = loader.labels[loader._indices()]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (probs, y_true))
        probs = torch.cat([p[0] for p in parts if p is not None])
        y_true = torch.cat([p[1] for p in parts if p is not None])
    loss = (
        float(F.nll_loss(probs.clamp_min(1e-12).log(), y_true).item())
        if len(y_true)
        else float("nan")
    )
    y_pred = probs.argmax(-1).numpy()
    yt = y_true.numpy()
    labels = list(range(num_classes))
    return EvalResult(
        loss=loss,
        f1=float(f1_score(yt, y_pred, labels=labels, average="macro", zero_division=0)),
        acc=float(accuracy_score(yt, y_pred)) if len(yt) else float("nan"),
        y_true=yt,
        y_pred=y_pred,
        probs=probs.numpy(),
    )


def timed(fn: Callable[[], dict[str, float]]) -> tuple[dict[str, float], float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0
