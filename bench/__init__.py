"""Benchmarks: ``poketune bench NAME [--quick] [--out DIR]`` or ``python -m bench.NAME``.

Each benchmark module has ``run(quick, out) -> BenchReport``; the report prints as a table
and is written to ``OUT/NAME.json``.  Modules are imported only when run, so listing them
costs nothing.  Results and how to read them: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any

from bench._common import DEFAULT_OUT, BenchReport
from training.registry import Registry

__all__ = [
    "BENCHMARKS",
    "BENCH_OPTIONS",
    "DEFAULT_OUT",
    "ON_DEMAND",
    "ORDER",
    "BenchReport",
    "add_arguments",
    "bench_options",
    "cli_main",
    "run_benchmark",
    "run_many",
]

#: benchmark name → (module under ``bench``, one-line description); ``all`` runs them in order
BENCHMARKS: Registry[tuple[str, str]] = Registry("benchmark")
BENCHMARKS.register("data")(("data", "decode + cache 3600 images, cached load, augmentation"))
BENCHMARKS.register("overhead")(
    ("overhead", "plain PyTorch vs fit vs poketune train vs one tune trial (images/s)")
)
BENCHMARKS.register("trial_overhead")(
    ("trial_overhead", "time per sweep trial outside training (1 worker, TorchTrainer)")
)
BENCHMARKS.register("sweep_efficiency")(
    ("sweep_efficiency", "ASHA+TPE vs random search: epochs until the best val_f1")
)
BENCHMARKS.register("seeds")(("seeds", "the seeds' task1/task2 configs through poketune train"))
BENCHMARKS.register("gpu")(("gpu", "overhead and trial packing on a GPU (skipped without CUDA)"))
BENCHMARKS.register("features")(
    ("features", "frozen-backbone feature cache: a head trial cached vs the live backbone")
)
BENCHMARKS.register("quality")(
    ("quality", "test macro-F1 on real artwork: bare baseline vs preset vs tune→retrain→submit")
)
BENCHMARKS.register("soak")(
    ("soak", "a 400-trial sweep: driver/trial memory, file descriptors, actors, storage per 100 trials")
)
BENCHMARKS.register("cv_selection")(
    ("cv_selection", "test macro-F1 of the config a sweep selects, with and without --cv 3")
)

#: every benchmark, cheap ones first, so a failure of ``poketune bench all`` shows early
ORDER = (
    "data", "overhead", "trial_overhead", "sweep_efficiency", "seeds", "gpu", "features", "soak",
    "quality", "cv_selection",
)  # fmt: skip
#: run only when named: ``all`` leaves them out (quality takes about an hour per task,
#: cv_selection 1.5 hours)
ON_DEMAND = ("quality", "cv_selection")


def run_benchmark(
    name: str,
    *,
    quick: bool = False,
    out: str | Path = DEFAULT_OUT,
    options: dict[str, Any] | None = None,
) -> BenchReport:
    """Run one benchmark, print its table, write ``OUT/NAME.json``.

    ``options`` (e.g. quality's task, budget, seeds) go to the benchmarks that list them in
    their module's ``OPTIONS``; a value of None means the benchmark's own default.
    """
    module_name, _ = BENCHMARKS.get(name)
    module = importlib.import_module(f"bench.{module_name}")
    accepted = getattr(module, "OPTIONS", ())
    kwargs = {k: v for k, v in (options or {}).items() if k in accepted and v is not None}
    report: BenchReport = module.run(quick=quick, out=out, **kwargs)
    path = report.write(out)
    print(report.table())
    print(f"wrote {path}", flush=True)
    return report


def run_many(
    names: list[str], *, quick: bool, out: str | Path, options: dict[str, Any] | None = None
) -> list[BenchReport]:
    """``all`` expands to every benchmark in :data:`ORDER` but the :data:`ON_DEMAND` ones."""
    chosen = [n for n in ORDER if n not in ON_DEMAND] if names == ["all"] else names
    for name in chosen:
        BENCHMARKS.get(name)  # fail on a typo before the first benchmark runs for minutes
    t0 = time.perf_counter()
    reports = [run_benchmark(n, quick=quick, out=out, options=options) for n in chosen]
    if len(chosen) > 1:
        print(f"\n{len(chosen)} benchmarks in {time.perf_counter() - t0:.0f}s")
    return reports


def add_arguments(p: argparse.ArgumentParser) -> None:
    names = ", ".join([*ORDER, "all"])
    p.add_argument("names", nargs="+", metavar="NAME", help=f"benchmark(s): {names}")
    p.add_argument("--quick", action="store_true", help="tiny sizes: seconds, not minutes")
    p.add_argument(
        "--out", default=str(DEFAULT_OUT), help=f"results folder (default {DEFAULT_OUT})"
    )
    _add_quality_options(p)


#: the ``bench`` options that only some benchmarks take (see ``run_benchmark``)
BENCH_OPTIONS = ("task", "budget", "seeds", "first_seed", "artwork", "arms", "tracemalloc")


def _add_quality_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("quality and cv_selection (the others ignore these)")
    g.add_argument("--task", choices=("task1", "task2", "task3"), help="default task2")
    g.add_argument("--budget", help="wall clock per arm: 90s, 20m, 1h (default 20m; quick 40s)")
    g.add_argument("--seeds", type=int, help="training seeds (default 3; quick 1)")
    g.add_argument("--first-seed", type=int, help="the first training seed (default 0): --first-seed 2 --seeds 1 runs seed 2 alone")
    g.add_argument("--arms", help="quality: the arms to run, comma-separated (default baseline,preset,flow)")
    g.add_argument("--artwork", help="the Pokémon artwork folder (default ../shared/data/pokemon-artwork)")
    g = p.add_argument_group("soak")
    g.add_argument("--tracemalloc", action="store_true", default=None,
                   help="trace the driver's Python allocations and attribute its growth by package")


def bench_options(args: argparse.Namespace) -> dict[str, Any]:
    """The per-benchmark options a parsed ``bench`` command line holds."""
    return {k: getattr(args, k, None) for k in BENCH_OPTIONS}


def cli_main(name: str | None = None) -> None:
    """``python -m bench.NAME [--quick] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}" if name else "bench")
    if name is None:
        add_arguments(parser)
    else:
        parser.add_argument("--quick", action="store_true")
        parser.add_argument("--out", default=str(DEFAULT_OUT))
        _add_quality_options(parser)
    args = parser.parse_args()
    names = [name] if name else args.names
    run_many(names, quick=args.quick, out=args.out, options=bench_options(args))
    sys.exit(0)
