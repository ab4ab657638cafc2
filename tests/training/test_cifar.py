"""The cifar10 layout: torchvision's parsing and md5 checks, ids, splits, resize, cache, and the
two CIFAR-10 presets training on a generated CIFAR-format fixture (nothing downloads)."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from training.config import DataConfig
from training.data import LAYOUTS, DataError, cifar, load_split
from training.engine import LocalReporter, fit, prepare_data
from training.models import count_parameters
from training.tasks import preset_config

PER_CLASS = 6  # per class per batch: 5 × 60 train images, 60 test images


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    cifar.write_cifar10_batches(root, per_class=PER_CLASS, test_per_class=4, seed=0)
    return root


@pytest.fixture(autouse=True)
def fixture_md5s(cifar_root: Path) -> Iterator[None]:
    """The fixture's files pass torchvision's md5 check as the official ones would."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cifar, "EXPECTED_MD5", cifar.file_md5s(cifar_root / cifar.BASE_FOLDER))
        yield


def _cfg(size: int = 32, **kw: object) -> DataConfig:
    return DataConfig(layout="cifar10", image_size=size, **kw)  # type: ignore[arg-type]


def _pickled(path: Path) -> dict:
    with path.open("rb") as f:
        return pickle.load(f, encoding="latin1")


def test_layout_is_registered() -> None:
    assert "cifar10" in LAYOUTS.names()
    assert LAYOUTS.get("cifar10") is cifar.cifar10_layout


def test_train_split_matches_the_pickles_pixel_for_pixel(cifar_root: Path, tmp_path: Path) -> None:
    s = load_split(cifar_root, _cfg(), "train", cache_dir=tmp_path)
    assert s.class_names == cifar.CLASS_NAMES  # the official order
    assert s.images.shape == (5 * 10 * PER_CLASS, 32, 32, 3) and s.images.dtype == np.uint8
    assert s.ids[0] == "train_00000" and s.ids[-1] == f"train_{5 * 10 * PER_CLASS - 1:05d}"
    assert s.class_counts().tolist() == [5 * PER_CLASS] * 10
    # batch 2 follows batch 1: compare its first image with the raw CIFAR bytes (R, G, B planes)
    raw = _pickled(cifar_root / cifar.BASE_FOLDER / "data_batch_2")
    first = raw["data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    i = 10 * PER_CLASS
    assert s.ids[i] == f"train_{i:05d}"
    np.testing.assert_array_equal(s.images[i], first)
    assert s.labels[i] == raw["labels"][0]


def test_test_split_is_the_test_batch_with_labels(cifar_root: Path, tmp_path: Path) -> None:
    s = load_split(cifar_root, _cfg(), "test", class_names=cifar.CLASS_NAMES, cache_dir=tmp_path)
    raw = _pickled(cifar_root / cifar.BASE_FOLDER / "test_batch")
    assert s.ids[:2] == ["test_00000", "test_00001"] and len(s) == 40
    assert s.labels.tolist() == raw["labels"]


def test_resized_at_decode_time_and_cached(cifar_root: Path, tmp_path: Path) -> None:
    first = load_split(cifar_root, _cfg(64), "train", cache_dir=tmp_path)
    assert first.images.shape[1:] == (64, 64, 3) and first.report.decoded == len(first)
    again = load_split(cifar_root, _cfg(64), "train", cache_dir=tmp_path)
    assert again.report.from_cache and again.report.decoded == 0
    np.testing.assert_array_equal(again.images, first.images)
    # a resized image still looks like its 32 px original (same mean colour)
    small = load_split(cifar_root, _cfg(32), "train", cache_dir=tmp_path)
    assert np.abs(small.images.mean((1, 2)) - first.images.mean((1, 2))).max() < 3


def test_the_batches_folder_itself_is_accepted(cifar_root: Path, tmp_path: Path) -> None:
    s = load_split(cifar_root / cifar.BASE_FOLDER, _cfg(), "train", cache_dir=tmp_path)
    assert len(s) == 5 * 10 * PER_CLASS


def test_class_subset_keeps_that_order_and_counts_filtered(cifar_root: Path, tmp_path: Path) -> None:
    s = load_split(cifar_root, _cfg(classes=["truck", "cat"]), "train", cache_dir=tmp_path)
    assert s.class_names == ["truck", "cat"]
    assert s.report.filtered == 8 * 5 * PER_CLASS and len(s) == 2 * 5 * PER_CLASS
    with pytest.raises(DataError, match=r"\['cats'\] are not CIFAR-10 classes"):
        load_split(cifar_root, _cfg(classes=["cats"]), "train", cache_dir=tmp_path)


def test_md5_is_checked_by_torchvision(cifar_root: Path, tmp_path: Path) -> None:
    # the real table: the generated files are not the official ones
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cifar, "EXPECTED_MD5", {**cifar.EXPECTED_MD5, "data_batch_3": "0" * 32})
        with pytest.raises(DataError, match=r"md5 of .*data_batch_3 does not match"):
            load_split(cifar_root, _cfg(), "train", cache_dir=tmp_path)


def test_official_md5s_reject_other_files(cifar_root: Path, tmp_path: Path) -> None:
    real = dict(cifar.EXPECTED_MD5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cifar, "EXPECTED_MD5", {**real, **_official_md5s()})
        with pytest.raises(DataError, match=r"md5 of .*data_batch_1.* does not match"):
            load_split(cifar_root, _cfg(), "train", cache_dir=tmp_path)


def _official_md5s() -> dict[str, str]:
    from torchvision.datasets import CIFAR10

    return {n: m for n, m in CIFAR10.train_list + CIFAR10.test_list}


def test_unparsable_batch_is_named(tmp_path: Path) -> None:
    folder = cifar.write_cifar10_batches(tmp_path / "d", per_class=1)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cifar, "EXPECTED_MD5", cifar.file_md5s(folder))  # the md5 matches: parsing fails
        with pytest.raises(DataError, match=r"cannot parse .*test_batch"):
            load_split(tmp_path / "d", _cfg(), "test", class_names=cifar.CLASS_NAMES)


def test_missing_files_name_the_file_and_the_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cifar-10-batches-py not found.*download_cifar10"):
        load_split(tmp_path, _cfg(), "train")
    folder = cifar.write_cifar10_batches(tmp_path / "d", per_class=1)
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataError, match=r"missing file\(s\) .*data_batch_4"):
        load_split(tmp_path / "d", _cfg(), "train", cache_dir=tmp_path / "c")


def test_cnn_preset_trains_one_epoch(cifar_root: Path, tmp_path: Path) -> None:
    cfg = preset_config(
        "cifar10_cnn",
        {"optim.epochs": 1, "optim.batch_size": 32, "model.channels": 8, "num_threads": 1},
    )
    data, _ = prepare_data(cifar_root, cfg, cache_dir=tmp_path)
    assert len(data.y_val) == 60  # the preset's 20 % validation, stratified
    assert np.bincount(data.y_val).tolist() == [6] * 10
    rep = LocalReporter()
    result = fit(cfg, data, rep)
    assert len(rep.history) == 1 and 0 <= rep.history[0]["val_acc"] <= 1
    assert result.checkpoint is not None and result.checkpoint.class_names == cifar.CLASS_NAMES


def test_transfer_preset_builds_the_study_head_and_trains_one_epoch(
    cifar_root: Path, tmp_path: Path
) -> None:
    cfg = preset_config(
        "cifar10_transfer",
        {
            "data.image_size": 32,
            "model.pretrained": False,
            "optim.epochs": 1,
            "optim.batch_size": 32,
            "num_threads": 1,
        },
    )
    assert cfg.model.name == "efficientnet_b2"
    data, _ = prepare_data(cifar_root, cfg, cache_dir=tmp_path)
    rep = LocalReporter()
    result = fit(cfg, data, rep)
    head = result.model.head
    # GAP → Dense 128 ReLU → Dropout 0.2 → Dense 256 ReLU (L2 1e-3) → Dense 10
    widths = [m.out_features for m in head.modules() if hasattr(m, "out_features")]
    assert widths == [128, 256, 10]
    assert head.penalized_layer().out_features == 256 and result.model.head_l2 == 1e-3
    # one epoch of a 4-epoch head phase: only the head trains, at the head-phase lr
    total, trainable = count_parameters(result.model)
    assert trainable == sum(p.numel() for p in head.parameters()) < total
    assert rep.history[0]["phase"] == "head" and rep.history[0]["lr"] == cfg.optim.lr
