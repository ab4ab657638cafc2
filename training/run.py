"""``poketune train``: one training run through Ray Train's ``TorchTrainer``."""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.checkpoint import CHECKPOINT_FILE, Checkpoint
from training.config import TrainConfig
from training.data.check import check_before_training
from training.engine import prepare_data
from training.evaluation import evaluate_checkpoint
from training.models import check_pretrained_offline

__all__ = [
    "TrainOutcome",
    "run_training",
]

log = logging.getLogger("poketune")


@dataclass
class TrainOutcome:
    checkpoint_path: Path
    history: list[dict[str, Any]]
    report: str
    best_epoch: int
    wall_time_s: float


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

    from training.ray_session import cpus_per_worker, init_ray, node_cpus, torch_threads
    from training.ray_worker import run_torch_trainer

    t0 = _dt.datetime.now()
    out_dir = Path(out or Path("poketune_runs") / "train" / f"{cfg.task}-{t0:%Y%m%d-%H%M%S}").resolve()
    # before decoding and Ray: otherwise every worker fails, deep in a Ray traceback
    check_pretrained_offline(cfg.model, task=cfg.task)
    if (out_dir / CHECKPOINT_FILE).exists():
        # Ray Train would silently *continue* the old run under the same name
        raise FileExistsError(f"{out_dir} already holds a trained model; choose another --out")
    check_before_training(data_dir, cfg.data, cache_dir=cache_dir)
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
    cfg = cfg.replace(num_threads=torch_threads(cpus))  # torch's threads match the CPUs reserved
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
        ckpt = Checkpoint.load(d)
    final = ckpt.save(out_dir)
    return TrainOutcome(
        checkpoint_path=final,
        history=list(ckpt.history),
        report=evaluate_checkpoint(ckpt, data, device=torch.device("cpu")).report()
        if len(data.y_val)
        else "",
        best_epoch=ckpt.best_epoch,
        wall_time_s=(_dt.datetime.now() - t0).total_seconds(),
    )
