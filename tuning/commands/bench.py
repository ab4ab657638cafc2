"""``poketune bench NAME... [--quick] [--out bench/results]``: the benchmarks in ``bench/``."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from bench import add_arguments as bench_arguments

    bench_arguments(p)


def run(args: argparse.Namespace) -> int:
    from bench import bench_options, run_many

    run_many(args.names, quick=args.quick, out=args.out, options=bench_options(args))
    return 0
