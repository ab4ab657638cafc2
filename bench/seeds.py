"""The seeds' configurations through the real command line, on the seeds' 3600 images.

``poketune train --task task1|task2 --data DIR`` with the preset defaults (task1: MLP 256/128,
batch 16, 50 epochs; task2: 4-stage CNN, batch 16, 49 epochs), timed from process start to
exit, so Python imports, Ray start-up and the final report all count.  The decode cache is
filled beforehand (its cost is the ``data`` benchmark's first decode and is shown apart).

The seeds took 3709.7 s (task1) and 2345.5 s (task2) on a Colab T4; targets on this CPU:
<= 90 s and <= 600 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import BenchReport, Target, dataset, steady_images_per_s, stopwatch
from training.checkpoint import Checkpoint, load_checkpoint
from training.data import load_split
from training.tasks import preset_config

__all__ = ["SEEDS", "SeedRun", "main", "run", "train_cli"]


@dataclass(frozen=True)
class SeedRun:
    task: str
    seed_s: float  # the original notebook's wall time on a Colab T4
    target_s: float


SEEDS = (SeedRun("task1", 3709.7, 90.0), SeedRun("task2", 2345.5, 600.0))


def train_cli(
    task: str, root: Path, out: Path, overrides: list[str]
) -> tuple[float, Checkpoint]:
    """Run ``poketune train`` in a fresh interpreter; (wall seconds, its final checkpoint)."""
    cmd = [sys.executable, "-m", "tuning.cli", "train", "--task", task, "--data", str(root)]
    cmd += ["--out", str(out)]
    for item in overrides:
        cmd += ["--set", item]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    with stopwatch() as t:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    return t["s"], load_checkpoint(out)


def run(quick: bool = False, out: str | Path = "bench/results") -> BenchReport:
    t0 = time.perf_counter()
    scale = 0.1 if quick else 1.0
    rows: list[dict[str, Any]] = []
    for seed in SEEDS:
        root = dataset(seed.task, scale, out)
        preset = preset_config(seed.task)
        with stopwatch() as decode:  # fill the cache; a hit when the data benchmark ran first
            load_split(root, preset.data, "train")
        overrides = ["optim.epochs=2"] if quick else []
        epochs = 2 if quick else preset.optim.epochs
        with tempfile.TemporaryDirectory(prefix=f"bench-seeds-{seed.task}-") as tmp:
            wall, state = train_cli(seed.task, root, Path(tmp) / "run", overrides)
        history = state.history
        epoch_s = sum(float(h["epoch_time_s"]) for h in history)
        rows.append(
            {
                "task": seed.task,
                "model": preset.model.name,
                "epochs": len(history),
                "planned_epochs": epochs,
                "wall_s": wall,
                "epochs_s": epoch_s,
                "outside_epochs_s": wall - epoch_s,
                "s_per_epoch": epoch_s / max(len(history), 1),
                "train_img_per_s": steady_images_per_s(
                    [float(h["train_images_per_s"]) for h in history]
                ),
                "best_val_f1": max(float(h["val_f1"]) for h in history),
                "cache_fill_s": decode["s"],
                "seed_t4_s": seed.seed_s,
                "speedup_vs_seed": seed.seed_s / wall,
            }
        )
    targets = [
        Target(f"{s.task} wall_s", r["wall_s"], s.target_s, "<=", "full preset epochs")
        for s, r in zip(SEEDS, rows, strict=True)
        if not quick
    ]
    report = BenchReport(
        benchmark="seeds",
        quick=quick,
        config={"scale": scale, "images": "3600 generated" if not quick else f"scale {scale}"},
        tables={"poketune train, preset defaults": rows},
        targets=targets,
    )
    report.elapsed_s = time.perf_counter() - t0
    return report


def main() -> None:
    from bench import cli_main

    cli_main("seeds")


if __name__ == "__main__":
    main()
