"""The training loop as plain functions (torchvision ``references/classification`` style).

Data lives in memory as uint8 tensors (decoded once by :mod:`training.data`); batches are
index slices, converted to float, augmented and normalised on the compute device. Nothing
here decodes images, talks to Ray or reads config dicts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torch.nn import functional as F

from training.data import Preprocessing

__all__ = [
    "ArrayLoader",
    "EvalResult",
    "Kernels",
    "amp_dtype_for",
    "autocast_for",
    "channels_last_for",
    "data_fits_on_device",
    "evaluate",
    "kernels_for",
    "train_one_epoch",
]

Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class ArrayLoader:
    """Batches of an in-memory uint8 N×C×H×W tensor.

    ``sampler`` yields indices over the whole set; under data parallelism every rank draws
    the same indices (same seed) and keeps every ``world_size``-th one, so the shards are
    disjoint without a DistributedSampler per sampler type.  Every rank gets the same
    number of indices, ``ceil(n / world_size)``: a short shard repeats its own first index
    (so the shards stay disjoint), where uneven shards would leave one rank's extra step
    waiting in an all-reduce that never comes.  :meth:`merge_shards` puts gathered
    per-rank results back in order and drops the padding, so evaluation counts every
    image once.

    ``pin_memory``: gather each batch into pinned host memory (for a CUDA target while the
    set stays in host memory), so ``.to(device, non_blocking=True)`` really is
    asynchronous.  Only batch-sized blocks are pinned: pinning the whole set would round it
    up to a power of two of page-locked memory per trial.  Ignored for data not on the CPU.
    """

    images: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    sampler: Iterable[int] | None = None
    rank: int = 0
    world_size: int = 1
    drop_last: bool = False
    pin_memory: bool = False
    # a last batch smaller than this is dropped: BatchNorm cannot train on one image (each
    # rank's shard has the same size, so every rank drops it and no collective is skipped)
    min_batch: int = 1

    @property
    def num_indices(self) -> int:
        """Indices one epoch draws over all ranks, before padding (a sampler without
        ``len()`` is taken to draw one per image)."""
        if self.sampler is None:
            return len(self.labels)
        if isinstance(self.sampler, Sized):
            return len(self.sampler)
        # drawing a sampler to count it would advance its generator by an epoch
        return len(self.labels)

    def _order(self) -> torch.Tensor:
        """The epoch's indices over all ranks (draws the sampler once)."""
        if self.sampler is None:
            return torch.arange(len(self.labels))
        return torch.as_tensor(list(self.sampler), dtype=torch.long)

    def _indices(self) -> torch.Tensor:
        """This rank's shard of :meth:`_order` (CPU), padded to ``ceil(n / world_size)``."""
        order = self._order()
        shard = order[self.rank :: self.world_size]
        short = -(-len(order) // self.world_size) - len(shard)  # 0 or 1
        if short:
            # the shard's own first index keeps the shards disjoint; a rank with none (fewer
            # images than ranks) borrows the order's first
            shard = torch.cat([shard, (shard if len(shard) else order)[:short]])
        return shard

    def merge_shards(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-rank results in shard order (one row per index, ``world_size`` equal parts,
        rank order) → the epoch's order with the padding dropped: one row per index."""
        if len(parts) != self.world_size:
            raise ValueError(f"merge_shards needs {self.world_size} parts, got {len(parts)}")
        # rank r's k-th row is position k·W + r; the padding sits at positions >= n
        stacked = torch.stack(list(parts), 1)
        return stacked.reshape(-1, *stacked.shape[2:])[: self.num_indices]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self._indices()
        # index on the data's device: a CPU index into GPU-resident images is one more
        # blocking copy per batch; this moves it once per epoch
        idx_images = idx.to(self.images.device)
        idx_labels = (
            idx_images if self.labels.device == self.images.device else idx.to(self.labels.device)
        )
        n = len(idx)
        stop = self._stop(n)
        for start in range(0, stop, self.batch_size):
            end = start + self.batch_size
            yield (
                self._gather(self.images, idx_images[start:end]),
                self._gather(self.labels, idx_labels[start:end]),
            )

    def _gather(self, src: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
        if not (self.pin_memory and src.device.type == "cpu"):
            return src[sel]
        out = _pinned_empty((len(sel), *src.shape[1:]), src.dtype)
        return torch.index_select(src, 0, sel, out=out)

    def _stop(self, n: int) -> int:
        """Where this rank's last batch ends: before a partial one that is dropped."""
        tail = n % self.batch_size
        return n - tail if self.drop_last or 0 < tail < self.min_batch else n

    def __len__(self) -> int:
        n = -(-self.num_indices // self.world_size)  # per rank, after padding
        return -(-self._stop(n) // self.batch_size)


def _pinned_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    # a fresh block per batch from PyTorch's caching host allocator: it hands a block out
    # again only once the copies that read it have finished, which a single reused staging
    # buffer would have to arrange by hand
    return torch.empty(shape, dtype=dtype, pin_memory=True)


@dataclass(frozen=True)
class Kernels:
    """How the loop computes on a device, chosen in one place (``fit`` and ``bench gpu``'s
    plain loop ask the same function): the autocast dtype (None: fp32), whether fp16 needs
    a GradScaler, and the memory format."""

    amp_dtype: torch.dtype | None
    channels_last: bool

    @property
    def needs_scaler(self) -> bool:
        return self.amp_dtype == torch.float16

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def amp_dtype_for(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype for ``device``: AMP only on CUDA; bf16 from compute capability 8.0
    (Ampere) on, fp16 below.  Not ``torch.cuda.is_bf16_supported()``: it counts emulation
    and says True on a T4 (7.5), where cuDNN has no bf16 convolutions."""
    if not enabled or device.type != "cuda":
        return None
    if torch.cuda.get_device_capability(device) >= (8, 0):
        return torch.bfloat16
    return torch.float16


def channels_last_for(device: torch.device, model_name: str) -> bool:
    """channels_last speeds convolutions up on GPUs (tensor cores); MLPs gain nothing."""
    return device.type == "cuda" and model_name != "mlp"


def kernels_for(device: torch.device, *, amp: bool, model_name: str) -> Kernels:
    return Kernels(amp_dtype_for(device, amp), channels_last_for(device, model_name))


def autocast_for(device: torch.device, enabled: bool) -> tuple[AbstractContextManager[None], bool]:
    """(autocast context, needs GradScaler), by :func:`amp_dtype_for`."""
    dtype = amp_dtype_for(device, enabled)
    if dtype is None:
        return nullcontext(), False
    return torch.autocast("cuda", dtype=dtype), dtype == torch.float16


def data_fits_on_device(
    device: torch.device, nbytes: int, *, gpu_share: float = 1.0, budget: float = 0.5
) -> bool:
    """Whether ``nbytes`` of training data should live on ``device``: at most ``budget`` of
    the memory this process may use there, the smaller of what is free now and its share
    ``gpu_share`` (a fractional Ray GPU) of the whole; the rest is for the model,
    activations and optimizer state.  Memory cached by an earlier trial in this (reused)
    process is returned first, so it counts as free."""
    if device.type != "cuda":
        return False
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    return nbytes <= budget * min(free, gpu_share * total)


def norm_constants(prep: Preprocessing, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """mean and std as 1×C×1×1 float32 on ``device``: built once per epoch or evaluation,
    since two small host→device copies per batch each block the host."""
    mean = torch.tensor(prep.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return mean, std


def _normalize(x: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    mean, std = norm
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
    norm = norm_constants(prep, device)
    # accumulate on device: a .item() per step would sync the host with the GPU every batch
    loss_sum = torch.zeros((), device=device)
    seen = 0
    for xb, yb in loader:
        x = _to_input(xb, device, prep, channels_last).float().div_(255)
        y = yb.to(device, non_blocking=True)
        if augment is not None:
            # augmentation works on [0, 1] data (colour jitter is meaningless after normalising)
            x, y = augment(x, y)
        x = _normalize(x, norm)
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

    @classmethod
    def from_probs(cls, probs: torch.Tensor, y_true: torch.Tensor, num_classes: int) -> EvalResult:
        """Metrics of softmax ``probs`` (CPU, N×classes) against integer ``y_true``.

        The loss is the plain (unweighted) cross-entropy whatever the training criterion, so
        val_loss stays comparable across imbalance strategies in a sweep.
        """
        loss = (
            float(F.nll_loss(probs.clamp_min(1e-12).log(), y_true).item())
            if len(y_true)
            else float("nan")
        )
        y_pred = probs.argmax(-1).numpy()
        yt = y_true.numpy()
        labels = list(range(num_classes))
        return cls(
            loss=loss,
            f1=float(f1_score(yt, y_pred, labels=labels, average="macro", zero_division=0)),
            acc=float(accuracy_score(yt, y_pred)) if len(yt) else float("nan"),
            y_true=yt,
            y_pred=y_pred,
            probs=probs.numpy(),
        )


@torch.no_grad()
def _predict(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    device: torch.device,
    prep: Preprocessing,
    *,
    amp: bool,
    channels_last: bool,
    tta: bool,
) -> list[torch.Tensor]:
    """Softmax probabilities per batch, left on ``device``: one copy to the host at the end
    rather than a blocking ``.cpu()`` per batch."""
    model.eval()
    autocast, _ = autocast_for(device, amp)
    norm = norm_constants(prep, device)
    out = []
    for xb in batches:
        x = _to_input(xb, device, prep, channels_last)
        x = _normalize(x.float().div_(255), norm)
        with autocast:
            p = model(x).float().softmax(-1)
            if tta:  # horizontal-flip test-time augmentation: average both views
                p = (p + model(torch.flip(x, dims=[-1])).float().softmax(-1)) / 2
        out.append(p)
    return out


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
    batches = (images[start : start + batch_size] for start in range(0, len(images), batch_size))
    out = _predict(model, batches, device, prep, amp=amp, channels_last=channels_last, tta=tta)
    n_classes = out[0].shape[-1] if out else 0
    return torch.cat(out).cpu() if out else torch.empty(0, n_classes)


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

    Every rank runs the same (padded) number of batches with no collective per step; one
    ``all_gather_object`` at the end, then :meth:`ArrayLoader.merge_shards` drops the
    padding, so each image counts exactly once.

    The loss is the plain (unweighted) cross-entropy whatever the training criterion, so
    val_loss stays comparable across imbalance strategies in a sweep.
    """
    labels: list[torch.Tensor] = []

    def images() -> Iterator[torch.Tensor]:
        for xb, yb in loader:
            labels.append(yb)
            yield xb

    out = _predict(model, images(), device, prep, amp=amp, channels_last=channels_last, tta=False)
    probs = torch.cat(out).cpu() if out else torch.empty(0, num_classes)
    y_true = torch.cat(labels).cpu() if labels else torch.empty(0, dtype=torch.long)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (probs, y_true))
        probs = loader.merge_shards([p[0] for p in parts if p is not None])
        y_true = loader.merge_shards([p[1] for p in parts if p is not None])
    return EvalResult.from_probs(probs, y_true, num_classes)


def timed(fn: Callable[[], dict[str, float]]) -> tuple[dict[str, float], float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0
