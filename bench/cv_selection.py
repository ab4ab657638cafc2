"""What cross-validated trials buy: the test macro-F1 of the config a sweep selects, with and
without ``--cv 3``, at the same wall-clock budget (issue 16 item 4).

``poketune bench cv_selection [--task task2] [--budget 15m] [--seeds 3] [--quick]``

Per seed, one after another (one sweep has the machine at a time), on the real-artwork set
of :func:`bench.artwork.build` (the one ``bench quality`` uses):

* **one_split**: ``poketune tune SPACE --time-budget-s B --seed S``: every trial judged on
  one stratified validation split (a fifth of the images);
* **cv3**: the same with ``--cv 3``: every trial trains 3 folds, judged on their mean.

Each sweep's best config is then trained the same way on every training image (``poketune
retrain NAME``: the best trial's epochs, refitted on all of them), submitted and scored on
the test set. So the two arms differ only in how they judged the configs: the refit is the
same recipe for both, and its time is reported apart from the sweep's budget.

Reported: the test macro-F1 per seed and arm, its mean and spread over seeds per arm (the
question: does CV select configs that are better, or more reliably good, on unseen images?),
trials per sweep and the CV sweep's time per trial (its cost: fewer trials in the budget).
Each arm's row is appended to ``OUT/cv_selection.arms.jsonl`` as it ends (see
:func:`bench.quality.record_arm`).
"""

from __future__ import annotations

import shlex
import statistics
import time
from pathlib import Path
from typing import Any

from bench._common import DEFAULT_OUT, BenchReport, Target
from bench.artwork import ArtworkMissingError
from bench.quality import (
    REPO,
    Arm,
    ArmError,
    _cli,
    _load,
    _match,
    _retrain_checkpoints,
    _run,
    _stats,
    _submit_and_score,
    _trial_count,
    build_task_set,
    plan_run,
    record_arm,
)

__all__ = ["ARMS", "OPTIONS", "run"]

OPTIONS = ("task", "budget", "seeds", "first_seed", "artwork")
#: arm → the extra ``tune`` arguments
ARMS: dict[str, list[str]] = {"one_split": [], "cv3": ["--cv", "3"]}
_QUICK = {"pokemon": 30, "variants": 2, "budget_s": 60.0, "samples": 2}
_FULL = {"budget_s": 900.0, "seeds": 3}


def _arm(arm: Arm, space: str, data: Path, budget_s: float, work: Path, samples: int, quick: bool, size: int) -> None:
    storage = work / "sweeps"
    name = f"cv-{arm.arm}-seed{arm.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    cmd = _cli("tune", str(REPO / space), "--data", str(data), "--samples", str(samples),
               "--time-budget-s", f"{budget_s:g}", "--name", name, "--storage", str(storage),
               "--seed", str(arm.seed), *ARMS[arm.arm])  # fmt: skip
    if quick:
        cmd += ["--set", f"data.image_size={size}"]
    out = _run(arm, "tune", cmd, work, timeout_s=budget_s * 2 + 300)
    best = _match(r"^best trial (\S+): (\w+) ([0-9.]+)", out, "the best trial line")
    arm.detail.update(best_trial=best.group(1), best_val_f1=float(best.group(3)), trials=_trial_count(name, storage))
    since = time.time()
    out = _run(arm, "retrain", _cli("retrain", name, "--storage", str(storage)), work, timeout_s=budget_s * 2 + 300)
    epochs = _match(r"for (\d+) epochs", out, "the retrain's epoch count")
    arm.detail["epoch"] = f"refit {epochs.group(1)}"
    checkpoints = _retrain_checkpoints(out, storage / name / "retrain", since)
    arm.test_f1 = _submit_and_score(arm, ",".join(checkpoints), data, work, timeout_s=600)


def _row(a: Arm) -> dict[str, Any]:
    def step_s(name: str) -> float | None:
        return next((s.wall_s for s in a.steps if s.name == name), None)

    trials = a.detail.get("trials")
    return {
        "seed": a.seed, "arm": a.arm, "test_f1": a.test_f1, "best_val_f1": a.detail.get("best_val_f1"),
        "trials": trials, "tune_s": step_s("tune"), "refit_s": step_s("retrain"),
        "s_per_trial": (step_s("tune") or 0) / trials if trials else None,
        "epoch": a.detail.get("epoch"), "load_1m": "/".join(f"{v:.1f}" for v in a.load), "error": a.error,
    }  # fmt: skip


def run(
    quick: bool = False,
    out: str | Path = DEFAULT_OUT,
    *,
    task: str = "task2",
    budget: str | float | None = None,
    seeds: int | None = None,
    first_seed: int | None = None,
    artwork: str | Path | None = None,
) -> BenchReport:
    t0 = time.perf_counter()
    plan = plan_run(task, budget, seeds, first_seed, quick, quick_defaults=_QUICK, full_defaults=_FULL)
    spec, budget_s, seed_list, samples = plan.spec, plan.budget_s, plan.seeds, plan.samples
    config: dict[str, Any] = {"task": task, "space": spec.space, "budget_s": budget_s, "samples": samples,
                              "seeds": seed_list, "arms": {a: " ".join(x) or "(none)" for a, x in ARMS.items()}}  # fmt: skip
    out = Path(out).resolve()
    try:
        data, info = build_task_set(spec, out, quick, artwork, _QUICK)
    except ArtworkMissingError as exc:
        return BenchReport("cv_selection", quick, config, {}, skipped=str(exc), elapsed_s=time.perf_counter() - t0)
    size = int(info["params"]["size"])
    config.update(data=str(data), image_size=size, set=info["counts"])

    stamp = time.strftime("%Y%m%d-%H%M%S")
    arms: list[Arm] = []
    rows: list[dict[str, Any]] = []  # the report's rows, each kept on disk as its arm ends
    for seed in seed_list:
        work = out / "cv_selection" / task / f"{stamp}-seed{seed}"
        for arm_name in ARMS:
            print(f"[cv_selection {task}] seed {seed}: {arm_name} (budget {budget_s:.0f}s)", flush=True)
            arm = Arm(arm_name, seed, load=[_load()])
            try:
                _arm(arm, spec.space, data, budget_s, work, samples, quick, size)
            except ArmError as exc:  # reported in its row; the other arm still runs
                arm.error = str(exc)
            arm.load.append(_load())
            arms.append(arm)
            rows.append(_row(arm))
            record_arm(out, "cv_selection", stamp, rows[-1])
            f1 = "failed" if arm.test_f1 is None else f"{arm.test_f1:.4f}"
            print(f"[cv_selection {task}] seed {seed}: {arm_name} test macro-F1 {f1}", flush=True)

    per_arm = {n: [a.test_f1 for a in arms if a.arm == n and a.test_f1 is not None] for n in ARMS}
    summary_rows = [
        {"arm": n, "seeds_ok": len(per_arm[n]), **_stats(per_arm[n]),
         "mean_trials": statistics.fmean([float(a.detail["trials"]) for a in arms if a.arm == n and a.detail.get("trials")] or [0.0])}
        for n in ARMS
    ]  # fmt: skip
    means = {n: _stats(per_arm[n])["mean"] for n in ARMS}
    spreads = {n: _stats(per_arm[n])["std"] for n in ARMS}
    gain = None if means["cv3"] is None or means["one_split"] is None else means["cv3"] - means["one_split"]
    summary = {
        "mean test macro-F1 cv3 - one_split": gain,
        "spread over seeds (std) one_split / cv3": f"{spreads['one_split']} / {spreads['cv3']}",
    }
    targets = [
        Target("mean test macro-F1, cv3 - one_split", gain, 0.0, ">=",
               "issue 16: does CV select better configs at the same budget? (reported either way)"),
    ]  # fmt: skip
    commands = [
        {"seed": a.seed, "arm": a.arm, "step": s.name, "wall_s": s.wall_s, "command": shlex.join(s.command)}
        for a in arms
        for s in a.steps
    ]
    return BenchReport(
        benchmark="cv_selection",
        quick=quick,
        config=config,
        tables={"per seed and arm": rows, "per arm over seeds": summary_rows},
        summary=summary,
        targets=targets,
        extra={"commands": commands},
        elapsed_s=time.perf_counter() - t0,
    )


if __name__ == "__main__":
    from bench import cli_main

    cli_main("cv_selection")
