"""Framework overhead: the same task2 CNN, data, batch size and epochs trained by

* a minimal plain-PyTorch loop over in-memory float tensors (the yardstick),
* ``training.engine.fit`` with no Ray (the project's loop: uint8 batches, augmentation hook,
  per-epoch evaluation and checkpoint dicts),
* ``poketune train``'s path (``run_training`` → one-worker ``TorchTrainer``),
* one trial of ``poketune tune`` (``run_sweep``, one sample, a fixed space).

The plain loop runs first and again last; ``vs_plain`` divides by the mean of the two.
Steady-state images/s leave epoch 1 out (allocator and cache warm-up). ``startup_s`` is the
wall time outside the epochs: Ray actors, data hand-off, checkpoints, the final report.
Target: the Ray paths train at >= 0.95 of the plain loop's speed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench._common import (
    BenchReport,
    Target,
    dataset,
    ray_session,
    steady_images_per_s,
    stopwatch,
    write_space,
)
from training.config import TrainConfig
from training.engine import LocalReporter, PreparedData, fit, prepare_data
from training.models import build_model
from training.tasks import preset_config

__all__ = [
    "Measured",
    "baseline",
    "bench_config",
    "fixed_space",
    "main",
    "measure_paths",
    "plain_pytorch",
    "run",
]

TARGET_RATIO = 0.95


@dataclass
class Measured:
    """One way of training: per-epoch throughput and where the wall time went."""

    path: str
    images_per_s: list[float]  # training images/s of each epoch
    epoch_s: list[float]  # each epoch's train + evaluation time
    wall_s: float
    n_train: int

    def row(self, baseline: float | None) -> dict[str, Any]:
        steady = steady_images_per_s(self.images_per_s)
        train_s = sum(self.n_train / r for r in self.images_per_s if r > 0)
        return {
            "path": self.path,
            "epochs": len(self.images_per_s),
            "img_per_s": steady,
            "vs_plain": steady / baseline if baseline else math.nan,
            "train_s": train_s,
            "eval_s": sum(self.epoch_s) - train_s,
            "startup_s": self.wall_s - sum(self.epoch_s),
            "wall_s": self.wall_s,
        }


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def plain_pytorch(cfg: TrainConfig, data: PreparedData, device: torch.device) -> Measured:
    """The yardstick: float tensors normalised once, randperm batches, fused Adam, cross-entropy,
    an argmax pass over the validation set per epoch. Nothing else."""
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    prep = data.preprocessing
    mean = torch.tensor(prep.mean).view(1, -1, 1, 1)
    std = torch.tensor(prep.std).view(1, -1, 1, 1)
    x = ((torch.as_tensor(data.x_train).float() / 255 - mean) / std).to(device)
    y = torch.as_tensor(data.y_train).to(device)
    x_val = ((torch.as_tensor(data.x_val).float() / 255 - mean) / std).to(device)
    model = build_model(
        cfg.model,
        in_channels=cfg.in_channels,
        num_classes=data.num_classes,
        image_size=cfg.data.image_size,
    ).to(device)
    # the fused step fit's optimizer registry uses: the ratio then measures the framework
    # around the step, not which Adam kernel ran
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, fused=True)
    loss_fn = nn.CrossEntropyLoss()
    rates, epoch_s = [], []
    for _ in range(cfg.optim.epochs):
        t0 = time.perf_counter()
        model.train()
        for idx in torch.randperm(len(y), device=device).split(cfg.optim.batch_size):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(len(y) / (time.perf_counter() - t0))
        model.eval()
        with torch.no_grad():
            model(x_val).argmax(-1).cpu()
        epoch_s.append(time.perf_counter() - t0)
    return Measured("plain PyTorch", rates, epoch_s, time.perf_counter() - t_start, len(y))


def _from_history(path: str, history: list[dict[str, Any]], wall: float, n: int) -> Measured:
    return Measured(
        path,
        [float(h["train_images_per_s"]) for h in history],
        [float(h["epoch_time_s"]) for h in history],
        wall,
        n,
    )


def _fit_local(cfg: TrainConfig, data: PreparedData, device: torch.device) -> Measured:
    with stopwatch() as t:
        result = fit(cfg, data, LocalReporter(), device=device)
    return _from_history("engine.fit (no Ray)", result.history, t["s"], len(data.y_train))


def _train_path(cfg: TrainConfig, root: Path, work: Path, n: int, *, use_gpu: bool) -> Measured:
    from training.run import run_training

    with stopwatch() as t:
        outcome = run_training(cfg, root, out=work / "train", use_gpu=use_gpu)
    return _from_history("poketune train (TorchTrainer)", outcome.history, t["s"], n)


def _tune_path(
    cfg: TrainConfig, root: Path, work: Path, n: int, *, gpus: float, cpus: float
) -> Measured:
    from tuning.results import Sweep
    from tuning.sweep import SweepOptions, run_sweep

    space = write_space(work / "fixed.yaml", fixed_space(cfg))
    with stopwatch() as t:
        run_sweep(
            SweepOptions(
                space=str(space),
                data=str(root),
                samples=1,
                name="overhead",
                storage=str(work / "runs"),
                cpus_per_trial=cpus,
                gpus_per_trial=gpus,
                seed=cfg.seed,
                max_failures=0,
            )
        )
    hist = Sweep.open("overhead", str(work / "runs")).history().sort_values("training_iteration")
    return _from_history("poketune tune (1 trial)", hist.to_dict("records"), t["s"], n)


def fixed_space(cfg: TrainConfig) -> dict[str, Any]:
    """A search space whose single trial is exactly ``cfg`` (nothing varies but the lr
    "choice" of one value: a space needs one searched parameter)."""
    preset = preset_config(cfg.task).to_flat()
    flat = cfg.to_flat()
    skip = {"task", "optim.epochs", "optim.lr", "seed", "num_threads"}
    fixed = {k: v for k, v in flat.items() if k not in skip and v != preset.get(k)}
    return {
        "task": cfg.task,
        "asha": {"max_epochs": cfg.optim.epochs, "grace_period": cfg.optim.epochs},
        "fixed": fixed,
        "params": {"optim.lr": {"choice": [cfg.optim.lr]}},
    }


def bench_config(quick: bool) -> tuple[TrainConfig, float]:
    """(task2 config, dataset scale): the seed's CNN on 1800 generated images, 4 epochs;
    quick: a small CNN at 32 px on ~180 images, 2 epochs."""
    if quick:
        overrides = {"optim.epochs": 2, "data.image_size": 32, "model.channels": 8}
        return preset_config("task2", overrides), 0.05
    return preset_config("task2", {"optim.epochs": 4}), 0.5


def measure_paths(
    cfg: TrainConfig,
    root: Path,
    *,
    threads: int,
    device: torch.device,
    work: Path,
    yardstick: Callable[[TrainConfig, PreparedData, torch.device], Measured] | None = None,
) -> list[Measured]:
    """Train ``cfg`` on ``root`` every way, in one process and one Ray session.

    ``yardstick`` is the plain loop the others are compared with (default
    :func:`plain_pytorch`; ``bench gpu`` passes one with fit's AMP and memory format)."""
    plain = yardstick or plain_pytorch
    cfg = cfg.replace(num_threads=threads)
    data, _ = prepare_data(root, cfg)  # decodes into the cache once; every path then hits it
    n = len(data.y_train)
    use_gpu = device.type == "cuda"
    with _torch_threads(threads):
        runs = [plain(cfg, data, device), _fit_local(cfg, data, device)]
    runs.append(_train_path(cfg, root, work, n, use_gpu=use_gpu))
    runs.append(_tune_path(cfg, root, work, n, gpus=1.0 if use_gpu else 0.0, cpus=threads))
    # the yardstick again at the end: the machine's speed drifts by several percent over a
    # minute, and the mean of the two brackets the runs in between
    with _torch_threads(threads):
        again = plain(cfg, data, device)
    runs.append(dataclasses.replace(again, path=f"{again.path} (again)"))
    return runs


def baseline(runs: list[Measured]) -> float:
    """The plain loop's steady images/s: the mean of its runs before and after the others."""
    rates = [steady_images_per_s(r.images_per_s) for r in runs if r.path.startswith("plain")]
    return sum(rates) / len(rates)


def run(quick: bool = False, out: str | Path = "bench/results", *, threads: int = 1) -> BenchReport:
    t0 = time.perf_counter()
    cfg, scale = bench_config(quick)
    root = dataset("task2", scale, out)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp, ray_session() as ray_init_s:
        runs = measure_paths(cfg, root, threads=threads, device=torch.device("cpu"), work=Path(tmp))
    base = baseline(runs)
    rows = [r.row(base) for r in runs]
    by_path = {r["path"]: r for r in rows}
    report = BenchReport(
        benchmark="overhead",
        quick=quick,
        config={
            "task": cfg.task,
            "scale": scale,
            "n_train": runs[0].n_train,
            "epochs": cfg.optim.epochs,
            "batch_size": cfg.optim.batch_size,
            "image_size": cfg.data.image_size,
            "channels": cfg.model.channels,
            "torch_threads": threads,
        },
        tables={"throughput and wall time per path": rows},
        summary={"ray_init_s": ray_init_s, "plain_img_per_s (mean of both)": base},
        targets=[
            Target(f"{path} / plain", by_path[path]["vs_plain"], TARGET_RATIO, ">=")
            for path in ("poketune train (TorchTrainer)", "poketune tune (1 trial)")
        ],
    )
    report.elapsed_s = time.perf_counter() - t0
    return report


def main() -> None:
    from bench import cli_main

    cli_main("overhead")


if __name__ == "__main__":
    main()
