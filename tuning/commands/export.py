"""``poketune export NAME``: a sweep's trials as nested MLflow runs, the best ones' models."""

from __future__ import annotations

import argparse

from tuning.commands._common import add_storage, int_at_least


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="sweep name")
    add_storage(p)
    p.add_argument(
        "--mlflow-uri",
        help="tracking server (http://host:port) or SQLite store (sqlite:///path/mlflow.db); "
        "default: $MLFLOW_TRACKING_URI, else ./mlflow.db",
    )
    p.add_argument("--experiment", help="MLflow experiment (default poketune-TASK)")
    models = p.add_mutually_exclusive_group()
    models.add_argument("--top", type=int_at_least(0), default=3, help="log the models of the K best trials (default 3; 0: none)")
    models.add_argument("--all", action="store_true", help="log every trial's model")
    p.add_argument("--no-report", action="store_true", help="do not attach the sweep's HTML report to its parent run")


def run(args: argparse.Namespace) -> int:
    from tuning._mlflow import default_tracking_uri
    from tuning.export import export_sweep

    summary = export_sweep(
        args.name, args.storage, args.mlflow_uri or default_tracking_uri(),
        experiment=args.experiment, top=args.top, all_trials=args.all, report=not args.no_report,
    )
    print(summary)
    return 0
