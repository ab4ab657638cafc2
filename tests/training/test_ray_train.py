"""The loop under Ray Train's TorchTrainer: 2 CPU workers (gloo), metrics every epoch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from shard_spy import assert_two_disjoint_shards, read_shards, spy_pickled_by_value, spy_train_loop

from training.checkpoint import load_checkpoint
from training.tasks import preset_config
from tuning.cli import main

METRICS = {"epoch", "train_loss", "val_loss", "val_f1", "val_acc", "lr", "epoch_time_s"}


def test_train_cli_two_workers_reports_every_metric_each_epoch(
    task1_data: Path, tmp_path: Path, ray_session: None, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import training.ray_worker
    from training.engine import prepare_data

    out = tmp_path / "run"
    spy = tmp_path / "shards"
    monkeypatch.setattr(training.ray_worker, "train_loop_per_worker", spy_train_loop(str(spy)))
    # 99 training images (this split) and batches of 7: strided shards of 50 and 49 images
    # made rank 0 take an 8th step whose all-reduce rank 1 never joined, a hang until the
    # process group's timeout (issue 14 item 3); equal shards finish
    with spy_pickled_by_value():
        code = main([
            "train", "--task", "task1", "--data", str(task1_data), "--workers", "2", "--out", str(out),
            "--set", "optim.epochs=2", "--set", "data.image_size=32", "--set", "model.hidden_sizes=[32]",
            "--set", "data.val_fraction=0.208", "--set", "optim.batch_size=7",
        ])
    assert code == 0
    text = capsys.readouterr().out
    assert text.count("val_f1") >= 2 and "macro avg" in text and str(out) in text
    ckpt = load_checkpoint(out)
    assert [m["epoch"] for m in ckpt.history] == [1, 2]
    for m in ckpt.history:
        assert set(m) >= METRICS
    # data parallel: each worker trained on its half of the images (seen from inside them)
    data, _ = prepare_data(task1_data, ckpt.config)  # the run's own split
    assert len(data.y_train) == 99  # the uneven size the comment above is about
    assert_two_disjoint_shards(read_shards(spy / out.name), len(data.y_train), epochs=2)
    assert ckpt.preprocessing.crop == "silhouette"
    assert ckpt.class_names == sorted(ckpt.class_names)
    assert ckpt.config.num_threads == 1  # two workers share the two CPUs


def test_torch_trainer_run_resumes_by_name(task2_data: Path, tmp_path: Path, ray_session: None) -> None:
    """What makes TorchTrainer-driven trials resumable: same storage + name → continue."""
    from training.engine import prepare_data
    from training.ray_worker import run_torch_trainer

    cfg = preset_config("task2", {"optim.epochs": 1, "data.image_size": 32, "model.channels": 8, "model.stages": 2})
    data, _ = prepare_data(task2_data, cfg)
    kw = {"storage_path": str(tmp_path), "name": "trial", "echo": False}
    first = run_torch_trainer(cfg, data, **kw)
    with first.checkpoint.as_directory() as d:
        h1 = load_checkpoint(d).history
    second = run_torch_trainer(cfg.replace(**{"optim.epochs": 2}), data, **kw)
    with second.checkpoint.as_directory() as d:
        h2 = load_checkpoint(d).history
    assert [m["epoch"] for m in h2] == [1, 2]
    # epoch 1 was not trained again: its record (timings included) is the first run's
    assert h2[0] == h1[0]
    # the controller was told to collect reports more often than Train's 2 s default (it
    # reads the driver's environment); bench/seeds.py measures what that saves
    from training.ray_worker import TRAIN_POLL_ENV, TRAIN_POLL_S

    assert os.environ[TRAIN_POLL_ENV] == TRAIN_POLL_S


def test_train_refuses_to_overwrite_a_run(task2_data: Path, tmp_path: Path) -> None:
    from training.run import run_training

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "checkpoint.pt").write_bytes(b"x")
    cfg = preset_config("task2", {"optim.epochs": 1})
    with pytest.raises(FileExistsError, match="--out"):
        run_training(cfg, task2_data, out=tmp_path / "old")


@pytest.mark.parametrize(
    ("threads", "workers", "nodes", "expected"),
    [
        (0, 1, [2.0], 2.0),  # one worker on a laptop gets every core
        (0, 2, [2.0], 1.0),
        (0, 3, [2.0], 1.0),  # never below one CPU
        (0, 1, [4.0, 4.0, 4.0], 4.0),  # a worker lives on one node: capped at the largest
        (0, 4, [8.0, 8.0], 4.0),
        (1, 1, [16.0], 1.0),  # num_threads asks for fewer
        (32, 1, [16.0], 16.0),  # ...or is capped at what a node has
    ],
)
def test_cpus_per_worker(threads: int, workers: int, nodes: list[float], expected: float) -> None:
    from training.ray_session import cpus_per_worker

    assert cpus_per_worker(threads, workers, nodes) == expected


def test_two_workers_stop_together_at_the_deadline(task2_data: Path, tmp_path: Path, ray_session: None) -> None:
    """A deadline already past reaches both data-parallel workers through TorchTrainer's
    loop config: they agree (an all-reduce over gloo) to end after the first epoch, so the
    run returns, with that epoch checkpointed, instead of one rank waiting for the other."""
    import time

    import torch

    from training.engine import fit, prepare_data
    from training.ray_worker import run_torch_trainer

    cfg = preset_config("task2", {"optim.epochs": 5, "data.image_size": 32, "model.channels": 8,
                                  "model.stages": 2, "num_threads": 1, "optim.lr": 1e-12})  # fmt: skip
    data, _ = prepare_data(task2_data, cfg)
    # and initial weights reach the workers the same way (retrain --from-trial-weights): at a rate
    # of ~0 the epoch leaves the learned weights where they started
    start = fit(cfg.replace(**{"optim.epochs": 1, "optim.lr": 1e-3}), data).model.state_dict()
    result = run_torch_trainer(
        cfg, data, storage_path=str(tmp_path), name="late", workers=2, echo=False, deadline=time.time() - 1,
        init_weights=start,
    )  # fmt: skip
    with result.checkpoint.as_directory() as d:
        ckpt = load_checkpoint(d)
    assert [m["epoch"] for m in ckpt.history] == [1] and ckpt.epoch == 1
    for key in (k for k in start if "running_" not in k and "num_batches" not in k):
        torch.testing.assert_close(ckpt.model[key], start[key], atol=1e-6, rtol=0)
