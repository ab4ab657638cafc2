"""``poketune compare RUN_A RUN_B ... --out report/``."""

from __future__ import annotations

import argparse
from pathlib import Path

from tuning.commands._common import add_storage


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="sweep:NAME (its best trial; sweep:NAME/TRIAL_ID for another), runs:/MLFLOW_RUN_ID, "
        "or a checkpoint.pt / a folder holding one; LABEL=RUN names it in the report",
    )
    p.add_argument("--out", required=True, help="report folder (report.md, CSVs, PNGs)")
    add_storage(p)
    p.add_argument("--data", help="dataset folder for every run (default: each sweep's own)")
    p.add_argument(
        "--mlflow-uri",
        help="read runs:/ specs from this tracking store and log the report folder to it as "
        "a new run's artifacts (without it, runs:/ uses $MLFLOW_TRACKING_URI or ./mlflow.db "
        "and nothing is logged)",
    )
    p.add_argument("--experiment", default="poketune-compare", help="MLflow experiment")
    p.add_argument("--cache-dir", help="decoded-image cache (default: in the data folder)")


def run(args: argparse.Namespace) -> int:
    from tuning.compare import compare_runs

    result = compare_runs(
        args.runs,
        Path(args.out),
        storage=args.storage,
        data=args.data,
        mlflow_uri=args.mlflow_uri,
        mlflow_experiment=args.experiment,
        cache_dir=args.cache_dir,
    )
    shown = result.summary[["run", "model", "params_total", "train_time_s", "accuracy", "macro_f1"]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"report: {result.report}")
    if result.mlflow_run_id:
        print(f"logged to MLflow run {result.mlflow_run_id}")
    return 0
