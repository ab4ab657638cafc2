"""Ray adapters around :func:`training.engine.fit`.

They only wire objects: the Tune/Train config dict becomes a :class:`TrainConfig` here, the
dataset comes out of the object store, and a :class:`RayReporter` turns poketune's
:class:`~training.checkpoint.Checkpoint` into a Ray checkpoint folder. The same ``fit`` runs in both places:

* ``train_loop_per_worker`` — each worker of a ``TorchTrainer`` (data-parallel, gloo/NCCL);
* ``tuning.sweep``'s single-worker trials — ``fit`` inside the Tune trial process with a
  :class:`RayReporter` over ``ray.tune`` (no TorchTrainer start-up cost).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.tune
from ray.train import Checkpoint as RayCheckpoint
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from training.checkpoint import Checkpoint, StateDict, load_resumable, save_resumable
from training.config import TrainConfig
from training.engine import PreparedData, fit

__all__ = [
    "RayReporter",
    "format_epoch",
    "run_torch_trainer",
    "train_loop_per_worker",
]


TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
TRAIN_POLL_S = "0.2"


def format_epoch(m: dict[str, Any]) -> str:
    return (
        f"epoch {m['epoch']:>3}  train_loss {m['train_loss']:.4f}  val_loss {m['val_loss']:.4f}  "
        f"val_f1 {m['val_f1']:.4f}  val_acc {m['val_acc']:.4f}  lr {m['lr']:.2e}  "
        f"{m['epoch_time_s']:.1f}s"
    )


@dataclass
class RayReporter:
    """Reports through ``ray.train`` (TorchTrainer workers) or ``ray.tune`` (Tune trials).

    Every reported metrics dict also carries ``node_id``, the Ray node that ran the epoch.
    """

    report_fn: Callable[..., None]
    get_checkpoint_fn: Callable[[], RayCheckpoint | None]
    rank: int = 0
    world_size: int = 1
    echo: bool = False
    #: a Tune trial's id: a checkpoint handed over from another trial (PBT's exploit) is
    #: reported as ``exploited_from`` / ``exploited_epoch`` with the next epoch
    trial_id: str | None = None
    #: values reported with every epoch (a trial's model cost)
    extra: dict[str, Any] = field(default_factory=dict)
    _exploited: dict[str, Any] | None = field(default=None, init=False, repr=False)
    #: the file bytes of the checkpoint reported last: written into the next checkpoint's
    #: folder as its fallback (:data:`~training.checkpoint.PREVIOUS_FILE`)
    _previous: bytes | None = field(default=None, init=False, repr=False)
    #: reported with the next epoch when resume had to fall back to the previous checkpoint
    _fallback: str | None = field(default=None, init=False, repr=False)

    def report(self, metrics: dict[str, Any], checkpoint: Checkpoint | None) -> None:
        if self.echo and self.rank == 0:
            print(format_epoch(metrics), flush=True)
        # which node ran each epoch: Tune's own node_ip is the same for every node of a host,
        # and a trial retried after a node died continues on another node
        metrics = {**metrics, **self.extra, "node_id": ray.get_runtime_context().get_node_id()}
        if self._exploited is not None:
            metrics.update(self._exploited)
            self._exploited = None
        if self._fallback is not None:
            metrics["checkpoint_fallback"] = self._fallback
            self._fallback = None
        if checkpoint is None:
            self.report_fn(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            data = save_resumable(tmp, checkpoint, self._previous)
            self.report_fn(metrics, checkpoint=RayCheckpoint.from_directory(tmp))
        self._previous = data

    def load_checkpoint(self) -> Checkpoint | None:
        ckpt = self.get_checkpoint_fn()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            state, self._previous, fallback = load_resumable(d)
        if fallback is not None:
            # the trial's own log, and its next result (the sweep's progress prints it)
            print(f"poketune: {fallback}", file=sys.stderr, flush=True)
            self._fallback = fallback
        # a trial's checkpoints live in its own folder, named by its id (tuning.sweep)
        source = Path(ckpt.path).parent.name
        if self.trial_id is not None and source != self.trial_id:
            self._exploited = {"exploited_from": source, "exploited_epoch": state.epoch}
        return state


def _resolve(data: Any) -> PreparedData:
    return ray.get(data) if isinstance(data, ray.ObjectRef) else data


def _resolve_weights(weights: Any) -> StateDict | None:
    return ray.get(weights) if isinstance(weights, ray.ObjectRef) else weights


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """TorchTrainer entry: ``config = {"train": flat TrainConfig dict, "data": ObjectRef}``."""
    cfg = TrainConfig.from_flat(config["train"])
    ctx = ray.train.get_context()
    reporter = RayReporter(
        ray.train.report,
        ray.train.get_checkpoint,
        rank=ctx.get_world_rank(),
        world_size=ctx.get_world_size(),
        echo=bool(config.get("echo", False)),
    )
    fit(
        cfg,
        _resolve(config["data"]),
        reporter,
        device=ray.train.torch.get_device(),
        deadline=config.get("deadline"),
        init_weights=_resolve_weights(config.get("init_weights")),
    )


def run_torch_trainer(
    cfg: TrainConfig,
    data: PreparedData | ray.ObjectRef,
    *,
    storage_path: str,
    name: str,
    workers: int = 1,
    use_gpu: bool = False,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float | None = None,
    max_failures: int = 0,
    callbacks: list[Any] | None = None,
    echo: bool = True,
    deadline: float | None = None,
    init_weights: StateDict | None = None,
) -> ray.train.Result:
    """Run ``fit`` on ``workers`` data-parallel Ray Train workers and return the Result.

    Re-running with the same ``storage_path``/``name`` resumes from the run's latest
    checkpoint (Train V2 restores a run by its name), which is what makes Tune trials that
    drive a TorchTrainer resumable. ``init_weights``: every worker's model starts from these
    (``fit``'s warm start), sent once through the object store.
    """
    if not isinstance(data, ray.ObjectRef):
        data = ray.put(data)
    # Train's controller collects reports by polling its workers (every 2 s by default) and a
    # worker's report() waits until the previous one was collected: epochs shorter than the
    # poll interval were stretched to it (task1's 1.2 s epochs took 2 s, measured). The
    # controller takes this setting from the environment of the process that calls fit().
    os.environ.setdefault(TRAIN_POLL_ENV, TRAIN_POLL_S)
    resources: dict[str, float] = {"CPU": cpus_per_worker}
    if use_gpu:
        resources["GPU"] = gpus_per_worker if gpus_per_worker is not None else 1.0
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "train": cfg.to_flat(),
            "data": data,
            "echo": echo,
            "deadline": deadline,
            "init_weights": None if init_weights is None else ray.put(init_weights),
        },
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            failure_config=FailureConfig(max_failures=max_failures),
            callbacks=callbacks,
        ),
    )
    return trainer.fit()
