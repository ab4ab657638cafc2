"""``poketune retrain``: the best trial's config on train+val, registered in MLflow."""

from __future__ import annotations

import argparse

from tuning.commands._common import add_storage, duration, int_at_least, overrides, positive_float


def _epochs(text: str) -> str | int:
    return text if text in ("best", "steps") else int_at_least(1)(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="sweep name")
    add_storage(p)
    p.add_argument("--mlflow-uri", help="log and register the model there (http://host:port or sqlite:///mlflow.db); without it only local checkpoints are written")
    p.add_argument("--trial", help="retrain this trial id instead of the best one")
    p.add_argument("--top", type=int_at_least(1), default=1, metavar="K", help="an ensemble of the K best distinct configs (probabilities averaged, registered as one model)")
    p.add_argument("--within", type=positive_float, metavar="D", help="with --top K: leave out the trials whose score is more than D below the best's (an average of equal weights is pulled down by a weak member)")
    p.add_argument("--epochs", type=_epochs, default="best", help="'best' (the trial's best epoch count, default), 'steps' (the optimizer steps of the trial's best epoch: fewer epochs on the larger train+val set) or N")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="change a key of the trial's config for the retrain, e.g. data.image_size=160 for a sweep ranked at a smaller size")
    p.add_argument("--seeds", type=int_at_least(1), default=1, help="K runs with seeds base+0..K-1, registered as one averaging ensemble")
    p.add_argument("--workers", type=int_at_least(1), default=1, help="data-parallel Ray Train workers per run")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker")
    p.add_argument("--registered-name", help="registered model name (default poketune-<task>)")
    p.add_argument("--experiment", help="MLflow experiment (default poketune-<task>, as poketune export)")
    p.add_argument("--data", help="dataset folder (default: the one the sweep used)")
    p.add_argument("--address", help="an existing Ray cluster (auto, ray://host:10001)")
    p.add_argument("--no-refit", action="store_true", help="train nothing: register the trials' own best weights (trained on the train split) as the model; with --top K an ensemble that costs no training time")
    p.add_argument("--time-budget", type=duration, metavar="DURATION", help="bound the refit (all members, logging included) to e.g. 10m: before each member trains, one epoch is timed on a few batches and its epochs (and schedule) are cut to what fits; a member whose epochs run slower than timed ends at its share's deadline")
    p.add_argument("--from-trial-weights", nargs="?", const="all", metavar="all|backbone", help="start each member from its trial's best weights instead of its config's initialisation (e.g. ImageNet), then train on train+val: the sweep's training is kept; 'all' (the default) continues the trial's model, 'backbone' takes every weight but the head's, which starts afresh, as the config's recipe expects of a pretrained backbone; with --set data.image_size=N on a sweep ranked smaller, the refit adapts the trial's model to the larger size")
    p.add_argument("--vs-preset", action="store_true", help="also train the task's preset once (poketune train, its own epochs) on the sweep's split and print both scores: what tuning bought")


def run(args: argparse.Namespace) -> int:
    from tuning.retrain import retrain

    res = retrain(
        args.name,
        args.storage,
        mlflow_uri=args.mlflow_uri,
        trial=args.trial,
        top=args.top,
        within=args.within,
        overrides=overrides(args.set),
        epochs=args.epochs,
        seeds=args.seeds,
        workers=args.workers,
        use_gpu=args.gpu,
        registered_name=args.registered_name,
        experiment=args.experiment,
        data=args.data,
        address=args.address,
        verbose=args.verbose,
        vs_preset=args.vs_preset,
        refit=not args.no_refit,
        time_budget_s=args.time_budget,
        from_trial_weights=args.from_trial_weights,
    )
    for src in res.sources or [res.source]:
        trained = [m for m in res.members if m.trial_id == src.trial_id]
        what = (
            f"for {trained[0].epochs} epochs, seeds {[m.seed for m in trained]}"
            + (
                f", starting from its epoch-{src.best_epoch} weights"
                + (" (the backbone's; a fresh head)" if res.from_trial_weights == "backbone" else "")
                if res.from_trial_weights
                else ""
            )
            if res.refit and trained
            else "not trained: left out by --time-budget" if res.refit
            else "kept as trained (its best weights, train split only: --no-refit)"
        )
        print(
            f"{'retrained' if res.refit else 'registered'} trial {src.trial_id} of sweep {src.sweep!r} "
            f"(best_{src.metric} {src.best_value:.4f} at epoch {src.best_epoch}) {what}"
        )
    if res.time_budget_s is not None:
        print(f"time budget {res.time_budget_s:g} s for the refit:")
        for line in res.budget_lines:
            print(f"  {line}")
    if res.overrides:
        print("with " + " ".join(f"--set {k}={v}" for k, v in res.overrides.items()) + " on the trials' configs")
    for src in res.left_out:
        print(
            f"left out trial {src.trial_id} (best_{src.metric} {src.best_value:.4f}, "
            f"{abs(res.source.best_value - src.best_value):.4f} from the best; --within {args.within:g})"
        )
    for member, hist, ckpt, run_dir in zip(res.members, res.histories, res.checkpoints, res.run_dirs, strict=True):
        loss = hist[-1]["train_loss"] if hist else float("nan")
        fold = f" fold {member.fold}" if member.fold is not None else ""
        print(f"  trial {member.trial_id}{fold} seed {member.seed}: {member.epochs} epochs, final train_loss {loss:.4f}")
        print(f"    checkpoint: {ckpt}")
        print(f"    {'Ray Train run' if res.refit else 'from'}: {run_dir}")
    if res.model_uri:
        print(f"MLflow run {res.mlflow_run_id} at {res.mlflow_uri}")
        print(f"registered {res.model_uri} ({len(res.checkpoints)}-member ensemble)")
        print(f"submit with: poketune submit --model {res.model_uri} --mlflow-uri {res.mlflow_uri} --data DIR --out submission.csv")
    else:
        print("no --mlflow-uri: nothing registered; submit with: poketune submit --model "
              + ",".join(str(c) for c in res.checkpoints) + " --data DIR --out submission.csv")
    if res.preset is not None:
        c = res.preset
        print(
            f"preset {c.task} trained once ({c.preset_epochs} epochs, best at {c.preset_best_epoch}): "
            f"{c.metric} {c.preset_value:.4f}; tuned trial {res.source.trial_id}: {c.metric} "
            f"{c.tuned_value:.4f} on the same validation split ({c.gain:+.4f} from tuning)"
        )
        print(f"  preset checkpoint: {c.checkpoint}")
    print(f"wall time {res.wall_time_s:.1f}s")
    return 0
