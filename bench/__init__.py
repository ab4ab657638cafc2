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

from bench._common import DEFAULT_OUT, BenchReport
from training.registry import Registry

__all__ = [
    "BENCHMARKS",
    "DEFAULT_OUT",
    "ORDER",
    "BenchReport",
    "add_arguments",
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

#: the order of ``poketune bench all``: cheap ones first, so a failure shows early
ORDER = ("data", "overhead", "trial_overhead", "sweep_efficiency", "seeds", "gpu")


def run_benchmark(name: str, *, quick: bool = False, out: str | Path = DEFAULT_OUT) -> BenchReport:
    """Run one benchmark, print its table, write ``OUT/NAME.json``."""
    module_name, _ = BENCHMARKS.get(name)
    module = importlib.import_module(f"bench.{module_name}")
    report: BenchReport = module.run(quick=quick, out=out)
    path = report.write(out)
    print(report.table())
    print(f"wrote {path}", flush=True)
    return report


def run_many(names: list[str], *, quick: bool, out: str | Path) -> list[BenchReport]:
    """``all`` expands to every benchmark in :data:`ORDER`."""
    chosen = list(ORDER) if names == ["all"] else names
    for name in chosen:
        BENCHMARKS.get(name)  # fail on a typo before the first benchmark runs for minutes
    t0 = time.perf_counter()
    reports = [run_benchmark(n, quick=quick, out=out) for n in chosen]
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


def cli_main(name: str | None = None) -> None:
    """``python -m bench.NAME [--quick] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}" if name else "bench")
    if name is None:
        add_arguments(parser)
    else:
        parser.add_argument("--quick", action="store_true")
        parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args()
    names = [name] if name else args.names
    run_many(names, quick=args.quick, out=args.out)
    sys.exit(0)
