"""The data layer's costs: the first decode + cache write of the seeds' 3600 images, a
cached load, ``prepare_data`` (cache + split, what every run pays), and the images/s of
``BatchAugment`` at typical strengths next to the training step it feeds.

The first decode reads PNGs that are probably in the OS page cache (they were just
generated), so it measures decoding, not the disk.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench._common import BenchReport, dataset, stopwatch
from training.checkpoint import build_model_for
from training.config import AugmentConfig, TrainConfig
from training.data import BatchAugment, Preprocessing, load_split
from training.engine import prepare_data
from training.tasks import preset_config

__all__ = ["AUGMENTS", "augment_throughput", "load_times", "main", "run"]

#: augmentation settings worth timing: the task3 preset's and a heavier geometric + MixUp mix
AUGMENTS: dict[str, AugmentConfig] = {
    "hflip": AugmentConfig(hflip=0.5),
    "task3 preset (flip, rot 15, jitter 0.2)": AugmentConfig(
        hflip=0.5, rotation=15.0, color_jitter=0.2
    ),
    "flip+affine+jitter+mixup": AugmentConfig(
        hflip=0.5, rotation=15.0, translate=0.1, scale=0.1, color_jitter=0.2, mixup_alpha=0.2
    ),
}


def load_times(task: str, root: Path, repeats: int) -> dict[str, Any]:
    """First decode into an empty cache, then the best of ``repeats`` cached loads."""
    cfg = preset_config(task)
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
        with stopwatch() as cold:
            first = load_split(root, cfg.data, "train", cache_dir=cache)
        warm = []
        for _ in range(repeats):
            with stopwatch() as t:
                again = load_split(root, cfg.data, "train", cache_dir=cache)
            warm.append(t["s"])
        if not again.report.from_cache or first.report.decoded != len(first.images):
            raise RuntimeError(f"{task}: the second load did not come from the cache")
        prepared = []
        for _ in range(repeats):
            with stopwatch() as t:
                prepare_data(root, cfg, cache_dir=cache)
            prepared.append(t["s"])
    n = len(first.images)
    return {
        "task": task,
        "images": n,
        "shape": "x".join(map(str, first.images.shape[1:])),
        "first_decode_s": cold["s"],
        "decode_img_per_s": n / cold["s"],
        "cached_load_s": min(warm),
        "prepare_data_s": min(prepared),
    }


def augment_throughput(
    name: str, aug_cfg: AugmentConfig, cfg: TrainConfig, n: int, batch_size: int
) -> dict[str, Any]:
    """Images/s of the augmentation alone and of one training step (forward + backward +
    Adam) of ``cfg``'s model on the same batches, single-threaded like a sweep trial."""
    prep = Preprocessing.from_config(cfg.data)
    size = cfg.data.image_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, prep.channels, size, size), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 9, (n,), generator=gen)
    augment = BatchAugment(aug_cfg, 9, fill=prep.fill)
    model = build_model_for(cfg, 9)
    opt = torch.optim.Adam(model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()

    def augment_all() -> None:
        for s in range(0, n, batch_size):
            augment(x[s : s + batch_size].float().div_(255), y[s : s + batch_size])

    def train_all() -> None:
        for s in range(0, n, batch_size):
            xb = x[s : s + batch_size].float().div_(255)
            opt.zero_grad()
            loss_fn(model(xb), y[s : s + batch_size]).backward()
            opt.step()

    with stopwatch() as t_aug:
        augment_all()
    with stopwatch() as t_train:
        train_all()
    return {
        "augment": name,
        "image": f"{prep.channels}x{size}x{size}",
        "batch": batch_size,
        "augment_img_per_s": n / t_aug["s"],
        "train_step_img_per_s": n / t_train["s"],
        "augment_share": t_aug["s"] / (t_aug["s"] + t_train["s"]),
    }


def run(quick: bool = False, out: str | Path = "bench/results") -> BenchReport:
    t0 = time.perf_counter()
    scale, repeats, n_aug = (0.05, 1, 64) if quick else (1.0, 3, 1024)
    rows: list[dict[str, Any]] = []
    for task in ("task1", "task2"):
        rows.append(load_times(task, dataset(task, scale, out), repeats))
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread per trial, as in a sweep
    try:
        aug_rows = [
            augment_throughput(name, aug, preset_config("task2"), n_aug, batch)
            for name, aug in AUGMENTS.items()
            for batch in (16, 64)
        ]
    finally:
        torch.set_num_threads(before)
    report = BenchReport(
        benchmark="data",
        quick=quick,
        config={"scale": scale, "repeats": repeats, "augment_images": n_aug, "threads": 1},
        tables={"decode and cache": rows, "augmentation (1 thread)": aug_rows},
    )
    report.elapsed_s = time.perf_counter() - t0
    return report


def main() -> None:
    from bench import cli_main

    cli_main("data")


if __name__ == "__main__":
    main()
