"""``fit``: epochs around the loop — phases, early stopping, checkpoints, reporting.

``fit`` is the single training procedure behind ``poketune train``, every Tune trial (in
process or through a ``TorchTrainer``), retraining and the benchmarks. Where metrics and
checkpoints go is the :class:`Reporter`'s business, so the same code runs under Ray Train,
under Ray Tune and with no Ray at all.
"""

from __future__ import annotations

import copy
import functools
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from training.checkpoint import Checkpoint, build_model_for
from training.config import ConfigError, TrainConfig
from training.data import (
    LoadReport,
    Preprocessing,
    load_split,
    stratified_group_split,
    stratified_split,
)
from training.data.augment import BatchAugment
from training.devices import granted_gpu_share, release_device_memory, training_device
from training.early_stopping import EarlyStopping
from training.features import (
    PROCESS_STORE,
    FeaturePlan,
    Features,
    FeatureStore,
    compute_features,
    evaluate_head,
    feature_key,
    plan_features,
    train_head_one_epoch,
)
from training.loop import (
    ArrayLoader,
    autocast_for,
    channels_last_for,
    data_fits_on_device,
    evaluate,
    train_one_epoch,
)
from training.losses import build_criterion, build_sampler
from training.metrics import mode_of
from training.models import regularization, set_freeze_depth, unwrap
from training.optim import Scheduler, build_optimizer, build_scheduler

__all__ = [
    "FitResult",
    "LocalReporter",
    "PreparedData",
    "Reporter",
    "fit",
    "prepare_data",
]


@dataclass
class PreparedData:
    """A decoded, split dataset ready for training: uint8 N×C×H×W arrays.

    Plain numpy, so one ``ray.put`` shares it zero-copy with every trial of a sweep.
    An empty validation set means "train on everything" (retraining).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    class_names: list[str]
    preprocessing: Preprocessing
    source_hash: str
    # pixels that augmentation moves in from outside the frame: the background colour where
    # images were composited over it (task1's white), else black/transparent as before
    augment_fill: tuple[float, ...] = ()
    #: the images' ids (``train.csv``'s id column or the file stem), row for row
    train_ids: tuple[str, ...] = ()
    val_ids: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def augment_fill(prep: Preprocessing, report: LoadReport) -> tuple[float, ...]:
    """The fill for :class:`BatchAugment`: :attr:`Preprocessing.fill` when some images had
    transparency that compositing replaced by the background, else zeros (opaque photos such
    as CIFAR-10 have no background colour to continue)."""
    if prep.rgba == "composite" and report.transparent > 0:
        return prep.fill
    return (0.0,) * prep.channels


def prepare_data(
    root: str | Path,
    cfg: TrainConfig,
    *,
    cache_dir: str | Path | None = None,
    train_on_all: bool = False,
) -> tuple[PreparedData, LoadReport]:
    """Decode (or read from the cache) the training split and split it with ``cfg.seed``."""
    images = load_split(root, cfg.data, "train", cache_dir=cache_dir)
    x = np.ascontiguousarray(images.images.transpose(0, 3, 1, 2))
    y = images.labels.astype(np.int64)
    if train_on_all:
        tr, va = np.arange(len(y)), np.arange(0)
    elif cfg.data.group_duplicates:
        from training.data.check import duplicate_groups

        groups = duplicate_groups(root, cfg.data, list(images.ids), cache_dir=cache_dir)
        tr, va = stratified_group_split(y, groups, cfg.data.val_fraction, cfg.seed)
    else:
        tr, va = stratified_split(y, cfg.data.val_fraction, cfg.seed)
    data = PreparedData(
        x_train=x[tr],
        y_train=y[tr],
        x_val=x[va],
        y_val=y[va],
        class_names=list(images.class_names),
        preprocessing=images.preprocessing,
        source_hash=images.source_hash,
        augment_fill=augment_fill(images.preprocessing, images.report),
        train_ids=tuple(images.ids[i] for i in tr),
        val_ids=tuple(images.ids[i] for i in va),
    )
    return data, images.report


class Reporter(Protocol):
    """Where a worker's per-epoch metrics and checkpoints go (Ray Train, Ray Tune, local)."""

    rank: int
    world_size: int

    def report(self, metrics: dict[str, Any], checkpoint: Checkpoint | None) -> None: ...

    def load_checkpoint(self) -> Checkpoint | None: ...


@dataclass
class LocalReporter:
    """No Ray: keeps the metrics, writes the latest checkpoint to ``out_dir`` if given."""

    out_dir: Path | None = None
    on_epoch: Callable[[dict[str, Any]], None] | None = None
    resume_from: Checkpoint | None = None
    rank: int = 0
    world_size: int = 1
    history: list[dict[str, Any]] = field(default_factory=list)
    last_checkpoint: Checkpoint | None = None

    def report(self, metrics: dict[str, Any], checkpoint: Checkpoint | None) -> None:
        self.history.append(metrics)
        if checkpoint is not None:
            self.last_checkpoint = checkpoint
            if self.out_dir is not None:
                checkpoint.save(self.out_dir)
        if self.on_epoch is not None:
            self.on_epoch(metrics)

    def load_checkpoint(self) -> Checkpoint | None:
        return self.resume_from


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int
    stopped_early: bool
    checkpoint: Checkpoint | None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _tensor(array: np.ndarray) -> torch.Tensor:
    # arrays from Ray's object store are read-only; torch wants writable memory
    return torch.from_numpy(np.require(array, requirements="W"))


def _state_on_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class _Phases:
    """Two-phase fine-tuning: head-only epochs, then unfreeze to ``model.freeze_depth``.

    Owns the optimizer and scheduler because both are rebuilt when the phase changes (the
    trainable parameter set and the learning rate change).
    """

    def __init__(self, cfg: TrainConfig, model: nn.Module, *, has_val: bool = True) -> None:
        self.has_val = has_val
        self.cfg = cfg
        self.model = model
        self.head_epochs = cfg.optim.head_epochs
        self.optimizer: torch.optim.Optimizer
        self.scheduler: Scheduler
        self.current: str | None = None

    def phase_of(self, epoch: int) -> str:
        return "head" if epoch < self.head_epochs else "finetune"

    def enter(self, epoch: int) -> bool:
        """Set up the phase for ``epoch``; True when this changed the trainable layers."""
        phase = self.phase_of(epoch)
        if phase == self.current:
            return False
        depth = 0 if phase == "head" else self.cfg.model.freeze_depth
        lr = self.cfg.optim.lr
        if phase == "finetune" and self.head_epochs > 0 and self.cfg.optim.finetune_lr:
            lr = self.cfg.optim.finetune_lr
        set_freeze_depth(self.model, depth)
        # without a validation set the plateau scheduler watches train_loss: lower is better
        mode = mode_of(self.cfg.early_stop.monitor if self.has_val else "train_loss")
        self.optimizer = build_optimizer(self.model, self.cfg.optim, lr)
        self.scheduler = build_scheduler(
            self.optimizer, self.cfg.optim, self.cfg.optim.epochs - epoch, mode
        )
        self.current = phase
        return True


def _device() -> torch.device:
    # under Ray: the GPUs Ray granted this trial (none granted → CPU, whatever is visible)
    return training_device()


@dataclass
class _Run:
    """What changes from epoch to epoch, and what a checkpoint saves of it."""

    model: nn.Module
    phases: _Phases
    early: EarlyStopping
    scaler: torch.amp.GradScaler | None
    channels_last: bool
    has_val: bool
    start_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _build(cfg: TrainConfig, data: PreparedData, device: torch.device) -> _Run:
    """The model on ``device``, its phases, early stopping and (fp16 AMP) grad scaler."""
    model = build_model_for(cfg, data.num_classes).to(device)
    # one rule for fit and the benchmarks' plain loops (loop.kernels_for)
    channels_last = channels_last_for(device, cfg.model.name)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    has_val = len(data.y_val) > 0
    _, needs_scaler = autocast_for(device, cfg.optim.amp)
    return _Run(
        model=model,
        phases=_Phases(cfg, model, has_val=has_val),
        early=EarlyStopping(cfg.early_stop),
        scaler=torch.amp.GradScaler("cuda") if needs_scaler else None,
        channels_last=channels_last,
        has_val=has_val,
    )


def _match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor its parameter's memory format.

    ``load_state_dict`` keeps the strides the state was saved with: a checkpoint written by an
    NCHW model and restored into a channels_last one (a CPU trial resumed on a GPU) leaves
    Adam's moments NCHW, and the fused kernels then pair mismatched elements without an error
    (measured: parameters off by up to 0.15 against unfused Adam).
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if (
                    isinstance(value, torch.Tensor)
                    and value.shape == param.shape
                    and value.stride() != param.stride()
                ):
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _restore(run: _Run, ckpt: Checkpoint) -> None:
    """Continue after ``ckpt``'s epoch with its weights, optimizer, scheduler, early-stopping
    state and best weights."""
    run.start_epoch = ckpt.epoch
    run.model.load_state_dict(ckpt.model)
    run.phases.enter(max(ckpt.epoch - 1, 0))
    run.phases.optimizer.load_state_dict(ckpt.optimizer)
    _match_state_layout(run.phases.optimizer)
    run.phases.scheduler.load_state_dict(ckpt.scheduler)
    if run.scaler is not None and ckpt.scaler:
        run.scaler.load_state_dict(ckpt.scaler)
    run.early.load_state_dict(ckpt.early_stop)
    run.best_state = ckpt.best_model
    run.history = list(ckpt.history)


@dataclass
class _Batches:
    train: ArrayLoader
    val: ArrayLoader
    criterion: nn.Module
    augment: BatchAugment
    prep: Preprocessing


def _batches(
    cfg: TrainConfig, data: PreparedData, reporter: Reporter, device: torch.device, start_epoch: int
) -> _Batches:
    """Loaders over the in-memory arrays, the criterion and augmentation."""
    # Data stays in host memory on CPU; on a GPU the set moves there once if it fits this
    # trial's share of the free memory, else batches go through pinned staging (never pin
    # the whole set: the page-locked allocation rounds up to a power of two per trial)
    nbytes = data.x_train.nbytes + data.x_val.nbytes + data.y_train.nbytes
    on_device = device.type == "cuda" and data_fits_on_device(
        device, nbytes, gpu_share=granted_gpu_share()
    )
    store = device if on_device else torch.device("cpu")
    pin = device.type == "cuda" and not on_device
    x_train = _tensor(data.x_train).to(store)
    y_train = _tensor(data.y_train).to(store)
    x_val = _tensor(data.x_val).to(store)
    y_val = _tensor(data.y_val)

    class_counts = np.bincount(data.y_train, minlength=data.num_classes)
    criterion = build_criterion(cfg.loss, class_counts, cfg.optim.label_smoothing).to(device)
    sampler = build_sampler(cfg.loss, data.y_train, cfg.seed)
    if sampler is None:
        gen = torch.Generator().manual_seed(cfg.seed)
        sampler = torch.utils.data.RandomSampler(range(len(y_train)), generator=gen)
    # the sampler's generator advances once per epoch: replay it on resume for the same order
    for _ in range(start_epoch):
        list(sampler)
    fill = data.augment_fill or (0.0,)
    return _Batches(
        train=ArrayLoader(
            x_train,
            y_train,
            cfg.optim.batch_size,
            sampler,
            reporter.rank,
            reporter.world_size,
            pin_memory=pin,
            min_batch=2,
        ),
        val=ArrayLoader(
            x_val,
            y_val,
            cfg.eval_batch_size,
            None,
            reporter.rank,
            reporter.world_size,
            pin_memory=pin,
        ),
        criterion=criterion,
        augment=BatchAugment(cfg.augment, data.num_classes, fill=fill),
        prep=data.preprocessing,
    )


def _checkpoint(run: _Run, cfg: TrainConfig, data: PreparedData, epoch: int) -> Checkpoint:
    """The state after 0-based ``epoch``, on the CPU."""
    return Checkpoint(
        config=cfg,
        preprocessing=data.preprocessing,
        class_names=list(data.class_names),
        model=_state_on_cpu(run.model),
        best_model=run.best_state,
        epoch=epoch + 1,
        best_epoch=(run.early.best_epoch if run.has_val else epoch) + 1,
        history=copy.deepcopy(run.history),
        optimizer=run.phases.optimizer.state_dict(),
        scheduler=run.phases.scheduler.state_dict(),
        scaler=run.scaler.state_dict() if run.scaler is not None else {},
        early_stop=run.early.state_dict(),
        source_hash=data.source_hash,
    )


def _transfer_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(backbone, head) of a transfer model (plan_features admits only those)."""
    inner: Any = unwrap(model)
    return inner.backbone, inner.head


def _cached_features(
    cfg: TrainConfig,
    data: PreparedData,
    model: nn.Module,
    plan: FeaturePlan,
    batches: _Batches,
    device: torch.device,
    store: FeatureStore | None,
) -> Features:
    """The frozen backbone's features of ``data``, from ``store`` or computed once now."""
    backbone = _transfer_parts(model)[0]
    feats, _ = (store or PROCESS_STORE).get_or_compute(
        feature_key(cfg, data, backbone, plan),
        lambda: compute_features(backbone, data, plan, batches.augment, device, cfg),
    )
    return feats


def _train_epoch(
    cfg: TrainConfig,
    run: _Run,
    batches: _Batches,
    ddp: nn.Module,
    device: torch.device,
    feats: Features | None,
    epoch: int,
    extra_loss: Callable[[], torch.Tensor],
) -> dict[str, float]:
    """One training epoch: the head on cached features, or the (DDP-wrapped) model live."""
    if feats is not None:
        return train_head_one_epoch(
            _transfer_parts(run.model)[1],
            feats.view(epoch),
            batches.train.labels,
            batches.train.sampler or range(len(batches.train.labels)),
            batches.criterion,
            run.phases.optimizer,
            device,
            batch_size=cfg.optim.batch_size,
            regularization=extra_loss,
        )
    return train_one_epoch(
        ddp,
        batches.train,
        batches.criterion,
        run.phases.optimizer,
        device,
        batches.prep,
        augment=batches.augment if batches.augment.enabled else None,
        amp=cfg.optim.amp,
        scaler=run.scaler,
        regularization=extra_loss,
        channels_last=run.channels_last,
    )


def _validate(
    cfg: TrainConfig,
    run: _Run,
    batches: _Batches,
    device: torch.device,
    feats: Features | None,
    num_classes: int,
) -> dict[str, float]:
    """val_loss/val_f1/val_acc of the current weights (NaN without a validation split)."""
    if not run.has_val:
        return {"val_loss": math.nan, "val_f1": math.nan, "val_acc": math.nan}
    if feats is not None:
        return evaluate_head(
            _transfer_parts(run.model)[1],
            feats.val,
            batches.val.labels,
            device,
            num_classes=num_classes,
            batch_size=cfg.eval_batch_size,
        ).metrics()
    return evaluate(
        run.model,
        batches.val,
        device,
        batches.prep,
        num_classes=num_classes,
        amp=cfg.optim.amp,
        channels_last=run.channels_last,
    ).metrics()


def fit(
    cfg: TrainConfig,
    data: PreparedData,
    reporter: Reporter | None = None,
    *,
    device: torch.device | None = None,
    features: FeatureStore | None = None,
) -> FitResult:
    """Train ``cfg`` on ``data``, reporting metrics every epoch and a :class:`Checkpoint`
    whenever one is due.

    Resumes from ``reporter.load_checkpoint()`` when it returns one: the next epoch is the
    one after the checkpoint's, with optimizer, scheduler, early-stopping state and the
    best weights restored. While a transfer backbone is frozen the head trains on cached
    features (see :mod:`training.features`; ``features`` is where they are kept).
    """
    reporter = reporter or LocalReporter()
    device = device or _device()
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    _seed_everything(cfg.seed + reporter.rank)
    prep = data.preprocessing
    if prep.channels != cfg.in_channels:
        raise ConfigError(
            f"data.rgba={cfg.data.rgba!r} needs {cfg.in_channels} channels but the data has "
            f"{prep.channels}"
        )
    run = _build(cfg, data, device)
    resume = reporter.load_checkpoint()
    if resume is not None:
        _restore(run, resume)
    batches = _batches(cfg, data, reporter, device, run.start_epoch)
    model, phases, early = run.model, run.phases, run.early
    extra_loss = functools.partial(regularization, model)
    distributed = reporter.world_size > 1 and dist.is_available() and dist.is_initialized()
    ddp: nn.Module = model
    plan = plan_features(cfg, world_size=reporter.world_size, augment=batches.augment)
    cached: Features | None = None

    stopped_early = False
    epoch = run.start_epoch
    checkpoint: Checkpoint | None = None
    last_saved = time.perf_counter()
    for epoch in range(run.start_epoch, cfg.optim.epochs):
        entered = phases.enter(epoch)
        if entered and epoch > 0 and phases.current == "finetune":
            # fine-tuning gets its own patience, as a second Keras fit() would; the best value
            # and weights carry over, so restore_best may still pick a head-phase epoch
            early.bad_epochs = 0
        if distributed and (entered or ddp is model):
            # DDP records which parameters need grad when it wraps: re-wrap on phase changes
            ddp = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        t0 = time.perf_counter()
        on_features = epoch < plan.epochs
        extract_s = 0.0
        if on_features and cached is None:
            cached = _cached_features(cfg, data, model, plan, batches, device, features)
            extract_s = cached.extract_s
        feats = cached if on_features else None
        train_metrics = _train_epoch(cfg, run, batches, ddp, device, feats, epoch, extra_loss)
        train_time = time.perf_counter() - t0
        val = _validate(cfg, run, batches, device, feats, data.num_classes)
        lr = phases.optimizer.param_groups[0]["lr"]
        monitored = val[cfg.early_stop.monitor] if run.has_val else train_metrics["train_loss"]
        phases.scheduler.step(monitored)
        improved = early.update(epoch, val) if run.has_val else True
        if improved:
            run.best_state = _state_on_cpu(model)
        # early stopping ends fine-tuning; it never cuts the head phase short (that would skip
        # fine-tuning altogether) unless the whole run is head-only
        in_head = phases.current == "head" and cfg.optim.head_epochs < cfg.optim.epochs
        stop = run.has_val and not in_head and early.should_stop(epoch)
        metrics = {
            "epoch": epoch + 1,
            "train_loss": train_metrics["train_loss"],
            **val,
            "lr": lr,
            "epoch_time_s": time.perf_counter() - t0,
            "train_images_per_s": train_metrics["train_images"] * reporter.world_size / train_time,
            "best_val_f1": max([h["val_f1"] for h in run.history] + [val["val_f1"]]),
            "phase": phases.current or "finetune",
            "early_stopped": bool(stop),
            # which path the epoch took (the results show it per trial)
            "features": "cached" if on_features else "live",
            "feature_extract_s": extract_s,
        }
        run.history.append(metrics)
        checkpoint = None
        # the best weights and the final state are never lost; in between, a crash costs at
        # most checkpoint_every_s of training
        due = (
            improved
            or stop
            or epoch + 1 == cfg.optim.epochs
            or time.perf_counter() - last_saved >= cfg.checkpoint_every_s
        )
        if due and reporter.rank == 0:  # one copy is enough: every rank holds the same weights
            last_saved = time.perf_counter()
            checkpoint = _checkpoint(run, cfg, data, epoch)
        reporter.report(metrics, checkpoint)
        if stop:
            stopped_early = True
            break

    if cfg.early_stop.restore_best and run.best_state is not None:
        model.load_state_dict(run.best_state)
    del batches  # the training set's device copy, if it had one
    release_device_memory(device)
    return FitResult(
        model=model,
        history=run.history,
        best_epoch=(early.best_epoch if run.has_val else epoch) + 1,
        stopped_early=stopped_early,
        checkpoint=checkpoint,
    )
