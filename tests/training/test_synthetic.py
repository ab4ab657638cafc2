"""The synthetic competitions: layout, imbalance, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from training.data import DataError
from training.data.synthetic import CLASS_COUNTS, class_counts, make_dataset


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = make_dataset("task2", tmp_path / "a", scale=0.02, seed=5)
    b = make_dataset("task2", tmp_path / "b", scale=0.02, seed=5)
    c = make_dataset("task2", tmp_path / "c", scale=0.02, seed=6)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_counts_follow_the_competition_imbalance() -> None:
    full = class_counts("task1")
    assert full == CLASS_COUNTS and sum(full.values()) == 3600
    assert list(full) == sorted(full, key=full.__getitem__, reverse=True)  # Water … Ground
    t3 = class_counts("task3")
    assert 1150 <= sum(t3.values()) <= 1250
    assert sorted(t3, key=t3.__getitem__) == sorted(full, key=full.__getitem__)
    test = class_counts("task1", split="test")
    assert sum(test.values()) == pytest.approx(900, abs=5)
    assert min(class_counts("task1", scale=0.001).values()) == 4


def test_kaggle_layout_files(tmp_path: Path) -> None:
    out = make_dataset("task1", tmp_path / "t1", scale=0.05, seed=0)
    train = pd.read_csv(out / "train.csv", dtype=str)
    assert list(train.columns) == ["id", "label"]
    assert sorted(p.stem for p in (out / "train").iterdir()) == sorted(train["id"])
    # labels carry ~5% noise, so compare counts loosely but keep the big gaps' order
    got = train["label"].value_counts()
    for name, n in class_counts("task1", 0.05).items():
        assert abs(got[name] - n) <= 0.15 * n + 3, name
    assert got["Water"] > got["Fire"] > got["Ground"]

    sub = pd.read_csv(out / "sample_submission.csv", dtype=str)
    answers = pd.read_csv(out / "test_labels.csv", dtype=str)
    assert list(sub["id"]) == list(answers["id"])
    assert sorted(p.stem for p in (out / "test").iterdir()) == sorted(sub["id"])
    assert set(answers["label"]) <= set(CLASS_COUNTS) and sub["label"].nunique() == 1
    assert len(sub) == sum(class_counts("task1", 0.05, "test").values())

    images = [Image.open(p) for p in sorted((out / "train").iterdir())[:40]]
    assert all(im.mode == "RGBA" and im.size == (64, 64) for im in images)
    # some images are artwork-style: transparent outside the shape
    assert any(np.asarray(im)[..., 3].min() == 0 for im in images)
    assert any(np.asarray(im)[..., 3].min() == 255 for im in images)


def test_task3_is_rgb_at_the_chosen_size(tmp_path: Path) -> None:
    out = make_dataset("task3", tmp_path / "t3", scale=0.03, image_size=48)
    train = pd.read_csv(out / "train.csv")
    assert len(train) == sum(class_counts("task3", 0.03).values())
    img = Image.open(next((out / "train").iterdir()))
    assert img.mode == "RGB" and img.size == (48, 48)


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    out = make_dataset("task1", tmp_path / "d", scale=0.01)
    (out / "test" / "stale.png").write_bytes(b"old")
    with pytest.raises(DataError, match="already holds a dataset"):
        make_dataset("task1", out, scale=0.01)
    make_dataset("task1", out, scale=0.01, overwrite=True)
    assert not (out / "test" / "stale.png").exists()


def test_unknown_kind_lists_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid: task1, task2, task3"):
        make_dataset("task9", tmp_path / "x")
