"""``poketune make-data --kind task1|task2|task3 --out DIR``: a synthetic Kaggle-layout dataset."""

from __future__ import annotations

import argparse

from tuning.commands._common import positive_float


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", required=True, choices=["task1", "task2", "task3"])
    p.add_argument("--out", required=True, help="output folder (Kaggle layout)")
    p.add_argument("--scale", type=positive_float, default=1.0, help="1.0 = the seeds' 3600 images (task3: 1200)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from training.data.synthetic import make_dataset

    out = make_dataset(args.kind, args.out, scale=args.scale, seed=args.seed)
    print(f"wrote {args.kind} dataset to {out}")
    return 0
