"""``poketune train --task T --data DIR``: one config through Ray Train's TorchTrainer."""

from __future__ import annotations

import argparse

from training.tasks import TASKS, preset_config  # config only: no torch
from tuning.commands._common import int_at_least, overrides


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, choices=TASKS.names())
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. optim.lr=1e-3")
    p.add_argument("--workers", type=int_at_least(1), default=1, help="data-parallel Ray Train workers")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker")
    p.add_argument("--out", help="run folder (default ./poketune_runs/train/TASK-TIME)")
    p.add_argument("--address", help="an existing Ray cluster (auto, ray://host:10001)")


def run(args: argparse.Namespace) -> int:
    from training.ray_worker import format_epoch
    from training.run import run_training

    cfg = preset_config(args.task, overrides(args.set))
    outcome = run_training(
        cfg, args.data, out=args.out, workers=args.workers, use_gpu=args.gpu,
        address=args.address, verbose=args.verbose,
    )
    if not args.verbose:  # with -v the workers' own lines already went by
        for m in outcome.history:
            print(format_epoch(m))
    print(outcome.report)
    print(f"best epoch {outcome.best_epoch}; checkpoint: {outcome.checkpoint_path}")
    print(f"wall time {outcome.wall_time_s:.1f}s")
    return 0
