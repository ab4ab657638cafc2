"""How long one training epoch of a config takes on this machine, timed on a few batches of
the real data before a run commits to an epoch count (``poketune retrain --time-budget``).

Why time it rather than scale a sweep's recorded ``epoch_time_s``: a refit changes the image
size (``--set data.image_size``), the number of images (train+val) and the threads a run
gets, and the sweep's trials shared the machine with each other. Scaling a task3 sweep's
96-px epoch by pixels and images predicted 89–117 s per 160-px epoch where the refit took
61–77 s (``docs/benchmarks.md``); a few timed batches of the refit itself are what it costs.

The protocol: the config's own model, loss, augmentation and threads (:class:`Fitter`, so
nothing is modelled), on ``batches + 1`` batches of the training images; the first pass is
untimed (allocations, first-call overheads), the second is timed, and the time per image is
scaled to the whole training set. Conservative for two-phase fine-tuning: every epoch is
timed as a fine-tuning epoch, so head-only epochs (cheaper) leave some budget unused.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from training.config import TrainConfig
from training.engine import Fitter, PreparedData

__all__ = ["EpochTime", "time_an_epoch"]


@dataclass(frozen=True)
class EpochTime:
    """One epoch's estimated seconds, and what it was timed on."""

    seconds: float
    timed_images: int
    train_images: int

    def describe(self) -> str:
        return f"one epoch ≈ {self.seconds:.1f} s (timed on {self.timed_images} of {self.train_images} images)"


def time_an_epoch(cfg: TrainConfig, data: PreparedData, *, batches: int = 3) -> EpochTime:
    """Seconds one epoch of ``cfg`` on ``data``'s training images takes here (see the module)."""
    n_train = len(data.y_train)
    n = min(n_train, cfg.optim.batch_size * batches)
    rows = np.random.default_rng(cfg.seed).permutation(n_train)[:n]
    subset = dataclasses.replace(
        data,
        x_train=data.x_train[rows],
        y_train=data.y_train[rows],
        x_val=data.x_train[:0],
        y_val=data.y_train[:0],
        train_ids=(),
        split="epoch-time",
    )
    # every epoch as a fine-tuning one, on the live model: a feature cache would time the
    # extraction, not an epoch
    probe = cfg.replace(**{
        "optim.epochs": 2, "optim.head_epochs": 0, "features.cache": False,
        "early_stop.patience": 0, "early_stop.f1_window": 0, "early_stop.monitor": "val_loss",
    })  # fmt: skip
    threads = torch.get_num_threads()
    try:
        fitter = Fitter(probe, subset)
        fitter.train_epoch()  # untimed: first calls allocate and warm up
        fitter.end_epoch({})
        t0 = time.perf_counter()
        fitter.train_epoch()
        seconds = time.perf_counter() - t0
        fitter.finish()
    finally:
        torch.set_num_threads(threads)  # Fitter sets the config's threads process-wide
    return EpochTime(seconds=seconds * n_train / n, timed_images=n, train_images=n_train)
