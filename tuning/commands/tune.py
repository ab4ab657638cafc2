"""``poketune tune SPACE --data DIR [--time-budget 20m] [--samples N]``: a Ray Tune sweep
(Optuna TPE + ASHA), the task preset evaluated first."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tuning.commands._common import (
    add_storage,
    duration,
    gpu_amount,
    int_at_least,
    overrides,
    positive_float,
)
from tuning.strategies import SAMPLERS, SCHEDULERS  # names only: no Ray, no Optuna

if TYPE_CHECKING:
    from tuning.sweep import SweepResult


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("space", help="YAML search space (see search_spaces/README.md)")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--samples", type=int_at_least(1), help="number of trials (default: as many as --time-budget allows)")
    p.add_argument("--name", help="sweep name (default SPACE-TIME)")
    add_storage(p)
    p.add_argument("--max-concurrent", type=int_at_least(1), help="default: what the cluster's resources allow")
    p.add_argument("--cpus-per-trial", type=positive_float, default=1.0, help="CPUs per training worker")
    p.add_argument("--gpus-per-trial", type=gpu_amount, default=0.0, help="GPUs per training worker; fractions pack trials on a GPU")
    p.add_argument("--workers-per-trial", type=int_at_least(1), default=1, help=">1: data-parallel TorchTrainer per trial")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--time-budget", type=duration, metavar="DURATION",
        help="wall-clock budget, e.g. 90s, 20m, 1.5h: trials keep coming until it is spent, then "
        "running trials stop at their next epoch (with --resume: the time for this run)",
    )
    budget.add_argument("--time-budget-s", type=duration, metavar="SECONDS", help="the budget in seconds")
    p.add_argument("--seed", type=int, default=0, help="seeds Optuna's TPE sampler and the trials")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of this --name")
    p.add_argument("--max-failures", type=int_at_least(-1), default=2, help="retries per trial after a worker/node dies (-1: no limit)")
    p.add_argument("--address", help="an existing Ray cluster (auto, ray://host:10001)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a fixed config key for every trial")
    p.add_argument("--mlflow-uri", help="export the sweep to this MLflow tracking URI when it ends")
    p.add_argument(
        "--report", nargs="?", const="", metavar="DIR",
        help="write the HTML report as trials finish (the page reloads itself), with PNGs at the end; "
        "DIR default: the sweep's report/ folder",
    )
    p.add_argument("--warm-start", action="append", metavar="SWEEP", help="start the searcher from the finished trials of an earlier sweep of the same task in --storage (repeatable)")
    p.add_argument("--enqueue", metavar="CONFIGS.yaml", help="configs to evaluate first, before the preset: a mapping or a list of mappings of searched parameters to values (the rest take the preset's)")
    p.add_argument("--search", choices=SAMPLERS.names(), help="Optuna sampler (default: the space's `search:`, else tpe; see tuning/strategies.py)")
    p.add_argument("--scheduler", choices=SCHEDULERS.names(), help="trial scheduler (default: the space's `scheduler:`, else asha)")
    p.add_argument(
        "--cv", type=int_at_least(2), metavar="K",
        help="K-fold cross-validated trials: each trains K stratified folds in lockstep and reports "
        "their mean (ASHA prunes on it) and std; the best keeps out-of-fold predictions (default: "
        "the space's `cv:`, else one validation split)",
    )


def summary_lines(result: SweepResult) -> list[str]:
    """What the sweep used, and what tuning bought over the preset on the same split."""
    used = f"{result.wall_time_s:.0f}s"
    if result.budget_s:
        used += f" of a {result.budget_s:.0f}s budget"
    lines = [f"{result.trials} trials in {used}"]
    if result.budget_stopped:
        lines[0] += f"; {len(result.budget_stopped)} stopped by the budget"
    if result.preset_metric is not None and result.best_metric is not None:
        gain = result.best_metric - result.preset_metric
        lines.append(
            f"preset trial {result.preset_trial_id}: {result.metric} {result.preset_metric:.4f}; "
            f"best {result.best_metric:.4f} ({gain:+.4f} from tuning, same validation split)"
        )
    return lines


def best_line(result: SweepResult) -> str:
    """``best trial ID: METRIC VALUE``, in the space's own metric (val_f1, val_loss, …)."""
    value = "n/a" if result.best_metric is None else f"{result.best_metric:.4f}"
    return f"best trial {result.best_trial_id}: {result.metric} {value}"


def run(args: argparse.Namespace) -> int:
    from tuning.sweep import SweepOptions, run_sweep

    opts = SweepOptions(
        space=args.space, data=args.data, samples=args.samples, name=args.name,
        storage=args.storage, max_concurrent=args.max_concurrent,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        workers_per_trial=args.workers_per_trial,
        time_budget_s=args.time_budget or args.time_budget_s,
        seed=args.seed, resume=args.resume, verbose=args.verbose, address=args.address,
        max_failures=args.max_failures, overrides=overrides(args.set),
        search=args.search, scheduler=args.scheduler,
        warm_start=[n for arg in args.warm_start or [] for n in arg.split(",") if n],
        report=args.report is not None, report_dir=args.report or None, enqueue=args.enqueue,
        cv=args.cv,
    )
    if args.mlflow_uri:
        from tuning._mlflow import ensure_reachable

        # fail before hours of training, not after
        ensure_reachable(args.mlflow_uri)
    result = run_sweep(opts)
    print(f"\nsweep {result.name}: {result.path}  ({result.wall_time_s:.0f}s)")
    if result.best_trial_id is None:
        print("no trial reported a result")
        return 1
    for line in result.warm_start:
        print(line)
    for line in summary_lines(result):
        print(line)
    print(best_line(result))
    for key, value in result.best_config.items():
        print(f"  {key} = {value}")
    print(f"checkpoint: {result.best_checkpoint}")
    if result.report is not None:
        print(result.report)
    print(f"next: poketune results {result.name} --storage {opts.storage}")
    if args.mlflow_uri:
        from tuning.export import export_sweep

        print(export_sweep(result.name, args.storage, args.mlflow_uri))
    return 0
