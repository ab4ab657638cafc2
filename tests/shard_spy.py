"""What each Ray Train worker really trained on: a spy around ``train_loop_per_worker``.

The spy runs inside every TorchTrainer worker (the workers are other processes, so a plain
monkeypatch in the test process cannot see them). There it wraps ``ArrayLoader._indices``
for the training loader and appends, once per epoch, the rank Ray Train gave the worker,
the world size and the training-image indices the worker drew, to ``OUT/<run name>/rank<N>.jsonl``.
The run name is the Train run's (``poketune train``'s folder name, a sweep trial's id).

Ray pickles functions of importable modules by reference and Ray's workers cannot import
the tests, so :func:`spy_pickled_by_value` makes Ray ship this module's functions by value.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "assert_two_disjoint_shards", "read_shards", "spy_pickled_by_value", "spy_train_loop", "spy_trial",
]


def spy_train_loop(out: str) -> Callable[[dict[str, Any]], None]:
    """A ``train_loop_per_worker`` that records the worker's shards, then runs the real one."""

    def loop(config: dict[str, Any]) -> None:
        import ray.train

        from training import loop as loop_module
        from training import ray_worker

        real = ray_worker.train_loop_per_worker  # this worker process never saw the patch
        assert not getattr(real, "shard_spy", False)
        ctx = ray.train.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
        path = Path(out) / ctx.get_experiment_name() / f"rank{rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        original = loop_module.ArrayLoader._indices

        def indices(self: Any) -> Any:
            idx = original(self)
            if self.sampler is not None:  # the training loader; evaluation has no sampler
                record = {
                    "context_rank": rank, "context_world_size": world,
                    "loader_rank": self.rank, "loader_world_size": self.world_size,
                    "indices": idx.tolist(),
                }  # fmt: skip
                with path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
            return idx

        loop_module.ArrayLoader._indices = indices  # type: ignore[method-assign]
        try:
            real(config)
        finally:
            loop_module.ArrayLoader._indices = original  # type: ignore[method-assign]

    loop.shard_spy = True  # type: ignore[attr-defined]
    return loop


def spy_trial(out: str) -> Callable[..., None]:
    """A stand-in for ``tuning.sweep._torch_trainer_trial``: inside the Tune trial's process
    it puts :func:`spy_train_loop` in place of ``train_loop_per_worker``, then runs the real
    trial (whose TorchTrainer ships the spy to its workers)."""

    def trial(config: dict[str, Any], **kwargs: Any) -> None:
        from training import ray_worker
        from tuning import sweep

        real = sweep._torch_trainer_trial  # this trial process never saw the patch
        assert not getattr(real, "shard_spy", False)
        ray_worker.train_loop_per_worker = spy_train_loop(out)
        real(config, **kwargs)

    trial.shard_spy = True  # type: ignore[attr-defined]
    return trial


@contextmanager
def spy_pickled_by_value() -> Iterator[None]:
    import ray.cloudpickle

    module = sys.modules[__name__]
    ray.cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        ray.cloudpickle.unregister_pickle_by_value(module)


def read_shards(run_dir: Path) -> dict[int, list[dict[str, Any]]]:
    """``{rank: [one record per epoch]}`` of one run."""
    out = {}
    for f in sorted(run_dir.glob("rank*.jsonl")):
        out[int(f.stem.removeprefix("rank"))] = [json.loads(line) for line in f.read_text().splitlines()]
    return out


def assert_two_disjoint_shards(shards: dict[int, list[dict[str, Any]]], n_train: int, epochs: int) -> None:
    """Two workers of world size 2, each epoch half of the training images each, no image on
    both: together every training image (one may be drawn twice to even the shards out)."""
    assert sorted(shards) == [0, 1], "Ray Train did not start two workers"
    for rank, records in shards.items():
        assert len(records) == epochs
        for r in records:
            assert r["context_world_size"] == r["loader_world_size"] == 2
            assert r["context_rank"] == r["loader_rank"] == rank
    for e in range(epochs):
        a, b = shards[0][e]["indices"], shards[1][e]["indices"]
        assert not set(a) & set(b), f"epoch {e + 1}: both ranks trained on the same images"
        assert set(a) | set(b) == set(range(n_train))
        assert n_train <= len(a) + len(b) <= n_train + 1 and abs(len(a) - len(b)) <= 1
