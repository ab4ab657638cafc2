"""The frozen-backbone feature cache: a head trial's whole wall time with cached features
(the one-off extraction included) against running the frozen backbone every step.

Both arms train the same config (EfficientNet-Lite0 with its ImageNet weights, freeze depth
0 so only the head trains, no augmentation) on the same decoded task3-style data, one after
the other in this process, with ``fit`` and no Ray; the cached arm starts with an empty
feature store, so its time includes computing the features once. A second cached trial with
another head shows what the rest of a sweep's trials pay.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import BenchReport, Target, dataset
from training.engine import LocalReporter, fit, prepare_data
from training.features import MemoryFeatureStore
from training.tasks import preset_config

__all__ = ["run"]

TARGET_SPEEDUP = 10.0  # issue 12: a 10-epoch head trial on CPU


def _trial(cfg: Any, data: Any, store: MemoryFeatureStore | None) -> dict[str, Any]:
    rep = LocalReporter()
    t0 = time.perf_counter()
    fit(cfg, data, rep, features=store)
    wall = time.perf_counter() - t0
    return {
        "path": rep.history[0]["features"],
        "epochs": len(rep.history),
        "wall_s": wall,
        "extract_s": float(sum(h["feature_extract_s"] for h in rep.history)),
        "mean_epoch_s": float(np.mean([h["epoch_time_s"] for h in rep.history])),
        "best_val_f1": max(h["val_f1"] for h in rep.history),
    }


def run(quick: bool = False, out: str | Path = "bench/results") -> BenchReport:
    t0 = time.perf_counter()
    epochs, size, scale = (2, 32, 0.05) if quick else (10, 160, 0.15)
    over = {
        "model.freeze_depth": 0,
        "optim.head_epochs": 0,
        "optim.epochs": epochs,
        "optim.scheduler": "none",
        "data.image_size": size,
        "augment.hflip": 0.0,
        "augment.rotation": 0.0,
        "augment.color_jitter": 0.0,
        "augment.scale": 0.0,  # the preset's: live augmentation would bypass the cache
        "early_stop.patience": 0,
        "checkpoint_every_s": 3600.0,
    }
    cfg = preset_config("task3_lite", over)
    root = dataset("task3", scale, out)
    data, _ = prepare_data(root, cfg)
    live = _trial(cfg.replace(**{"features.cache": False}), data, None)
    store = MemoryFeatureStore()
    cached = _trial(cfg, data, store)
    other_head = _trial(cfg.replace(**{"optim.lr": cfg.optim.lr * 3, "model.head_hidden": [128]}), data, store)
    rows = [
        {"arm": "live frozen backbone every step", **live},
        {"arm": "cached features (first trial: extraction included)", **cached},
        {"arm": "cached features (next trial, other head)", **other_head},
    ]
    speedup = live["wall_s"] / cached["wall_s"]
    report = BenchReport(
        benchmark="features",
        quick=quick,
        config={"model": cfg.model.name, "pretrained": cfg.model.pretrained, "image_size": size,
                "train_images": len(data.y_train), "val_images": len(data.y_val), "epochs": epochs,
                "threads": cfg.num_threads or "torch default"},
        tables={"head trial wall time": rows},
        summary={
            "speedup_first_trial": speedup,
            "speedup_next_trial": live["wall_s"] / other_head["wall_s"],
        },
        targets=[Target("speedup_first_trial", speedup, TARGET_SPEEDUP, ">=",
                        f"{epochs}-epoch head trial, whole wall time incl. the one-off extraction")],
    )
    report.elapsed_s = time.perf_counter() - t0
    return report


def main() -> None:
    from bench import cli_main

    cli_main("features")


if __name__ == "__main__":
    main()
