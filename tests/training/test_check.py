"""``poketune check`` finds what was planted in a Kaggle-layout folder: an exact copy within
train, a resized and mirrored copy of a train image in test, a copy with another label, and a
file that does not decode; and nothing among images that are really different."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data.check import check_data
from tuning.cli import main

LABELS = ["fire", "water", "grass"]


def _smooth(rng: np.random.Generator, size: int = 48) -> Image.Image:
    """A random low-frequency RGB picture: 6×6 random colours, upsampled (a perceptual hash
    keeps it through resizing, and two of them are far apart)."""
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rows = []
    for i in range(12):
        _smooth(rng).save(root / "train" / f"p{i}.png")
        rows.append((f"p{i}", LABELS[i % 3]))
    # an exact copy, same label; a copy with another label
    (root / "train" / "p0_copy.png").write_bytes((root / "train" / "p0.png").read_bytes())
    rows.append(("p0_copy", LABELS[0]))
    (root / "train" / "p1_relabelled.png").write_bytes((root / "train" / "p1.png").read_bytes())
    rows.append(("p1_relabelled", LABELS[2]))
    # a file that is not an image
    (root / "train" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    rows.append(("broken", LABELS[0]))
    (root / "train.csv").write_text("id,label\n" + "".join(f"{i},{lab}\n" for i, lab in rows))
    # test: a resized, mirrored copy of p2 (an identity leak) and two new pictures
    with Image.open(root / "train" / "p2.png") as img:
        img.resize((64, 64)).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "test" / "t_leak.png")
    for i in range(2):
        _smooth(rng).save(root / "test" / f"t{i}.png")
    return root


def test_check_finds_what_was_planted_and_nothing_else(planted: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    report = check_data(planted, cache_dir=cache)
    assert report.images == {"train": 15, "test": 3}
    assert report.counts["train"] == {"fire": 6, "water": 4, "grass": 5}
    assert [k for k, _ in report.unreadable] == ["train/broken"]

    pairs = {(p.a, p.b): p for p in report.pairs}
    exact = pairs[("train/p0", "train/p0_copy")]
    assert exact.exact and exact.distance == 0 and not exact.label_conflict
    conflict = pairs[("train/p1", "train/p1_relabelled")]
    assert conflict.label_conflict and (conflict.label_a, conflict.label_b) == ("water", "grass")
    leak = pairs[("train/p2", "test/t_leak")]
    assert leak.across and leak.mirrored and not leak.exact
    # the planted pairs and nothing else: different pictures are not called duplicates
    assert set(pairs) == {("train/p0", "train/p0_copy"), ("train/p1", "train/p1_relabelled"), ("train/p2", "test/t_leak")}
    assert report.leaked_test_images == 1 and len(report.label_conflicts) == 1
    assert report.hashed == 18

    again = check_data(planted, cache_dir=cache)  # every hash from the cache
    assert again.hashed == 0 and again.pairs == report.pairs


def test_check_command_writes_json_and_a_contact_sheet_and_strict_fails(
    planted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["check", "--data", str(planted), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "unreadable files: 1" in text and "1 test images have a near twin in train" in text
    doc = json.loads((out / "check.json").read_text())
    assert doc["summary"] == {"unreadable": 1, "within_train_pairs": 2, "train_test_pairs": 1,
                              "leaked_test_images": 1, "label_conflicts": 1}  # fmt: skip
    assert (out / "check_pairs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["check", "--data", str(planted), "--out", str(out), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "--strict: 4 findings" in err and err.count("\n") == 1


def test_training_commands_warn_in_one_line_and_never_stop(
    planted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.config import DataConfig
    from training.data.check import check_before_training

    report = check_before_training(planted, DataConfig(), cache_dir=tmp_path / "c")
    assert report is not None and report.findings == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: data check: 1 unreadable files; ")
    assert "1 test images with a near twin in train" in err and "1 copies with different labels" in err
    # nothing to say about clean data; a folder the loader cannot list is the loader's to report
    clean = tmp_path / "clean"
    (clean / "train").mkdir(parents=True)
    for i in range(3):
        _smooth(np.random.default_rng(10 + i)).save(clean / "train" / f"c{i}.png")
    (clean / "train.csv").write_text("id,label\n" + "".join(f"c{i},fire\n" for i in range(3)))
    assert check_before_training(clean, DataConfig(), cache_dir=tmp_path / "c2").findings == 0
    assert check_before_training(tmp_path / "nowhere", DataConfig()) is None
    assert capsys.readouterr().err == ""


def _p0_sides(planted: Path, cache: Path, *, grouped: bool, seed: int) -> tuple[int, int]:
    """(copies of p0 in train, in validation) after prepare_data's split."""
    from training.engine import prepare_data
    from training.tasks import preset_config

    cfg = preset_config("task2", {"data.skip_bad": True, "data.image_size": 16, "data.val_fraction": 0.25,
                                  "data.group_duplicates": grouped, "seed": seed})  # fmt: skip
    data, _ = prepare_data(planted, cfg, cache_dir=cache)
    x = np.concatenate([data.x_train, data.x_val]).reshape(len(data.x_train) + len(data.x_val), -1)
    same = (x[:, None, :] == x[None, :, :]).all(axis=2).sum(axis=1)
    rows = np.flatnonzero(same == 5)  # the five identical copies of p0, and nothing else
    assert len(rows) == 5
    return int((rows < len(data.x_train)).sum()), int((rows >= len(data.x_train)).sum())


def test_group_duplicates_keeps_each_planted_group_on_one_side(planted: Path, tmp_path: Path) -> None:
    # five copies of p0 among 20 images: a plain split separates them for some seed
    for k in range(3):
        (planted / "train" / f"p0_more{k}.png").write_bytes((planted / "train" / "p0.png").read_bytes())
    with (planted / "train.csv").open("a") as f:
        f.writelines(f"p0_more{k},fire\n" for k in range(3))
    seeds = range(6)
    grouped = [_p0_sides(planted, tmp_path / "cache", grouped=True, seed=s) for s in seeds]
    assert all(0 in sides for sides in grouped), grouped
    plain = [_p0_sides(planted, tmp_path / "cache", grouped=False, seed=s) for s in seeds]
    assert any(0 not in sides for sides in plain), plain
