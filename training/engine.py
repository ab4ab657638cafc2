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

from training.checkpoint import Checkpoint, StateDict, build_model_for, load_initial_weights
from training.config import ConfigError, TrainConfig
from training.data import (
    LoadReport,
    Preprocessing,
    load_split,
    stratified_group_split,
    stratified_split,
)
from training.data.augment import BatchAugment
from training.deadline import Deadline
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
    EvalResult,
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
    "CheckpointSchedule",
    "FitResult",
    "Fitter",
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
    #: which split of the data this is when there are several of one size (a CV fold):
    #: caches keyed on the split (frozen-backbone features) tell them apart by it
    split: str = ""

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
    #: the deadline ended it before ``optim.epochs`` (:mod:`training.deadline`)
    stopped_by_deadline: bool = False


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

    def base_lr(self, epoch: int) -> float:
        """The configured rate of ``epoch``'s phase (before any schedule)."""
        if self.phase_of(epoch) == "finetune" and self.head_epochs > 0 and self.cfg.optim.finetune_lr:
            return float(self.cfg.optim.finetune_lr)
        return float(self.cfg.optim.lr)

    def enter(self, epoch: int) -> bool:
        """Set up the phase for ``epoch``; True when this changed the trainable layers."""
        phase = self.phase_of(epoch)
        if phase == self.current:
            return False
        depth = 0 if phase == "head" else self.cfg.model.freeze_depth
        lr = self.base_lr(epoch)
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
    best_epoch: int = -1  # 0-based epoch whose weights ``best_state`` holds
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


def _apply_new_rates(run: _Run, saved: TrainConfig, epoch: int) -> None:
    """The learning rate and weight decay of the config in effect, on a restored optimizer.

    ``load_state_dict`` puts back the rates the checkpoint was saved with. When the run goes
    on under another config (PBT: a trial copies another's checkpoint and continues with
    perturbed hyperparameters), the new base rate takes over with the schedule's progress
    kept: every group's rate (and the scheduler's base rates) is scaled by new / old base.
    """
    new = run.phases.cfg
    factor = run.phases.base_lr(epoch) / _Phases(saved, run.model).base_lr(epoch)
    optimizer, scheduler = run.phases.optimizer, run.phases.scheduler
    for group in optimizer.param_groups:
        if factor != 1.0:
            group["lr"] *= factor
            if "initial_lr" in group:
                group["initial_lr"] *= factor
        if "weight_decay" in group and new.optim.weight_decay != saved.optim.weight_decay:
            group["weight_decay"] = new.optim.weight_decay
    inner: Any = scheduler.inner
    if factor != 1.0 and hasattr(inner, "base_lrs"):
        inner.base_lrs = [lr * factor for lr in inner.base_lrs]


def _restore(run: _Run, ckpt: Checkpoint) -> None:
    """Continue after ``ckpt``'s epoch with its weights, optimizer, scheduler, early-stopping
    state and best weights (under the run's own config: see :func:`_apply_new_rates`)."""
    run.start_epoch = ckpt.epoch
    run.model.load_state_dict(ckpt.model)
    run.phases.enter(max(ckpt.epoch - 1, 0))
    run.phases.optimizer.load_state_dict(ckpt.optimizer)
    _match_state_layout(run.phases.optimizer)
    run.phases.scheduler.load_state_dict(ckpt.scheduler)
    _apply_new_rates(run, ckpt.config, max(ckpt.epoch - 1, 0))
    if run.scaler is not None and ckpt.scaler:
        run.scaler.load_state_dict(ckpt.scaler)
    run.early.load_state_dict(ckpt.early_stop)
    run.best_state = ckpt.best_model
    run.best_epoch = ckpt.best_epoch - 1
    run.history = list(ckpt.history)


@dataclass
class _Batches:
    train: ArrayLoader
    val: ArrayLoader
    criterion: nn.Module
    augment: BatchAugment
    prep: Preprocessing


def _batches(
    cfg: TrainConfig,
    data: PreparedData,
    rank: int,
    world_size: int,
    device: torch.device,
    start_epoch: int,
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
            rank,
            world_size,
            pin_memory=pin,
            min_batch=2,
        ),
        val=ArrayLoader(
            x_val,
            y_val,
            cfg.eval_batch_size,
            None,
            rank,
            world_size,
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
        best_epoch=run.best_epoch + 1,
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
) -> EvalResult | None:
    """The current weights on the validation split (None without one)."""
    if not run.has_val:
        return None
    if feats is not None:
        return evaluate_head(
            _transfer_parts(run.model)[1],
            feats.val,
            batches.val.labels,
            device,
            num_classes=num_classes,
            batch_size=cfg.eval_batch_size,
        )
    return evaluate(
        run.model,
        batches.val,
        device,
        batches.prep,
        num_classes=num_classes,
        amp=cfg.optim.amp,
        channels_last=run.channels_last,
    )


NO_VAL = {"val_loss": math.nan, "val_f1": math.nan, "val_acc": math.nan}


class Fitter:
    """One model's training, an epoch at a time.

    ``fit`` drives one for a run; :func:`training.cv.fit_cv` drives K of them in lockstep,
    one per fold. A Fitter trains and validates; whether an epoch is the best so far, and
    whether to stop, is its driver's judgement (:meth:`keep_best`), because a cross-validated
    trial judges on the mean over its folds.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        data: PreparedData,
        *,
        rank: int = 0,
        world_size: int = 1,
        resume: Checkpoint | None = None,
        device: torch.device | None = None,
        features: FeatureStore | None = None,
        seed_offset: int = 0,
        init_weights: StateDict | None = None,
    ) -> None:
        self.cfg, self.data = cfg, data
        self.rank, self.world_size = rank, world_size
        self.device = device or _device()
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        _seed_everything(cfg.seed + rank + seed_offset)
        if data.preprocessing.channels != cfg.in_channels:
            raise ConfigError(
                f"data.rgba={cfg.data.rgba!r} needs {cfg.in_channels} channels but the data has "
                f"{data.preprocessing.channels}"
            )
        self.run = _build(cfg, data, self.device)
        if resume is not None:  # a resumed run already moved on from its initial weights
            _restore(self.run, resume)
        elif init_weights is not None:
            load_initial_weights(self.run.model, init_weights, source="the initial weights")
        self.batches: _Batches | None = _batches(
            cfg, data, rank, world_size, self.device, self.run.start_epoch
        )
        self.epoch = self.run.start_epoch  # the next epoch to train, 0-based
        self.plan = plan_features(cfg, world_size=world_size, augment=self.batches.augment)
        self.features = features
        self.distributed = world_size > 1 and dist.is_available() and dist.is_initialized()
        self._ddp: nn.Module = self.run.model
        self._extra_loss = functools.partial(regularization, self.run.model)
        self._cached: Features | None = None
        #: the last epoch's validation predictions (None without a validation split)
        self.last_eval: EvalResult | None = None
        #: whether the last epoch began fine-tuning after a head phase
        self.began_finetune = False

    @property
    def model(self) -> nn.Module:
        return self.run.model

    @property
    def has_val(self) -> bool:
        return self.run.has_val

    @property
    def done(self) -> bool:
        return self.epoch >= self.cfg.optim.epochs

    @property
    def in_head(self) -> bool:
        """In a head phase that fine-tuning follows (early stopping must not cut it short:
        that would skip fine-tuning altogether)."""
        return (
            self.run.phases.current == "head" and self.cfg.optim.head_epochs < self.cfg.optim.epochs
        )

    @property
    def best_epoch(self) -> int:
        """The 0-based epoch of the kept best weights."""
        return self.run.best_epoch

    def train_epoch(self) -> dict[str, Any]:
        """Train and validate epoch :attr:`epoch`; its metrics, short of the judgement
        (``best_val_f1``, ``early_stopped``), which the driver adds."""
        cfg, run, epoch, device = self.cfg, self.run, self.epoch, self.device
        assert self.batches is not None, "train_epoch after finish"
        entered = run.phases.enter(epoch)
        self.began_finetune = entered and epoch > 0 and run.phases.current == "finetune"
        if self.distributed and (entered or self._ddp is run.model):
            # DDP records which parameters need grad when it wraps: re-wrap on phase changes
            self._ddp = DistributedDataParallel(
                run.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        t0 = time.perf_counter()
        on_features = epoch < self.plan.epochs
        extract_s = 0.0
        if on_features and self._cached is None:
            self._cached = _cached_features(
                cfg, self.data, run.model, self.plan, self.batches, device, self.features
            )
            extract_s = self._cached.extract_s
        feats = self._cached if on_features else None
        train_metrics = _train_epoch(
            cfg, run, self.batches, self._ddp, device, feats, epoch, self._extra_loss
        )
        train_time = time.perf_counter() - t0
        self.last_eval = _validate(cfg, run, self.batches, device, feats, self.data.num_classes)
        val = self.last_eval.metrics() if self.last_eval is not None else dict(NO_VAL)
        lr = run.phases.optimizer.param_groups[0]["lr"]
        run.phases.scheduler.step(
            val[cfg.early_stop.monitor] if run.has_val else train_metrics["train_loss"]
        )
        return {
            "epoch": epoch + 1,
            "train_loss": train_metrics["train_loss"],
            **val,
            "lr": lr,
            "epoch_time_s": time.perf_counter() - t0,
            "train_images_per_s": train_metrics["train_images"] * self.world_size / train_time,
            "phase": run.phases.current or "finetune",
            # which path the epoch took (the results show it per trial)
            "features": "cached" if on_features else "live",
            "feature_extract_s": extract_s,
        }

    def keep_best(self) -> None:
        """The current weights become the best ones (of the epoch just trained)."""
        self.run.best_state = _state_on_cpu(self.run.model)
        self.run.best_epoch = self.epoch

    def end_epoch(self, metrics: dict[str, Any]) -> None:
        """Record the epoch just trained (its metrics with the judgement) and move on."""
        self.run.history.append(metrics)
        self.epoch += 1

    def checkpoint(self) -> Checkpoint:
        """The state after the last ended epoch, on the CPU."""
        return _checkpoint(self.run, self.cfg, self.data, self.epoch - 1)

    def finish(self) -> nn.Module:
        """The model with its best weights (``early_stop.restore_best``); frees the loaders."""
        if self.cfg.early_stop.restore_best and self.run.best_state is not None:
            self.run.model.load_state_dict(self.run.best_state)
        self.batches = None  # the training set's device copy, if it had one
        release_device_memory(self.device)
        return self.run.model


@dataclass
class CheckpointSchedule:
    """When a fit saves a checkpoint after an epoch: the best weights and the final state are
    never lost; in between, a crash costs at most ``every_s`` seconds of training (a
    checkpoint every epoch of a fast task costs more than the epoch)."""

    every_s: float
    last_saved: float = field(default_factory=time.perf_counter)

    def due(self, *, improved: bool, last: bool) -> bool:
        """Whether to save now (``last``: the fit ends after this epoch); if so, the clock restarts."""
        if improved or last or time.perf_counter() - self.last_saved >= self.every_s:
            self.last_saved = time.perf_counter()
            return True
        return False


def _all_agree(yes: bool, fitter: Fitter) -> bool:
    """``yes`` on every data-parallel rank (each rank's own clock can differ at the margin:
    they must not part ways, or one would wait in a collective for a peer that stopped)."""
    if not fitter.distributed:
        return yes
    flag = torch.tensor([1 if yes else 0], device=fitter.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def fit(
    cfg: TrainConfig,
    data: PreparedData,
    reporter: Reporter | None = None,
    *,
    device: torch.device | None = None,
    features: FeatureStore | None = None,
    deadline: float | None = None,
    init_weights: StateDict | None = None,
) -> FitResult:
    """Train ``cfg`` on ``data``, reporting metrics every epoch and a :class:`Checkpoint`
    whenever one is due.

    ``deadline`` (unix time): the fit ends after the last epoch that, its report included,
    finishes by then (:class:`training.deadline.Deadline`); the first epoch always runs.
    ``init_weights``: the model starts from these (a warm start, e.g. ``retrain
    --from-trial-weights`` from a trial's best weights) instead of its configured initialisation;
    the optimizer, schedule and epochs start afresh. Without the head's weights
    (:func:`training.checkpoint.without_head`) the head keeps its seeded initialisation.

    Resumes from ``reporter.load_checkpoint()`` when it returns one: the next epoch is the
    one after the checkpoint's, with optimizer, scheduler, early-stopping state and the
    best weights restored. While a transfer backbone is frozen the head trains on cached
    features (see :mod:`training.features`; ``features`` is where they are kept).
    """
    reporter = reporter or LocalReporter()
    fitter = Fitter(
        cfg,
        data,
        rank=reporter.rank,
        world_size=reporter.world_size,
        resume=reporter.load_checkpoint(),
        device=device,
        features=features,
        init_weights=init_weights,
    )
    early = fitter.run.early
    stopped_early = False
    checkpoint: Checkpoint | None = None
    schedule = CheckpointSchedule(cfg.checkpoint_every_s)
    clock = Deadline(deadline) if deadline is not None else None
    out_of_time = False
    while not fitter.done:
        epoch = fitter.epoch
        if clock is not None:
            clock.epoch_started()
        metrics = fitter.train_epoch()
        if fitter.began_finetune:
            # fine-tuning gets its own patience, as a second Keras fit() would; the best value
            # and weights carry over, so restore_best may still pick a head-phase epoch
            early.bad_epochs = 0
        improved = early.update(epoch, metrics) if fitter.has_val else True
        if improved:
            fitter.keep_best()
        stop = fitter.has_val and not fitter.in_head and early.should_stop(epoch)
        metrics["best_val_f1"] = max(
            [h["val_f1"] for h in fitter.run.history] + [metrics["val_f1"]]
        )
        metrics["early_stopped"] = bool(stop)
        fitter.end_epoch(metrics)
        if clock is not None and not stop and not fitter.done:
            out_of_time = not _all_agree(clock.next_fits(), fitter)
        checkpoint = None
        due = schedule.due(improved=improved, last=stop or out_of_time or fitter.done)
        if due and reporter.rank == 0:  # one copy is enough: every rank holds the same weights
            checkpoint = fitter.checkpoint()
        reporter.report(metrics, checkpoint)
        if clock is not None:
            clock.reported()
        if stop:
            stopped_early = True
            break
        if out_of_time:
            break
    model = fitter.finish()
    return FitResult(
        model=model,
        history=fitter.run.history,
        best_epoch=fitter.best_epoch + 1,
        stopped_early=stopped_early,
        checkpoint=checkpoint,
        stopped_by_deadline=out_of_time,
    )
