"""On a GPU: the ``overhead`` comparison (plain PyTorch, ``fit``, ``poketune train``, one tune
trial) with the model and data on the device, and trial packing: four task2 trials sharing
one GPU (``--gpus-per-trial 0.25``) against one trial alone on it.

The plain loop here runs the kernels ``fit`` runs on the same device (one choice,
:func:`training.loop.kernels_for`: the autocast dtype, fp16's GradScaler, channels_last),
so ``vs_plain`` measures the framework around the step, not AMP against fp32.  Throughput
is steady state (epoch 1 left out) and start-up is reported apart, per path and for the
packed sweeps (``startup_s``: wall time outside the longest trial's epochs).

Skipped (and says so in its JSON) when CUDA is not available.  ``run(device="cpu")`` runs
the same code on the CPU with no GPU resources, to check the benchmark itself works.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import nullcontext
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
from bench.overhead import (
    TARGET_RATIO,
    Measured,
    baseline,
    fixed_space,
    measure_paths,
)
from training.config import TrainConfig
from training.engine import PreparedData, prepare_data
from training.loop import Kernels, kernels_for
from training.models import build_model
from training.tasks import preset_config

__all__ = ["main", "measure_gpu_paths", "packing", "plain_kernels", "plain_matched", "run"]


def plain_kernels(cfg: TrainConfig, device: torch.device) -> Kernels:
    """What the plain arm computes with: exactly what ``fit`` picks for ``cfg`` on
    ``device`` (the same function decides both)."""
    return kernels_for(device, amp=cfg.optim.amp, model_name=cfg.model.name)


def plain_matched(cfg: TrainConfig, data: PreparedData, device: torch.device) -> Measured:
    """``overhead.plain_pytorch`` with ``fit``'s kernels: float tensors normalised once and
    kept on the device in ``fit``'s memory format, randperm batches, fused Adam,
    cross-entropy under ``fit``'s autocast dtype (and GradScaler for fp16), an argmax pass
    over the validation set per epoch."""
    t_start = time.perf_counter()
    kernels = plain_kernels(cfg, device)
    fmt = kernels.memory_format
    torch.manual_seed(cfg.seed)
    prep = data.preprocessing
    mean = torch.tensor(prep.mean).view(1, -1, 1, 1)
    std = torch.tensor(prep.std).view(1, -1, 1, 1)

    def prepared(a: Any) -> torch.Tensor:
        x = (torch.as_tensor(a).float() / 255 - mean) / std
        return x.to(device).contiguous(memory_format=fmt)

    x, x_val = prepared(data.x_train), prepared(data.x_val)
    y = torch.as_tensor(data.y_train).to(device)
    model = build_model(
        cfg.model,
        in_channels=cfg.in_channels,
        num_classes=data.num_classes,
        image_size=cfg.data.image_size,
    ).to(device)
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, fused=True)
    scaler = torch.amp.GradScaler(device.type) if kernels.needs_scaler else None
    loss_fn = nn.CrossEntropyLoss()

    def autocast() -> Any:
        if kernels.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=kernels.amp_dtype)

    rates, epoch_s = [], []
    for _ in range(cfg.optim.epochs):
        t0 = time.perf_counter()
        model.train()
        for idx in torch.randperm(len(y), device=device).split(cfg.optim.batch_size):
            opt.zero_grad(set_to_none=True)
            with autocast():
                # fit takes the loss in fp32 from the autocast logits; so does this
                loss = loss_fn(model(x[idx]).float(), y[idx])
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(len(y) / (time.perf_counter() - t0))
        model.eval()
        with torch.no_grad(), autocast():
            model(x_val).argmax(-1).cpu()
        epoch_s.append(time.perf_counter() - t0)
    return Measured("plain PyTorch", rates, epoch_s, time.perf_counter() - t_start, len(y))


def measure_gpu_paths(
    cfg: TrainConfig, root: Path, *, threads: int, device: torch.device, work: Path
) -> list[Measured]:
    """``overhead.measure_paths`` with :func:`plain_matched` as the yardstick."""
    return measure_paths(cfg, root, threads=threads, device=device, work=work, yardstick=plain_matched)


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
    from tuning.results import Sweep
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
    hist = Sweep.open(name, str(work / "runs")).history()
    groups = [g.sort_values("training_iteration") for _, g in hist.groupby("trial_id")]
    per_trial = [steady_images_per_s(g["train_images_per_s"].tolist()) for g in groups]
    # trials run side by side: the sweep's wall time outside the longest trial's epochs is
    # start-up (Ray, actors, data hand-off) and wind-down, not training
    train_s = max(float(g["epoch_time_s"].sum()) for g in groups)
    n_train = len(prepare_data(root, cfg)[0].y_train)
    return {
        "trials": trials,
        "gpus_per_trial": gpus_per_trial,
        "cpus_per_trial": cpus_per_trial,
        "per_trial_img_per_s": sum(per_trial) / len(per_trial),
        "sum_img_per_s": sum(per_trial),  # steady state, all trials together
        "train_s": train_s,
        "startup_s": t["s"] - train_s,
        "images_per_wall_s": n_train * len(hist) / t["s"],  # start-up included
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
        runs = measure_gpu_paths(cfg, root, threads=threads, device=dev, work=work)
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
    kernels = plain_kernels(cfg, dev)
    report = BenchReport(
        benchmark="gpu",
        quick=quick,
        config={
            **config,
            "torch_threads": threads,
            # both arms: fit picks these and the plain loop asks the same function
            "amp_dtype": str(kernels.amp_dtype).removeprefix("torch.")
            if kernels.amp_dtype
            else "fp32",
            "channels_last": kernels.channels_last,
        },
        tables={"throughput per path": rows, "packing: trials sharing one GPU": pack},
        summary={
            "ray_init_s": ray_init_s,
            # steady-state images/s of 4 packed trials together over one alone
            "packing_speedup_4_vs_1": pack[1]["sum_img_per_s"] / pack[0]["sum_img_per_s"],
            # the same from the sweeps' wall time, start-up included
            "packing_wall_speedup_4_vs_1": pack[1]["images_per_wall_s"]
            / pack[0]["images_per_wall_s"],
        },
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
