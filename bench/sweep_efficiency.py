"""Is ASHA + TPE worth it?  Against random search without pruning, on generated task2 data,
with the same number of trials and the same maximum epochs per trial: how many epochs (and
how much training time) each needs until its best val_f1 comes within ``TOLERANCE`` of the
best either found.  Target: ASHA + TPE needs <= 1/3 of random search's epochs.

Both sweeps run their trials one after another (``max_concurrent=1``), so "epochs so far"
follows the order trials really ran in and the same seed reproduces the same sweep; the
two strategies of a seed run side by side in two driver processes on one Ray cluster (one
core each).  Random search is Optuna's ``RandomSampler`` on the same define-by-run space
with Tune's ``FIFOScheduler`` (every trial runs all epochs).

The other strategies ``tune --search/--scheduler`` offer (issue 18) run on the same seeds,
space and data: the median stopping rule with TPE, ASHA with random proposals (what pruning
alone buys), and ASHA with Optuna's Gaussian-process sampler. The target stays the one above
(ASHA + TPE against random search, the best of those two); the strategy table compares every
strategy at the same compute: its best val_f1 after as many epochs as the cheapest strategy
of that seed used in all.

Population-based training cannot run one trial at a time: its trials learn from each other
while they train. So after those sweeps each seed runs two more, one after the other, each with
the whole cluster and ``POPULATION_AT_ONCE`` trials side by side (half a core each): PBT with a
population of that size (every ``PBT_INTERVAL`` epochs the bottom quarter copies a top trial
and perturbs its learning rate and dropout) and ASHA + TPE with the same concurrency and
``samples`` trials. Side by side, "epochs so far" follows the times the epochs were reported,
and the population table compares the two at equal epochs and equal wall time.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench._common import BenchReport, Target, dataset, ray_session, write_space
from training.data import load_split
from training.tasks import preset_config

__all__ = [
    "POPULATION",
    "STRATEGIES",
    "TOLERANCE",
    "Strategy",
    "curve",
    "curve_by_time",
    "epochs_to_target",
    "equal_budget",
    "main",
    "pbt_space_doc",
    "plot",
    "population_table",
    "run",
    "space_doc",
]

TOLERANCE = 0.01
TARGET_RATIO = 1 / 3
DOCS_PLOT = Path("docs/img/sweep_efficiency.png")
_LINESTYLES: list[Any] = ["-", "--", ":", "-.", (0, (6, 2, 1, 2, 1, 2))]


@dataclass(frozen=True)
class Strategy:
    label: str
    search: str | None  # tuning.sweep.SAMPLERS name (None: PBT, which takes no searcher)
    scheduler: str  # tuning.sweep.SCHEDULERS name
    #: trials side by side (above 1 the sweep has the whole cluster to itself)
    concurrent: int = 1


STRATEGIES = (
    Strategy("asha+tpe", "tpe", "asha"),
    Strategy("random", "random", "fifo"),
    Strategy("median+tpe", "tpe", "median"),
    Strategy("asha+random", "random", "asha"),
    Strategy("asha+gp", "gp", "asha"),
)
#: the pair the target compares (the rest are measured beside them)
_PAIR = ("asha+tpe", "random")
#: trials side by side in the population comparison: PBT's whole population at once
POPULATION_AT_ONCE = 4
#: epochs between PBT's exploits: ASHA's second rung, enough for a perturbed learning rate to
#: show in val_f1 (every epoch, the default ``grace_period`` here, judges one noisy epoch)
PBT_INTERVAL = 3
POPULATION = (
    Strategy("pbt", None, "pbt", concurrent=POPULATION_AT_ONCE),
    Strategy(f"asha+tpe-x{POPULATION_AT_ONCE}", "tpe", "asha", concurrent=POPULATION_AT_ONCE),
)


def space_doc(max_epochs: int) -> dict[str, Any]:
    """A small CNN at 32 px with the knobs that decide whether it learns at all."""
    return {
        "task": "task2",
        "asha": {"max_epochs": max_epochs, "grace_period": 1, "reduction_factor": 3},
        "fixed": {"data.image_size": 32, "model.stages": 3},
        "params": {
            "optim.lr": {"loguniform": [1.0e-5, 1.0e-1]},
            "optim.optimizer": {"choice": ["adam", "sgd"]},
            "model.channels": {"choice": [4, 8, 16]},
            "optim.batch_size": {"choice": [16, 32, 64]},
            "model.dropout": {"uniform": [0.0, 0.5]},
        },
    }


def curve(history: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Per epoch, in the order they ran: cumulative epochs, cumulative trial time and the
    best val_f1 so far."""
    rank = {tid: i for i, tid in enumerate(order)}
    h = history.assign(_rank=history["trial_id"].map(rank).fillna(len(rank)))
    h = h.sort_values(["_rank", "training_iteration"]).reset_index(drop=True)
    # time_total_s is per trial and cumulative: its increments are each epoch's trial time
    step_s = h.groupby("trial_id", sort=False)["time_total_s"].diff().fillna(h["time_total_s"])
    return pd.DataFrame(
        {
            "trial_id": h["trial_id"],
            "epochs": range(1, len(h) + 1),
            "time_s": step_s.cumsum(),
            "val_f1": h["val_f1"],
            "best_so_far": h["val_f1"].cummax(),
        }
    )


def curve_by_time(history: pd.DataFrame) -> pd.DataFrame:
    """:func:`curve` for trials that ran side by side: epochs in the order they were reported
    (Tune's ``timestamp``, whole seconds; ties by trial and epoch), with the wall seconds since
    the first report instead of summed trial time."""
    h = history.sort_values(["timestamp", "trial_id", "training_iteration"]).reset_index(drop=True)
    return pd.DataFrame(
        {
            "trial_id": h["trial_id"],
            "epochs": range(1, len(h) + 1),
            "wall_s": h["timestamp"] - h["timestamp"].iloc[0],
            "val_f1": h["val_f1"],
            "best_so_far": h["val_f1"].cummax(),
        }
    )


def population_table(
    seeds: list[int], outcomes: dict[tuple[int, str], dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[tuple[int, str], pd.DataFrame]]:
    """Per seed and population strategy: epochs, best val_f1, PBT's exploits, and each one's
    best after the epochs and the wall seconds the cheaper of the seed's two used."""
    curves = {key: curve_by_time(pd.DataFrame(o["history"])) for key, o in outcomes.items()}
    rows = []
    for seed in seeds:
        mine = {label: c for (s, label), c in curves.items() if s == seed}
        epochs = min(len(c) for c in mine.values())
        wall = min(float(c["wall_s"].iloc[-1]) for c in mine.values())
        for label, c in mine.items():
            h = pd.DataFrame(outcomes[(seed, label)]["history"])
            rows.append({
                "seed": seed,
                "strategy": label,
                "trials": c["trial_id"].nunique(),
                "total_epochs": len(c),
                "exploits": int(h["exploited_from"].notna().sum()) if "exploited_from" in h else 0,
                "best_val_f1": float(c["best_so_far"].max()),
                "equal_epochs": epochs,
                "best_at_equal_epochs": float(c.loc[c["epochs"] <= epochs, "best_so_far"].iloc[-1]),
                "equal_wall_s": wall,
                "best_at_equal_wall": float(c.loc[c["wall_s"] <= wall, "best_so_far"].iloc[-1]),
                "sweep_wall_s": outcomes[(seed, label)]["wall_s"],
            })  # fmt: skip
    return rows, curves


def epochs_to_target(c: pd.DataFrame, target: float) -> tuple[int | None, float | None]:
    """(epochs, trial seconds) until the best-so-far first reaches ``target``; Nones if never."""
    hit = c.index[c["best_so_far"] >= target]
    if len(hit) == 0:
        return None, None
    row = c.loc[hit[0]]
    return int(row["epochs"]), float(row["time_s"])


def _one_sweep(
    strategy: Strategy,
    seed: int,
    space: str,
    data: str,
    storage: str,
    samples: int,
    address: str,
) -> dict[str, Any]:
    """One sweep in its own driver process (a multiprocessing child) on the parent's Ray.
    ``samples`` is PBT's population."""
    import ray

    from tuning.results import Sweep
    from tuning.sweep import SweepOptions, run_sweep

    name = f"{strategy.label}-seed{seed}"
    log = Path(storage) / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        result = run_sweep(
            SweepOptions(
                space=space,
                data=data,
                samples=samples,
                name=name,
                storage=storage,
                max_concurrent=strategy.concurrent,
                # side by side, the trials share the 2 cores: one thread each
                cpus_per_trial=1 if strategy.concurrent == 1 else 2 / strategy.concurrent,
                seed=seed,
                address=address,
                max_failures=0,
                search=strategy.search,
                scheduler=strategy.scheduler,
            )
        )
    ray.shutdown()  # disconnect this driver; the cluster belongs to the parent
    sweep = Sweep.open(name, storage)
    return {
        "history": sweep.history().to_dict("records"),
        # the order Tune created the trials: with one at a time, the order they ran
        # (OptunaSearch's trial ids are random, and file times are rewritten later)
        "order": sweep.trials().sort_values("order")["trial_id"].tolist(),
        "wall_s": result.wall_time_s,
    }


def _summarise(
    seed: int, outcomes: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, pd.DataFrame]]:
    curves = {label: curve(pd.DataFrame(o["history"]), o["order"]) for label, o in outcomes.items()}
    best = max(float(curves[label]["best_so_far"].max()) for label in _PAIR)
    target = best - TOLERANCE
    rows = []
    for label, c in curves.items():
        epochs, secs = epochs_to_target(c, target)
        rows.append(
            {
                "seed": seed,
                "strategy": label,
                "trials": c["trial_id"].nunique(),
                "total_epochs": len(c),
                "best_val_f1": float(c["best_so_far"].max()),
                "target_f1": target,
                "epochs_to_target": epochs,
                "trial_s_to_target": secs,
                "total_trial_s": float(c["time_s"].iloc[-1]),
                "sweep_wall_s": outcomes[label]["wall_s"],
            }
        )
    return rows, curves


def _ratio(rows: list[dict[str, Any]]) -> float:
    """ASHA+TPE epochs / random epochs to the target. Random never reaching it counts as all
    its epochs (so the ratio is an upper bound); ASHA never reaching it is infinitely worse."""
    by = {r["strategy"]: r for r in rows}
    asha, rand = by["asha+tpe"], by["random"]
    if asha["epochs_to_target"] is None:
        return float("inf")
    return asha["epochs_to_target"] / (rand["epochs_to_target"] or rand["total_epochs"])


def equal_budget(seed: int, curves: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Random search's best val_f1 after as many epochs as the whole ASHA sweep used: the
    same question asked the other way round (what does the same compute buy)."""
    asha, rand = curves["asha+tpe"], curves["random"]
    budget = len(asha)
    at_budget = rand.loc[rand["epochs"] <= budget, "best_so_far"]
    return {
        "seed": seed,
        "epochs": budget,
        "asha+tpe_best": float(asha["best_so_far"].iloc[-1]),
        "random_best": float(at_budget.iloc[-1]) if len(at_budget) else None,
    }


def strategy_table(curves: dict[tuple[int, str], pd.DataFrame]) -> list[dict[str, Any]]:
    """Per strategy over the seeds: epochs trained, its own best val_f1, and its best after
    as many epochs as the cheapest strategy of the same seed used in all (equal compute)."""
    seeds = sorted({seed for seed, _ in curves})
    cheapest = {seed: min(len(c) for (s, _), c in curves.items() if s == seed) for seed in seeds}
    rows = []
    for label in dict.fromkeys(label for _, label in sorted(curves, key=lambda k: k[0])):
        mine = {seed: curves[(seed, label)] for seed in seeds if (seed, label) in curves}
        at_equal = [float(c.loc[c["epochs"] <= cheapest[seed], "best_so_far"].iloc[-1]) for seed, c in mine.items()]
        rows.append({
            "strategy": label,
            "seeds": len(mine),
            "mean_total_epochs": statistics.fmean(len(c) for c in mine.values()),
            "mean_best_val_f1": statistics.fmean(float(c["best_so_far"].max()) for c in mine.values()),
            "mean_best_at_equal_epochs": statistics.fmean(at_equal),
            "mean_trial_s": statistics.fmean(float(c["time_s"].iloc[-1]) for c in mine.values()),
        })  # fmt: skip
    return rows


def plot(curves: dict[tuple[int, str], pd.DataFrame], path: Path) -> Path:
    """Best-so-far val_f1 against cumulative epochs: one line per (seed, strategy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=90)
    colors = {"asha+tpe": "tab:blue", "random": "tab:orange", "median+tpe": "tab:green",
              "asha+random": "tab:red", "asha+gp": "tab:purple", "pbt": "tab:brown",
              POPULATION[1].label: "tab:cyan"}  # fmt: skip
    seen: set[str] = set()
    for (seed, label), c in sorted(curves.items()):
        ax.step(
            c["epochs"],
            c["best_so_far"],
            where="post",
            color=colors.get(label, "gray"),
            alpha=0.8,
            # on top and wider: with one seed both strategies start with the same trials
            zorder=3 if label == "asha+tpe" else 2,
            linewidth=2.2 if label == "asha+tpe" else 1.2,
            linestyle=_LINESTYLES[seed % len(_LINESTYLES)],
            label=label if label not in seen else None,
        )
        seen.add(label)
    ax.set_xlabel("epochs trained so far (all trials)")
    ax.set_ylabel("best val_f1 so far")
    ax.set_title("search strategies on one space (line style = seed)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def pbt_space_doc(space: dict[str, Any], quick: bool) -> dict[str, Any]:
    """The space under PBT: its distributions seed the population, lr and dropout mutate."""
    interval = 1 if quick else PBT_INTERVAL
    return space | {"scheduler": {"name": "pbt", "perturbation_interval": interval}}


def _drivers(jobs: list[tuple[Any, ...]], processes: int) -> list[dict[str, Any]]:
    """:func:`_one_sweep` for every job, ``processes`` driver processes at a time."""
    # spawn: a fork of a process that runs Ray is not safe
    pool = multiprocessing.get_context("spawn").Pool(processes)
    try:
        outcomes = pool.starmap(_one_sweep, jobs)
        pool.close()  # let the drivers exit on their own: terminate() kills Ray mid-shutdown
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    return outcomes


def run(quick: bool = False, out: str | Path = "bench/results") -> BenchReport:
    import ray

    t0 = time.perf_counter()
    seeds, samples, max_epochs, scale = (
        ([0], 4, 3, 0.05) if quick else ([0, 1, 2, 3], 12, 27, 0.3)
    )
    population = 2 if quick else POPULATION_AT_ONCE
    out = Path(out)
    root = dataset("task2", scale, out)
    space_cfg = space_doc(max_epochs)
    load_split(root, preset_config("task2", space_cfg["fixed"]).data)  # decode once, up front
    rows: list[dict[str, Any]] = []
    budget_rows: list[dict[str, Any]] = []
    curves: dict[tuple[int, str], pd.DataFrame] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sweeps-") as tmp, ray_session(num_cpus=2):
        space = write_space(Path(tmp) / "space.yaml", space_cfg)
        address = ray.get_runtime_context().gcs_address
        jobs = [
            (s, seed, str(space), str(root), str(Path(tmp) / "runs"), samples, address)
            for seed in seeds
            for s in STRATEGIES
        ]
        outcomes = _drivers(jobs, 2)
        # the population sweeps take the whole cluster each: one driver at a time
        pbt_space = write_space(Path(tmp) / "pbt.yaml", pbt_space_doc(space_cfg, quick))
        pop_jobs = [
            (s, seed, str(pbt_space if s.scheduler == "pbt" else space), str(root),
             str(Path(tmp) / "runs"), population if s.scheduler == "pbt" else samples, address)
            for seed in seeds
            for s in (POPULATION[:1] if quick else POPULATION)  # quick: PBT's path only
        ]  # fmt: skip
        pop_outcomes = _drivers(pop_jobs, 1)
        logs = Path(tmp) / "runs"
        for seed in seeds:
            mine = {
                job[0].label: o for job, o in zip(jobs, outcomes, strict=True) if job[1] == seed
            }
            seed_rows, seed_curves = _summarise(seed, mine)
            budget_rows.append(equal_budget(seed, seed_curves))
            rows += seed_rows
            curves.update({(seed, label): c for label, c in seed_curves.items()})
        pop_rows, pop_curves = population_table(
            seeds, {(job[1], job[0].label): o for job, o in zip(pop_jobs, pop_outcomes, strict=True)}
        )
        (out / "sweep_efficiency_logs").mkdir(parents=True, exist_ok=True)
        for f in logs.glob("*.log"):
            shutil.copy(f, out / "sweep_efficiency_logs" / f.name)
    ratios = [_ratio([r for r in rows if r["seed"] == seed]) for seed in seeds]
    by_seed = {
        seed: {r["strategy"]: r["total_epochs"] for r in rows if r["seed"] == seed}
        for seed in seeds
    }
    finite = [r for r in ratios if r != float("inf")]
    png = plot(curves | pop_curves, out / "sweep_efficiency.png")
    if not quick:
        DOCS_PLOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(png, DOCS_PLOT)
    median = statistics.median(ratios) if ratios else float("nan")
    report = BenchReport(
        benchmark="sweep_efficiency",
        quick=quick,
        config={
            "seeds": seeds,
            "samples": samples,
            "max_epochs": max_epochs,
            "scale": scale,
            "tolerance": TOLERANCE,
            "space": space_cfg,
            "max_concurrent": 1,
            "population": population,
            "pbt_interval": PBT_INTERVAL,
        },
        tables={
            "per seed and strategy": rows,
            "best val_f1 after the epochs the ASHA sweep used": budget_rows,
            "per strategy": strategy_table(curves),
            f"side by side ({population} trials at once)": pop_rows,
        },
        summary={
            "total_epoch_ratio_per_seed": [
                round(by_seed[seed]["asha+tpe"] / by_seed[seed]["random"], 3) for seed in seeds
            ],
            "equal_budget_asha_at_least_random": sum(
                b["random_best"] is None or b["asha+tpe_best"] >= b["random_best"]
                for b in budget_rows
            ),
            "epoch_ratio_per_seed": [round(r, 3) for r in ratios],
            "epoch_ratio_median": median,
            "epoch_ratio_range": [min(finite), max(finite)] if finite else None,
            "plot": str(png),
        },
        extra={
            "curves": {
                f"{label}-seed{seed}": c.to_dict("list")
                for (seed, label), c in (curves | pop_curves).items()
            }
        },
        targets=[Target("asha+tpe / random epochs to target (median)", median, TARGET_RATIO, "<=")],
    )
    report.elapsed_s = time.perf_counter() - t0
    return report


def main() -> None:
    from bench import cli_main

    cli_main("sweep_efficiency")


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
