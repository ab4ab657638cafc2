"""``poketune errors NAME``: the sweep's best model's mistakes and the images most likely
mislabelled (cleanlab), as CSVs and contact sheets."""

from __future__ import annotations

import argparse

from tuning.commands._common import add_storage, int_at_least


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="sweep name")
    add_storage(p)
    p.add_argument("--out", help="folder for the CSVs and PNGs (default: the sweep's errors/ folder)")
    p.add_argument("--top", type=int_at_least(1), default=24, help="images on the likely-mislabelled contact sheet (default 24)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tuning.error_report import build_error_report
    from tuning.results import Sweep

    print(build_error_report(Sweep.open(args.name, args.storage), Path(args.out) if args.out else None, top=args.top))
    return 0
