"""Silhouette crop: the outline's box on generated images, padding, and the fallback."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from training.config import DataConfig
from training.data import load_split, silhouette_box
from training.data._crop import DARK_MAX
from training.data.synthetic import CLASS_NAMES, render_image


@pytest.mark.parametrize("seed", range(6))
def test_box_matches_the_drawn_outline(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for class_index in range(len(CLASS_NAMES)):
        img, drawn = render_image("task1", class_index, rng)
        assert drawn is not None
        assert silhouette_box(np.asarray(img)) == drawn


def test_padding_grows_and_clips() -> None:
    rgba = np.full((100, 100, 4), 255, np.uint8)
    rgba[20:60, 10:90, :3] = 0  # an 80×40 dark block: box (10, 20, 90, 60)
    assert silhouette_box(rgba) == (10, 20, 90, 60)
    assert silhouette_box(rgba, pad=0.05) == (6, 18, 94, 62)  # 5% of 80 = 4, of 40 = 2
    assert silhouette_box(rgba, pad=0.5) == (0, 0, 100, 80)


def test_transparent_dark_pixels_are_not_outline() -> None:
    rgba = np.zeros((50, 50, 4), np.uint8)  # black but fully transparent
    assert silhouette_box(rgba) is None
    rgba[10:12, 30:40] = (DARK_MAX - 1, 0, 0, 255)  # 20 dark opaque pixels = 0.8%
    assert silhouette_box(rgba) == (30, 10, 40, 12)
    rgba[10:12, 30:40, 0] = DARK_MAX  # not dark enough any more
    assert silhouette_box(rgba) is None


def test_load_split_crops_and_reports_fallbacks(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    root = tmp_path / "d"
    (root / "train").mkdir(parents=True)
    boxes = {}
    for i, outline in enumerate([True, True, False]):
        img, box = render_image("task1", i, rng, outline=outline)
        img.save(root / "train" / f"im{i}.png")
        boxes[f"im{i}"] = box
    pd.DataFrame({"id": list(boxes), "label": ["a", "b", "a"]}).to_csv(
        root / "train.csv", index=False
    )
    cfg = DataConfig(crop="silhouette", image_size=32)
    ds = load_split(root, cfg, cache_dir=tmp_path / "c")
    assert ds.report.crop_fallbacks == 1 and ds.report.crop_fallback_ids == ["im2"]

    # the cropped image is exactly: crop the padded outline box, composite, resize
    src = Image.open(root / "train" / "im0.png").convert("RGBA")
    box = silhouette_box(np.asarray(src), pad=0.05)
    assert box is not None and box != (0, 0, 64, 64)
    white = Image.new("RGBA", (box[2] - box[0], box[3] - box[1]), (255, 255, 255, 255))
    manual = Image.alpha_composite(white, src.crop(box)).convert("RGB")
    manual = manual.resize((32, 32), Image.Resampling.BILINEAR)
    assert np.array_equal(ds.images[0], np.asarray(manual))

    # the uncropped fallback equals plain preprocessing; the cache keeps the report
    plain = load_split(root, dataclasses.replace(cfg, crop="none"), cache_dir=tmp_path / "c")
    assert np.array_equal(ds.images[2], plain.images[2])
    assert not np.array_equal(ds.images[0], plain.images[0])
    again = load_split(root, cfg, cache_dir=tmp_path / "c")
    assert again.report.from_cache and again.report.crop_fallback_ids == ["im2"]
