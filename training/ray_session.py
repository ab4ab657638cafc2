"""The Ray session every entry point shares: where runs are stored, how Ray is started or
joined, and how a node's CPUs are shared between training workers.

``poketune train``, ``tune``, ``retrain``, the tests and the benchmarks all start Ray through
:func:`init_ray`, so what is tested and measured is what the CLI runs. Cheap to import: Ray
itself is imported only by the functions that talk to it (the CLI reads
:func:`default_storage` while it builds its parser).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

__all__ = ["cpus_per_worker", "default_storage", "init_ray", "node_cpus", "torch_threads"]


def default_storage() -> str:
    """Where sweeps (and their Ray Tune/Train runs) go unless told otherwise: ./poketune_runs."""
    return str(Path("poketune_runs").resolve())


def init_ray(address: str | None, *, verbose: bool = False, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (``auto``, ``ray://host:10001``) or start a local Ray.

    Does nothing when Ray is already initialised. ``num_cpus`` caps a local Ray (ignored
    with an ``address``).
    """
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {
        "logging_level": logging.INFO if verbose else logging.ERROR,
        "log_to_driver": verbose,
    }
    # A local Ray keeps its dashboard (~1 s of start-up): Train V2's PlacementGroupCleaner
    # finds dead Train controllers through the State API the dashboard serves, and a
    # TorchTrainer trial's controller dies with its trial actor before it releases the
    # workers' placement group. With include_dashboard=False that group leaks and the next
    # TorchTrainer trial waits for CPUs forever (measured by bench/trial_overhead.py).
    if address:
        kwargs["address"] = address
    elif num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)


def node_cpus() -> list[float]:
    """The CPUs of each live node of the connected Ray cluster."""
    import ray

    return [float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]


def torch_threads(cpus: float) -> int:
    """A worker's torch threads: the whole CPUs reserved for it, at least one (a fraction of
    a CPU still runs one thread; more threads than CPUs only oversubscribe the node)."""
    return max(1, math.floor(cpus))


def cpus_per_worker(num_threads: int, workers: int, node_cpus: list[float]) -> float:
    """CPUs (and torch threads) for each of ``workers`` Ray Train workers.

    ``num_threads`` (``--set num_threads=N``) when given, else an even share of the
    cluster's CPUs: one worker on a laptop gets every core (Ray would otherwise pin it to
    one thread). Capped at the largest node, since a worker runs on one node, and at least
    one CPU.
    """
    largest = max(node_cpus, default=1.0)
    share = torch_threads(min(largest, sum(node_cpus) / max(workers, 1)))
    return float(max(1, min(num_threads or share, share)))
