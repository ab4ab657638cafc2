"""Time a sweep spends per trial outside training, on a dataset so small that epochs take
a fraction of a second (so what is left is overhead):

* single-worker trials (``fit`` inside the Tune trial process, the default),
* ``--workers-per-trial 2`` trials (each trial drives a 2-worker ``TorchTrainer``),
* one-worker ``TorchTrainer`` runs without Tune (``poketune train``'s path), for the
  TorchTrainer's own share.

Trials run one at a time so their overheads do not overlap.  Per trial:
``in_trial_s`` = the trial's reported time minus its epochs (set-up before the first epoch,
reporting and checkpointing after each), ``between_s`` = sweep wall time minus the trials'
own time, spread over the trials (actor start-up, scheduling, the sweep's set-up and
teardown amortised).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bench._common import BenchReport, dataset, in_child, ray_session, stopwatch, write_space
from bench.overhead import fixed_space
from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.engine import prepare_data
from training.tasks import preset_config

__all__ = ["main", "run", "sweep_overhead", "torch_trainer_overhead"]


def _per_trial(history: pd.DataFrame, wall: float, label: str, trials: int) -> dict[str, Any]:
    last = history.sort_values("training_iteration").groupby("trial_id").tail(1)
    epochs_s = float(history["epoch_time_s"].sum())
    trial_s = float(last["time_total_s"].sum())
    return {
        "path": label,
        "trials": trials,
        # fewer than asked: trials errored or the time budget cut a stuck sweep short
        "trials_with_results": int(last["trial_id"].nunique()),
        "epochs": len(history),
        "wall_s": wall,
        "epochs_s": epochs_s,
        "in_trial_s": (trial_s - epochs_s) / trials,
        "between_s": (wall - trial_s) / trials,
        "overhead_per_trial_s": (wall - epochs_s) / trials,
    }


def _sweep_in_child(
    space: str, root: str, storage: str, name: str, trials: int, workers: int, address: str
) -> tuple[float, list[dict[str, Any]]]:
    """One sweep as its own Ray driver (a child process): (wall seconds, history rows)."""
    import ray

    from tuning.results import Sweep
    from tuning.sweep import SweepOptions, run_sweep

    with stopwatch() as t:
        run_sweep(
            SweepOptions(
                space=space,
                data=root,
                samples=trials,
                name=name,
                storage=storage,
                max_concurrent=1,
                # a TorchTrainer trial holds 0.01 CPU itself: 2 workers x 1 CPU would not fit
                cpus_per_trial=1 if workers == 1 else 0.99,
                workers_per_trial=workers,
                max_failures=0,
                address=address,
            )
        )
    ray.shutdown()
    return t["s"], Sweep.open(name, storage).history().to_dict("records")


def sweep_overhead(
    cfg: TrainConfig, root: Path, work: Path, *, trials: int, workers: int, label: str
) -> dict[str, Any]:
    """Per-trial overhead of a sweep.  The sweep runs in a child process with a deadline
    (45 s per trial, ~2x what a TorchTrainer trial needs on 2 cores): a stuck trial must not
    hang the suite."""
    import ray

    name = f"overhead-w{workers}"
    space = write_space(work / f"{name}.yaml", fixed_space(cfg))
    address = ray.get_runtime_context().gcs_address
    args = (str(space), str(root), str(work / "runs"), name, trials, workers, address)
    deadline = 45.0 * trials + 60.0
    done = in_child(_sweep_in_child, *args, timeout_s=deadline)
    if done is None:
        return {
            "path": label,
            "trials": trials,
            "trials_with_results": None,
            "note": f"HUNG: killed after {deadline:.0f} s",
        }
    wall, history = done
    return _per_trial(pd.DataFrame(history), wall, label, trials)


def torch_trainer_overhead(
    cfg: TrainConfig, root: Path, work: Path, *, runs: int
) -> dict[str, Any]:
    from training.ray_worker import run_torch_trainer

    data, _ = prepare_data(root, cfg)
    epochs_s = 0.0
    with stopwatch() as t:
        for i in range(runs):
            result = run_torch_trainer(
                cfg, data, storage_path=str(work / "tt"), name=f"run{i}", workers=1, echo=False
            )
            if result.checkpoint is None:
                raise RuntimeError(f"TorchTrainer run {i} reported no checkpoint")
            with result.checkpoint.as_directory() as d:
                history = load_checkpoint(d).history
            epochs_s += sum(float(h["epoch_time_s"]) for h in history)
    return {
        "path": "TorchTrainer, 1 worker, no Tune",
        "trials": runs,
        "epochs": runs * cfg.optim.epochs,
        "wall_s": t["s"],
        "epochs_s": epochs_s,
        "trials_with_results": runs,
        "in_trial_s": None,
        "between_s": None,
        "overhead_per_trial_s": (t["s"] - epochs_s) / runs,
    }


def run(quick: bool = False, out: str | Path = "bench/results") -> BenchReport:
    t0 = time.perf_counter()
    trials, epochs, scale = (2, 1, 0.05) if quick else (6, 2, 0.1)
    cfg = preset_config(
        "task2",
        {"optim.epochs": epochs, "data.image_size": 32, "model.channels": 8, "model.stages": 3},
    )
    root = dataset("task2", scale, out)
    prepare_data(root, cfg)  # fill the decode cache before anything is timed
    with tempfile.TemporaryDirectory(prefix="bench-trials-") as tmp, ray_session(num_cpus=2):
        work = Path(tmp)
        rows = [
            sweep_overhead(
                cfg, root, work, trials=trials, workers=1, label="tune, 1-worker trials"
            ),
            sweep_overhead(
                cfg,
                root,
                work,
                trials=trials,
                workers=2,
                label="tune, 2-worker TorchTrainer trials",
            ),
            torch_trainer_overhead(cfg, root, work, runs=max(1, trials // 2)),
        ]
    report = BenchReport(
        benchmark="trial_overhead",
        quick=quick,
        config={
            "trials": trials,
            "epochs_per_trial": epochs,
            "scale": scale,
            "image_size": 32,
            "channels": 8,
            "max_concurrent": 1,
        },
        tables={"seconds per trial outside training": rows},
    )
    report.elapsed_s = time.perf_counter() - t0
    return report


def main() -> None:
    from bench import cli_main

    cli_main("trial_overhead")


if __name__ == "__main__":
    main()
