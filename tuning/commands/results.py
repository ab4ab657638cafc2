"""``poketune results NAME``: a sweep's trials (or epochs, or parameter importance) as a
table, CSV, Parquet or JSON."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from tuning.commands._common import UsageError, add_storage, int_at_least

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("table", "csv", "parquet", "json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="sweep name")
    add_storage(p)
    p.add_argument("--top", type=int_at_least(1), help="first K rows")
    p.add_argument("--sort", help="sort by this column (descending; prefix with + for ascending)")
    p.add_argument("--where", help="pandas query, e.g. \"status == 'completed' and best_val_f1 > 0.5\"")
    p.add_argument("--history", action="store_true", help="one row per trial epoch")
    p.add_argument("--importance", action="store_true", help="Optuna parameter importance")
    p.add_argument(
        "--pareto", action="store_true",
        help="the trials no other beats on every objective (a space with `objectives:`), among those that "
        "ran all epochs; their latency measured again here (driver_latency_ms)",
    )
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--out", help="write to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    from tuning import results

    sweep = results.Sweep.open(args.name, args.storage)
    if args.importance:
        frame = results.param_importance(sweep)
    elif args.pareto:
        frame = sweep.pareto(remeasure=True)
    else:
        frame = sweep.history() if args.history else sweep.trials()
        sort, ascending = args.sort, False
        if sort and sort.startswith("+"):
            sort, ascending = sort[1:], True
        try:
            frame = results.filter_frame(frame, where=args.where, sort=sort, top=args.top, ascending=ascending)
        except ValueError as exc:  # filter_frame's ValueErrors name a bad --where / --sort
            raise UsageError(str(exc)) from None
    write(frame, args.format, args.out)
    return 0


def write(frame: pd.DataFrame, fmt: str, out: str | None) -> None:
    import pandas as pd

    if fmt == "parquet":
        if not out:
            raise UsageError("--format parquet needs --out FILE")
        frame.to_parquet(out, index=False)
        return
    if fmt == "csv":
        text = frame.to_csv(index=False)
    elif fmt == "json":
        text = frame.to_json(orient="records", indent=2)
    else:
        show = frame.drop(columns=[c for c in ("trial_dir", "checkpoint") if c in frame.columns])
        with pd.option_context("display.max_columns", None, "display.width", 200):
            text = show.to_string(index=False, float_format=lambda v: f"{v:.4g}") + "\n"
    if out:
        with open(out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
