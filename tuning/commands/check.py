"""``poketune check --data DIR``: counts, unreadable files, duplicates and train/test leaks."""

from __future__ import annotations

import argparse

from training.tasks import TASKS, preset_config  # config only: no torch
from tuning.commands._common import UsageError, int_at_least, overrides


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--task", choices=TASKS.names(), default="task2", help="preset whose data settings (layout, columns) apply")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a data key, e.g. data.layout=imagefolder")
    p.add_argument("--near-bits", type=int_at_least(0), default=None, metavar="N", help="perceptual-hash distance (of 64 bits) that counts as a near duplicate (default 6)")
    p.add_argument("--out", help="folder for check.json and check_pairs.png (default ./poketune_runs/check/<data folder>)")
    p.add_argument("--strict", action="store_true", help="exit 1 when anything was found (default: warn only)")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from training.data.check import NEAR_BITS, check_data

    cfg = preset_config(args.task, overrides(args.set))
    report = check_data(args.data, cfg.data, near_bits=NEAR_BITS if args.near_bits is None else args.near_bits)
    out = Path(args.out or Path("poketune_runs") / "check" / Path(args.data).resolve().name)
    out.mkdir(parents=True, exist_ok=True)
    (out / "check.json").write_text(json.dumps(report.to_json(), indent=2))
    print(report.summary())
    sheet = report.contact_sheet(out / "check_pairs.png")
    print(f"wrote {out / 'check.json'}" + (f" and {sheet}" if sheet else ""))
    print(f"hashed {report.hashed} images (the rest from the cache)")
    if args.strict and report.findings:
        raise UsageError(f"--strict: {report.findings} findings in {args.data} (see {out / 'check.json'})")
    return 0

