"""What every benchmark shares: the machine description, generated datasets, a Ray
session, timing, the result document (JSON) and the printed table."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "DEFAULT_OUT",
    "BenchReport",
    "Target",
    "dataset",
    "in_child",
    "machine_info",
    "ray_session",
    "steady_images_per_s",
    "stopwatch",
    "write_space",
]

DEFAULT_OUT = Path("bench/results")

T = TypeVar("T")


@dataclass
class Target:
    """One claim a benchmark checks: ``value <op> limit``."""

    metric: str
    value: float | None
    limit: float
    op: str  # "<=" or ">="
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None or math.isnan(self.value):
            return None
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit


@dataclass
class BenchReport:
    """The JSON document one benchmark writes to ``OUT/NAME.json``."""

    benchmark: str
    quick: bool
    config: dict[str, Any]
    #: table title → rows (one dict per row, same keys)
    tables: dict[str, list[dict[str, Any]]]
    summary: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    skipped: str | None = None
    #: bulky data for the JSON only (curves, raw histories); never printed
    extra: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    machine: dict[str, Any] = field(default_factory=lambda: machine_info())
    finished: str = field(default_factory=lambda: _dt.datetime.now().isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["targets"] = [{**asdict(t), "met": t.met} for t in self.targets]
        return _finite(out)

    def write(self, out_dir: str | Path) -> Path:
        path = Path(out_dir) / f"{self.benchmark}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        return path

    def table(self) -> str:
        """The tables, fixed-width, then the summary and the targets."""
        import pandas as pd  # here, not at the top: `poketune bench --help` stays light

        lines = [f"== {self.benchmark}{' (quick)' if self.quick else ''} =="]
        if self.skipped:
            lines.append(f"skipped: {self.skipped}")
        for title, rows in self.tables.items():
            if not rows:
                continue
            frame = pd.DataFrame(rows)
            lines.append(f"-- {title}")
            with pd.option_context("display.max_columns", None, "display.width", 200):
                lines.append(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        for key, value in self.summary.items():
            lines.append(f"{key}: {_fmt(value)}")
        for t in self.targets:
            verdict = {True: "met", False: "MISSED", None: "n/a"}[t.met]
            value = "n/a" if t.value is None else f"{t.value:.4g}"
            note = f"  ({t.note})" if t.note else ""
            lines.append(f"target {t.metric}: {value} {t.op} {t.limit:g} -> {verdict}{note}")
        lines.append(f"elapsed {self.elapsed_s:.1f}s")
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, library versions and the GPU, if any."""
    import optuna
    import ray
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gb = round(int(line.split()[1]) / 1024**2, 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": ram_gb,
        "load_avg_1m": load,  # > nproc: other work shared the machine, numbers are noisy
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "ray": ray.__version__,
        "optuna": optuna.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def dataset(kind: str, scale: float, out_dir: str | Path, *, seed: int = 0) -> Path:
    """A generated dataset under ``OUT/data``, written once and reused by later runs."""
    from training.data.synthetic import make_dataset

    root = Path(out_dir) / "data" / f"{kind}-s{scale:g}-seed{seed}"
    if (root / "train.csv").is_file() and (root / "test_labels.csv").is_file():
        return root
    return make_dataset(kind, root, scale=scale, seed=seed, overwrite=True)


def write_space(path: Path, doc: dict[str, Any]) -> Path:
    """A search-space YAML for the benchmark's sweeps."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@contextlib.contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[float]:
    """A local Ray for the benchmark (yields its start-up time); shut down afterwards unless
    one was already running (then it is reused and left alone).

    It starts through the product's own ``init_ray``, so whatever Ray settings the CLI uses
    are the ones measured.
    """
    import ray

    from training.ray_session import init_ray

    if ray.is_initialized():
        yield 0.0
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t0 = time.perf_counter()
    init_ray(None, num_cpus=num_cpus)
    try:
        yield time.perf_counter() - t0
    finally:
        ray.shutdown()


def in_child(fn: Callable[..., T], *args: Any, timeout_s: float) -> T | None:
    """``fn(*args)`` in a fresh (spawned) process; None if it has not returned after
    ``timeout_s`` (the process is then killed).  For steps that can hang: a Ray driver that
    dies takes its job's actors with it, so nothing is left behind."""
    ctx = multiprocessing.get_context("spawn")  # a fork of a process running Ray is unsafe
    pool = ctx.Pool(1)
    try:
        result = pool.apply_async(fn, args).get(timeout=timeout_s)
    except multiprocessing.TimeoutError:
        pool.terminate()
        pool.join()
        return None
    pool.close()  # let it exit on its own: terminate() would kill Ray mid-shutdown
    pool.join()
    return result


@contextlib.contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` then ``t["s"]`` holds the seconds."""
    box: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        yield box
    finally:
        box["s"] = time.perf_counter() - t0


def steady_images_per_s(per_epoch: Sequence[float], skip: int = 1) -> float:
    """Throughput over the epochs after the first ``skip`` (warm-up: allocator, caches).

    Every epoch trains the same number of images, so the right mean of per-epoch rates is
    the harmonic one (total images / total time).
    """
    rates = [r for r in per_epoch[skip:] if r and r > 0]
    if not rates:
        rates = [r for r in per_epoch if r and r > 0]
    return statistics.harmonic_mean(rates) if rates else math.nan
