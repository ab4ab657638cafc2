"""``poketune train``: one training run through Ray Train's ``TorchTrainer``."""

from __future__ import annotations

import datetime as _dt
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import classification_report

from training.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.data import Preprocessing
from training.engine import PreparedData, build_model_for, prepare_data
from training.loop import ArrayLoader, evaluate

__all__ = [
    "TrainOutcome",
    "cpus_per_worker",
    "model_from_checkpoint",
    "node_cpus",
    "run_training",
    "validation_report",
]

log = logging.getLogger("poketune")


@dataclass
class TrainOutcome:
    checkpoint_path: Path
    history: list[dict[str, Any]]
    report: str
    best_epoch: int
    wall_time_s: float


def model_from_checkpoint(
    state: dict[str, Any], *, best: bool = True
) -> tuple[torch.nn.Module, TrainConfig]:
    """Rebuild the model a checkpoint dict describes, with its best (or last) weights."""
    cfg = TrainConfig.from_flat(state["config"])
    # the checkpoint holds every weight: fetching ImageNet weights first would be wasted (and
    # fails offline)
    cfg = cfg.replace(**{"model.pretrained": False, "model.weights_path": None})
    model = build_model_for(cfg, len(state["class_names"]))
    weights = state.get("best_model") if best else None
    model.load_state_dict(weights if weights is not None else state["model"])
    return model.eval(), cfg


def validation_report(state: dict[str, Any], data: PreparedData) -> str:
    """scikit-learn's per-class report of the checkpoint's best model on ``data``'s val split."""
    model, cfg = model_from_checkpoint(state)
    loader = ArrayLoader(torch.as_tensor(data.x_val), torch.as_tensor(data.y_val), cfg.eval_batch_size)
    device = torch.device("cpu")
    res = evaluate(
        model, loader, device, Preprocessing.from_dict(data.preprocessing), num_classes=data.num_classes
    )
    return str(
        classification_report(
            res.y_true,
            res.y_pred,
            labels=np.arange(data.num_classes),
            target_names=data.class_names,
            zero_division=0,
            digits=3,
        )
    )


def node_cpus() -> list[float]:
    """The CPUs of each live node of the connected Ray cluster."""
    import ray

    return [float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]


def cpus_per_worker(num_threads: int, workers: int, node_cpus: list[float]) -> float:
    """CPUs (and torch threads) for each of ``workers`` Ray Train workers.

    ``num_threads`` (``--set num_threads=N``) when given, else an even share of the
    cluster's CPUs: one worker on a laptop gets every core (Ray would otherwise pin it to
    one thread). Capped at the largest node, since a worker runs on one node, and at least
    one CPU.
    """
    largest = max(node_cpus, default=1.0)
    share = max(1, math.floor(min(largest, sum(node_cpus) / max(workers, 1))))
    return float(max(1, min(num_threads or share, share)))


def run_training(
    cfg: TrainConfig,
    data_dir: str | Path,
    *,
    out: str | Path | None = None,
    workers: int = 1,
    use_gpu: bool = False,
    cache_dir: str | Path | None = None,
    address: str | None = None,
    verbose: bool = False,
) -> TrainOutcome:
    """Decode/cache the data, train on ``workers`` Ray Train workers, write the checkpoint."""

    from training.ray_worker import run_torch_trainer
    from tuning.sweep import init_ray

    t0 = _dt.datetime.now()
    out_dir = Path(out or Path("poketune_runs") / "train" / f"{cfg.task}-{t0:%Y%m%d-%H%M%S}").resolve()
    if (out_dir / CHECKPOINT_FILE).exists():
        # Ray Train would silently *continue* the old run under the same name
        raise FileExistsError(f"{out_dir} already holds a trained model; choose another --out")
    data, report = prepare_data(data_dir, cfg, cache_dir=cache_dir)
    print(
        f"data: {len(data.y_train)} train / {len(data.y_val)} val images, "
        f"{data.num_classes} classes ({'cache hit' if report.from_cache else f'decoded {report.decoded}'}"
        + (f", crop fell back on {report.crop_fallbacks} images" if report.crop_fallbacks else "")
        + (f", skipped {len(report.skipped)} bad items" if report.skipped else "")
        + ")",
        flush=True,
    )
    init_ray(address, verbose=verbose)
    cpus = cpus_per_worker(cfg.num_threads, workers, node_cpus())
    cfg = cfg.replace(num_threads=int(cpus))  # torch's threads match the CPUs reserved
    result = run_torch_trainer(
        cfg,
        data,
        storage_path=str(out_dir.parent),
        name=out_dir.name,
        workers=workers,
        use_gpu=use_gpu,
        cpus_per_worker=cpus,
    )
    if result.checkpoint is None:
        raise RuntimeError(f"training reported no checkpoint (see {result.path})")
    with result.checkpoint.as_directory() as d:
        state = load_checkpoint(d)
    final = save_checkpoint(state, out_dir)
    return TrainOutcome(
        checkpoint_path=final,
        history=list(state["history"]),
        report=validation_report(state, data) if len(data.y_val) else "",
        best_epoch=int(state["best_epoch"]),
        wall_time_s=(_dt.datetime.now() - t0).total_seconds(),
    )
