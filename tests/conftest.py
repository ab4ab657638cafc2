"""Shared fixtures: tiny generated datasets (made once per test session) and Ray sessions."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests must never reach the network for weights or datasets
os.environ.setdefault("TORCH_HOME", str(Path(__file__).parent / ".torch_home_unused"))
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_ARTWORK = REPO.parent / "shared" / "data" / "pokemon-artwork"

# scale such that the rarest class (Ground, 244 at scale 1) still has ~8 images
TINY_SCALE = 0.035


@pytest.fixture(scope="session")
def task2_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.data.synthetic import make_dataset

    return make_dataset("task2", tmp_path_factory.mktemp("task2"), scale=TINY_SCALE, seed=0)


@pytest.fixture(scope="session")
def task1_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.data.synthetic import make_dataset

    return make_dataset("task1", tmp_path_factory.mktemp("task1"), scale=TINY_SCALE, seed=1)


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """One local Ray per test module (starting Ray costs seconds)."""
    import ray

    from training.ray_session import init_ray

    init_ray(None, num_cpus=2)  # the product's own Ray settings: what the CLI runs is tested
    try:
        yield
    finally:
        ray.shutdown()
