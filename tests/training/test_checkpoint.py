"""The typed checkpoint: one format, refused by every reader when it is another, and the
augmentation fill that follows the data's background."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from ray.train import Checkpoint as RayCheckpoint

from training import ray_worker
from training.checkpoint import (
    CHECKPOINT_FILE,
    DIGEST_SUFFIX,
    FORMAT_VERSION,
    PREVIOUS_FILE,
    Checkpoint,
    CheckpointError,
    load_resumable,
)
from training.data import cifar
from training.engine import LocalReporter, fit, prepare_data
from training.ray_worker import RayReporter
from training.tasks import preset_config


def _cfg(task: str, **over: object):  # type: ignore[no-untyped-def]
    base: dict[str, object] = {"data.image_size": 32, "optim.epochs": 1, "num_threads": 1}
    if task == "task1":
        base["model.hidden_sizes"] = [16]
    return preset_config(task, {**base, **over})


@pytest.fixture(scope="module")
def task1_checkpoint(task1_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = _cfg("task1")
    data, _ = prepare_data(task1_data, cfg)
    out = tmp_path_factory.mktemp("ckpt")
    fit(cfg, data, LocalReporter(out_dir=out))
    return out / CHECKPOINT_FILE


def _other_version(src: Path, dst: Path, version: object) -> Path:
    """``src`` rewritten with another ``format`` (the raw file: that is what another
    poketune version would have written)."""
    raw = torch.load(src, map_location="cpu", weights_only=True)
    raw["format"] = version
    dst.mkdir(parents=True, exist_ok=True)
    torch.save(raw, dst / CHECKPOINT_FILE)
    return dst / CHECKPOINT_FILE


def test_for_inference_keeps_the_best_weights_only(task1_checkpoint: Path) -> None:
    ckpt = Checkpoint.load(task1_checkpoint)
    assert ckpt.optimizer and ckpt.best_model is not None
    slim = ckpt.for_inference()
    assert slim.optimizer == {} and slim.scheduler == {} and slim.early_stop == {}
    assert slim.best_model is None
    for k, v in ckpt.best_model.items():
        assert torch.equal(slim.model[k], v)
    assert (slim.config, slim.history, slim.class_names) == (ckpt.config, ckpt.history, ckpt.class_names)


@pytest.mark.parametrize("version", [1, FORMAT_VERSION + 1, None])
def test_another_format_is_refused_naming_both_versions(
    task1_checkpoint: Path, tmp_path: Path, version: object
) -> None:
    path = _other_version(task1_checkpoint, tmp_path, version)
    with pytest.raises(CheckpointError) as err:
        Checkpoint.load(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert f"format {version!r}" in message and f"format {FORMAT_VERSION}" in message


def test_a_truncated_file_is_a_named_error(task1_checkpoint: Path, tmp_path: Path) -> None:
    bad = tmp_path / CHECKPOINT_FILE
    bad.write_bytes(task1_checkpoint.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=str(bad)):
        Checkpoint.load(bad)


def test_a_full_disk_while_saving_leaves_the_previous_checkpoint(
    task1_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import training.files

    ckpt = Checkpoint.load(task1_checkpoint)
    ckpt.save(tmp_path)
    before = (tmp_path / CHECKPOINT_FILE).read_bytes()

    def disk_full(fd: int) -> None:  # the new file is half on disk when the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(training.files.os, "fsync", disk_full)
    later = dataclasses.replace(ckpt, epoch=ckpt.epoch + 1)
    with pytest.raises(OSError, match="No space left"):
        later.save(tmp_path)
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before
    assert Checkpoint.load(tmp_path).epoch == ckpt.epoch
    # no temporary file left; the digest beside it is still the previous file's
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE, CHECKPOINT_FILE + DIGEST_SUFFIX]


def test_a_flipped_byte_is_caught_by_the_digest(task1_checkpoint: Path, tmp_path: Path) -> None:
    """torch.load checks no CRC: without the digest a flipped byte in a tensor loads."""
    Checkpoint.load(task1_checkpoint).save(tmp_path)
    file = tmp_path / CHECKPOINT_FILE
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt checkpoint") as err:
        Checkpoint.load(tmp_path)
    assert str(file) in str(err.value) and "\n" not in str(err.value)


def _reporter_over(store: Path) -> tuple[RayReporter, list[dict[str, Any]]]:
    """A RayReporter whose reports copy each checkpoint folder to ``store/N`` (Ray would
    persist it) and whose get_checkpoint returns the latest copy."""
    reported: list[dict[str, Any]] = []

    def report_fn(metrics: dict[str, Any], checkpoint: RayCheckpoint | None = None) -> None:
        if checkpoint is not None:
            shutil.copytree(checkpoint.path, store / str(len(reported)))
        reported.append(metrics)

    def latest() -> RayCheckpoint | None:
        folders = sorted(store.iterdir(), key=lambda p: int(p.name))
        return RayCheckpoint.from_directory(str(folders[-1])) if folders else None

    return RayReporter(report_fn, latest), reported


def test_resume_falls_back_to_the_previous_checkpoint_when_the_latest_is_corrupt(
    task1_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ray_worker.ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "n"))
    ckpt = Checkpoint.load(task1_checkpoint)
    store = tmp_path / "persisted"
    store.mkdir()
    reporter, reported = _reporter_over(store)
    for epoch in (1, 2):
        reporter.report({"epoch": epoch}, dataclasses.replace(ckpt, epoch=epoch))
    # the second folder holds epoch 2 and, beside it, epoch 1
    assert Checkpoint.load(store / "1").epoch == 2 and Checkpoint.load(store / "1" / PREVIOUS_FILE).epoch == 1
    latest = store / "1" / CHECKPOINT_FILE
    latest.write_bytes(latest.read_bytes()[: len(latest.read_bytes()) // 2])  # truncated

    again, _ = _reporter_over(store)  # the retried trial's process
    again.report_fn = reporter.report_fn
    restored = again.load_checkpoint()
    assert restored is not None and restored.epoch == 1
    again.report({"epoch": 2}, dataclasses.replace(restored, epoch=2))
    said = reported[-1]["checkpoint_fallback"]
    assert str(latest) in said and "epoch 1" in said and "\n" not in said
    # the new checkpoint's fallback is the one it resumed from
    assert Checkpoint.load(store / "2" / PREVIOUS_FILE).epoch == 1
    assert "checkpoint_fallback" not in reported[1]  # said once, with the first epoch after


def test_a_corrupt_first_checkpoint_has_nothing_to_fall_back_to(task1_checkpoint: Path, tmp_path: Path) -> None:
    Checkpoint.load(task1_checkpoint).save(tmp_path)
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(CheckpointError, match=str(tmp_path / CHECKPOINT_FILE)):
        load_resumable(tmp_path)


def test_every_reader_goes_through_the_type(
    task1_checkpoint: Path, task1_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """submit, compare and resume all refuse a checkpoint of another format with the same
    one-line error (retrain reads trials through the same load: see test_retrain)."""
    from tuning.cli import main
    from tuning.compare import compare_runs
    from tuning.predict import load_predictor

    old = _other_version(task1_checkpoint, tmp_path / "old", 1)
    with pytest.raises(CheckpointError, match="format 1"):
        load_predictor(str(old))
    with pytest.raises(CheckpointError, match="format 1"):
        compare_runs([str(old)], tmp_path / "report", storage=str(tmp_path), data=str(task1_data))
    # resume reads the trial's checkpoint through a reporter: the Ray one loads the folder
    from training.ray_worker import RayReporter

    class _Folder:
        def as_directory(self):  # type: ignore[no-untyped-def]
            import contextlib

            return contextlib.nullcontext(str(old.parent))

    reporter = RayReporter(lambda *a, **k: None, lambda: _Folder())  # type: ignore[arg-type, return-value]
    with pytest.raises(CheckpointError, match="format 1"):
        reporter.load_checkpoint()
    # the CLI prints it as one line, exit code 2
    code = main(["submit", "--model", str(old), "--data", str(task1_data), "--out", str(tmp_path / "s.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "format 1" in err and "Traceback" not in err
    assert not (tmp_path / "s.csv").exists()


# ---------------------------------------------------------------------------------- fill
def _spy_augment(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    import training.engine as engine

    built: list[object] = []
    real = engine.BatchAugment

    def make(*args: object, **kwargs: object) -> object:
        aug = real(*args, **kwargs)  # type: ignore[arg-type]
        built.append(aug)
        return aug

    monkeypatch.setattr(engine, "BatchAugment", make)
    return built


def _moved_in_pixels(augment: object, channels: int) -> torch.Tensor:
    """The values a shift brings in: augment a constant mid-grey batch and keep what changed."""
    torch.manual_seed(0)
    x = torch.full((8, channels, 32, 32), 0.5)
    out, _ = augment(x, torch.zeros(8, dtype=torch.long))  # type: ignore[operator]
    return out[(out - 0.5).abs() > 1e-3]


def test_composited_images_are_shifted_in_over_their_background(
    task1_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """task1 composites transparent sprites over white: rotated or translated images must not
    get black borders."""
    cfg = _cfg("task1", **{"augment.translate": 0.4, "augment.rotation": 30.0})
    assert cfg.data.rgba == "composite" and tuple(cfg.data.background) == (255, 255, 255)
    data, report = prepare_data(task1_data, cfg)
    assert report.transparent > 0
    built = _spy_augment(monkeypatch)
    fit(cfg, data, LocalReporter())
    moved = _moved_in_pixels(built[0], 3)
    # edges blend the grey image with the fill (bilinear); a black fill would darken them
    assert moved.numel() > 0 and moved.min() > 0.5 and (moved > 0.99).float().mean() > 0.5


def test_a_coloured_background_is_the_fill(task1_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg("task1", **{"augment.translate": 0.4, "data.background": [0, 128, 255]})
    data, _ = prepare_data(task1_data, cfg)
    assert data.augment_fill == pytest.approx((0.0, 128 / 255, 1.0))


def test_keep_alpha_and_opaque_photos_keep_a_black_fill(
    task2_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keep = _cfg("task2", **{"model.channels": 8, "model.stages": 2})
    data, _ = prepare_data(task2_data, keep)
    assert data.augment_fill == (0.0,) * 4  # transparent black, as before
    folder = cifar.write_cifar10_batches(tmp_path, per_class=3, test_per_class=1)
    monkeypatch.setattr(cifar, "EXPECTED_MD5", cifar.file_md5s(folder))
    photos, report = prepare_data(tmp_path, _cfg("cifar10_cnn"))
    assert report.transparent == 0 and photos.augment_fill == (0.0,) * 3


def test_evaluation_runs_with_the_kernels_training_used(task2_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """export/compare evaluate with the checkpoint's AMP setting and, on a GPU, channels_last
    for a CNN, so their metrics are the sweep's (issue 14 item 4)."""
    import training.evaluation as evaluation
    from training.checkpoint import build_model_for

    cfg = _cfg("task2", **{"model.channels": 8, "model.stages": 2, "optim.amp": True})
    data, _ = prepare_data(task2_data, cfg)
    ckpt = Checkpoint(cfg, data.preprocessing, data.class_names, build_model_for(cfg, 9).state_dict())
    seen: dict[str, object] = {}

    def fake_evaluate(model, loader, device, prep, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(kwargs, device=device)
        raise StopIteration  # stop here: the arguments are what this test checks

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: self)  # no CUDA here
    with pytest.raises(StopIteration):
        evaluation.evaluate_checkpoint(ckpt, data, device=torch.device("cuda", 0))
    assert seen["amp"] is True and seen["channels_last"] is True
    with pytest.raises(StopIteration):
        evaluation.evaluate_checkpoint(ckpt, data, device=torch.device("cpu"))
    assert seen["channels_last"] is False
