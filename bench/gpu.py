"""On a GPU: the ``overhead`` comparison (plain PyTorch, ``fit``, ``poketune train``, one tune
trial) with the model and data on the device, and trial packing: four task2 trials sharing
one GPU (``--gpus-per-trial 0.25``) against one trial alone on it.

Skipped (and says so in its JSON) when CUDA is not available.  ``run(device="cpu")`` runs
the same code on the CPU with no GPU resources, to check the benchmark itself works.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench._common import (
    BenchReport,
    Target,
    dataset,
    ray_session,
    steady_images_per_s,
    stopwatch,
    write_space,
)
from bench.overhead import TARGET_RATIO, baseline, fixed_space, measure_paths
from training.config import TrainConfig
from training.engine import prepare_data
from training.tasks import preset_config

__all__ = ["main", "packing", "run"]


def packing(
    cfg: TrainConfig,
    root: Path,
    work: Path,
    *,
    trials: int,
    gpus_per_trial: float,
    cpus_per_trial: float,
) -> dict[str, Any]:
    """``trials`` identical trials at once, each holding ``gpus_per_trial`` of the GPU."""
    from tuning.results import load_history
    from tuning.sweep import SweepOptions, run_sweep

    name = f"pack{trials}"
    space = write_space(work / f"{name}.yaml", fixed_space(cfg))
    with stopwatch() as t:
        run_sweep(
            SweepOptions(
                space=str(space),
                data=str(root),
                samples=trials,
                name=name,
                storage=str(work / "runs"),
                max_concurrent=trials,
                cpus_per_trial=cpus_per_trial,
                gpus_per_trial=gpus_per_trial,
                max_failures=0,
            )
        )
    hist = load_history(name, str(work / "runs"))
    per_trial = [
        steady_images_per_s(g.sort_values("training_iteration")["train_images_per_s"].tolist())
        for _, g in hist.groupby("trial_id")
    ]
    n_train = len(prepare_data(root, cfg)[0].y_train)
    return {
        "trials": trials,
        "gpus_per_trial": gpus_per_trial,
        "cpus_per_trial": cpus_per_trial,
        "per_trial_img_per_s": sum(per_trial) / len(per_trial),
        "sum_img_per_s": sum(per_trial),
        "images_per_wall_s": n_train * len(hist) / t["s"],
        "wall_s": t["s"],
    }


def run(
    quick: bool = False, out: str | Path = "bench/results", *, device: str | None = None
) -> BenchReport:
    t0 = time.perf_counter()
    device = device or ("cuda" if torch.cuda.is_available() else None)
    cfg = preset_config("task2", {"optim.epochs": 2 if quick else 5})
    scale = 0.05 if quick else 1.0
    config = {"task": "task2", "scale": scale, "epochs": cfg.optim.epochs, "device": device}
    if device is None:
        return BenchReport(
            benchmark="gpu",
            quick=quick,
            config=config,
            tables={},
            skipped="no CUDA device (torch.cuda.is_available() is False)",
        )
    dev = torch.device(device)
    on_gpu = dev.type == "cuda"
    root = dataset("task2", scale, out)
    cpus = os.cpu_count() or 1
    threads = max(1, cpus // 4) if on_gpu else 1
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp, ray_session() as ray_init_s:
        work = Path(tmp)
        runs = measure_paths(cfg, root, threads=threads, device=dev, work=work)
        pack = [
            packing(
                cfg,
                root,
                work,
                trials=n,
                gpus_per_trial=(1.0 / n) if on_gpu else 0.0,
                cpus_per_trial=max(1.0, float(cpus // n)) if on_gpu else 1.0,
            )
            for n in (1, 4)
        ]
    base = baseline(runs)
    rows = [r.row(base) for r in runs]
    by_path = {r["path"]: r for r in rows}
    speedup = pack[1]["images_per_wall_s"] / pack[0]["images_per_wall_s"]
    report = BenchReport(
        benchmark="gpu",
        quick=quick,
        config={**config, "torch_threads": threads},
        tables={"throughput per path": rows, "packing: trials sharing one GPU": pack},
        summary={"ray_init_s": ray_init_s, "packing_speedup_4_vs_1": speedup},
        targets=[
            Target(f"{path} / plain", by_path[path]["vs_plain"], TARGET_RATIO, ">=")
            for path in ("poketune train (TorchTrainer)", "poketune tune (1 trial)")
        ],
    )
    report.elapsed_s = time.perf_counter() - t0
    return report


def main() -> None:
    from bench import cli_main

    cli_main("gpu")


if __name__ == "__main__":
    main()
