"""load_split over every layout, bad input, the cache, Preprocessing, splits, tensors."""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from training.config import DataConfig
from training.data import (
    LAYOUTS,
    DataError,
    Preprocessing,
    load_split,
    normalize_batch,
    stratified_split,
    to_nchw,
)
from training.data.synthetic import CLASS_NAMES, make_dataset

REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "pokemon-artwork"
NINE = ["Bug", "Fighting", "Fire", "Grass", "Ground", "Normal", "Poison", "Rock", "Water"]


def _cfg(**kw: Any) -> DataConfig:
    return dataclasses.replace(DataConfig(image_size=32), **kw)


def _png(path: Path, colour: tuple[int, ...] = (200, 50, 50), size: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "RGBA" if len(colour) == 4 else "RGB"
    Image.new(mode, (size, size), colour).save(path)
    return path


@pytest.fixture(scope="module")
def kaggle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # scale 0.02: 4..13 train images per class, ~25 test images
    return make_dataset("task1", tmp_path_factory.mktemp("kaggle") / "ds", scale=0.02, seed=1)


def _small_kaggle(root: Path, rows: list[tuple[str, str]], files: list[str]) -> Path:
    """train.csv with ``rows`` and a train/ folder with ``files`` (tiny PNGs)."""
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["id", "label"]).to_csv(root / "train.csv", index=False)
    for f in files:
        _png(root / "train" / f)
    return root


# ---------------------------------------------------------------------------------- layouts
def test_kaggle_layout_train_and_test(kaggle_root: Path, tmp_path: Path) -> None:
    train = load_split(kaggle_root, _cfg(layout="kaggle"), cache_dir=tmp_path)
    csv_rows = pd.read_csv(kaggle_root / "train.csv", dtype=str)
    assert train.ids == list(csv_rows["id"])
    assert train.class_names == sorted(CLASS_NAMES)
    assert [train.class_names[i] for i in train.labels] == list(csv_rows["label"])
    assert train.images.shape == (len(csv_rows), 32, 32, 3) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64
    assert train.report.decoded == len(csv_rows) and not train.report.from_cache

    test = load_split(
        kaggle_root,
        _cfg(layout="kaggle"),
        "test",
        class_names=train.class_names,
        cache_dir=tmp_path,
    )
    sub = pd.read_csv(kaggle_root / "sample_submission.csv", dtype=str)
    assert test.ids == list(sub["id"])
    assert (test.labels == -1).all() and test.class_names == train.class_names


def test_auto_layout_picks_kaggle_then_imagefolder(kaggle_root: Path, tmp_path: Path) -> None:
    auto = load_split(kaggle_root, _cfg(), cache_dir=tmp_path)
    assert len(auto) == len(pd.read_csv(kaggle_root / "train.csv"))
    folder = tmp_path / "folder"
    for cls in ("cat", "dog"):
        for i in range(3):
            _png(folder / cls / f"{i}.png")
    assert load_split(folder, _cfg(), cache_dir=tmp_path).class_names == ["cat", "dog"]


def test_imagefolder_with_train_and_test(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for cls, colour in (("b", (0, 0, 255)), ("a", (255, 0, 0))):
        for i in range(3):
            _png(root / "train" / cls / f"{cls}{i}.png", colour)
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    _png(root / "test" / "x1.png")
    _png(root / "test" / "x2.jpg")
    cfg = _cfg(layout="imagefolder")
    ds = load_split(root, cfg, cache_dir=tmp_path / "c")
    assert ds.class_names == ["a", "b"]
    assert ds.ids == [f"a/a{i}.png" for i in range(3)] + [f"b/b{i}.png" for i in range(3)]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    # the composited pixels keep the folder's colour: a is red, b is blue
    assert ds.images[0, 5, 5].tolist() == [255, 0, 0] and ds.images[3, 5, 5].tolist() == [0, 0, 255]
    test = load_split(root, cfg, "test", class_names=ds.class_names, cache_dir=tmp_path / "c")
    assert test.ids == ["x1", "x2"] and (test.labels == -1).all()


def test_imagefolder_empty_class_folder_is_named(tmp_path: Path) -> None:
    _png(tmp_path / "d" / "full" / "1.png")
    (tmp_path / "d" / "hollow").mkdir()
    with pytest.raises(DataError, match="hollow"):
        load_split(tmp_path / "d", _cfg(layout="imagefolder"), cache_dir=tmp_path / "c")


def _manifest_root(tmp_path: Path) -> Path:
    root = tmp_path / "m"
    rows = []
    for i, label in enumerate(["Fire", "Water", "Fire", "Water", "Dragon", "Fire"]):
        _png(root / "images" / f"p{i}.png")
        rows.append({"image": f"images/p{i}.png", "name": f"p{i}", "type1": label})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def test_manifest_layout_filters_classes(tmp_path: Path) -> None:
    root = _manifest_root(tmp_path)
    cfg = _cfg(
        layout="manifest", manifest="labels.csv", label_col="type1", classes=["Water", "Fire"]
    )
    ds = load_split(root, cfg, cache_dir=tmp_path / "c")
    assert ds.class_names == ["Water", "Fire"]  # cfg.classes fixes the order
    assert ds.ids == [f"images/p{i}.png" for i in (0, 1, 2, 3, 5)]
    assert ds.labels.tolist() == [1, 0, 1, 0, 1]
    assert ds.report.filtered == 1 and ds.report.skipped == []
    # an absolute manifest path, and an id column when the CSV has one
    ds2 = load_split(
        root,
        dataclasses.replace(cfg, manifest=str(root / "labels.csv"), id_col="name"),
        cache_dir=tmp_path / "c",
    )
    assert ds2.ids == ["p0", "p1", "p2", "p3", "p5"]


def test_manifest_has_no_test_split(tmp_path: Path) -> None:
    root = _manifest_root(tmp_path)
    with pytest.raises(DataError, match="only a train split"):
        load_split(root, _cfg(layout="manifest", manifest="labels.csv", label_col="type1"), "test")


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real artwork not present at {REAL_DATA}")
def test_real_pokemon_artwork_manifest(tmp_path: Path) -> None:
    cfg = _cfg(layout="manifest", manifest="labels.csv", label_col="type1", classes=NINE)
    # labels.csv names images/minior-meteor.png (a Rock type) but the file is a .jpg
    with pytest.raises(DataError, match=r"minior-meteor\.png.*minior-meteor\.jpg"):
        load_split(REAL_DATA, cfg, cache_dir=tmp_path)
    ds = load_split(REAL_DATA, dataclasses.replace(cfg, skip_bad=True), cache_dir=tmp_path)
    rows = pd.read_csv(REAL_DATA / "labels.csv")
    in_nine = rows["type1"].isin(NINE)
    assert ds.report.filtered == int((~in_nine).sum())
    assert len(ds.report.skipped) == 1 and "minior-meteor.png" in ds.report.skipped[0][0]
    assert len(ds) == int(in_nine.sum()) - 1
    assert ds.class_names == NINE and ds.images.shape[1:] == (32, 32, 3)
    expected = rows[in_nine & (rows["image"] != "images/minior-meteor.png")]["type1"]
    assert ds.class_counts().tolist() == [int((expected == c).sum()) for c in NINE]


def test_layouts_are_a_registry() -> None:
    assert {"auto", "kaggle", "imagefolder", "manifest"} <= set(LAYOUTS.names())
    with pytest.raises(ValueError, match="valid: auto"):
        load_split(Path(__file__).parent, _cfg(layout="nope"))


# ---------------------------------------------------------------------------------- bad input
def test_missing_image_is_named_or_skipped(tmp_path: Path) -> None:
    root = _small_kaggle(
        tmp_path / "d", [("a", "x"), ("ghost", "x"), ("b", "y")], ["a.png", "b.jpg"]
    )
    with pytest.raises(DataError, match=r"line 3 \(id 'ghost'\).*no image train/ghost"):
        load_split(root, _cfg(), cache_dir=tmp_path / "c")
    ds = load_split(root, _cfg(skip_bad=True), cache_dir=tmp_path / "c")
    assert ds.ids == ["a", "b"]
    assert len(ds.report.skipped) == 1 and "ghost" in ds.report.skipped[0][0]
    with open(ds.report.skipped_file) as f:
        listed = list(csv.DictReader(f))
    assert listed == [{"item": ds.report.skipped[0][0], "reason": ds.report.skipped[0][1]}]


def test_unreadable_image_is_named_or_skipped(tmp_path: Path) -> None:
    root = _small_kaggle(tmp_path / "d", [("a", "x"), ("bad", "x"), ("b", "y")], ["a.png", "b.png"])
    (root / "train" / "bad.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"bad\.png.*cannot decode"):
        load_split(root, _cfg(), cache_dir=tmp_path / "c")
    ds = load_split(root, _cfg(skip_bad=True), cache_dir=tmp_path / "c")
    assert ds.ids == ["a", "b"] and ds.labels.tolist() == [0, 1]
    assert "bad.png" in ds.report.skipped[0][0]
    assert Path(ds.report.skipped_file).is_file()


def test_csv_without_named_columns_lists_its_columns(tmp_path: Path) -> None:
    root = _small_kaggle(tmp_path / "d", [("a", "x")], ["a.png"])
    with pytest.raises(DataError, match=r"no column\(s\) \['type'\].*\['id', 'label'\]"):
        load_split(root, _cfg(label_col="type"), cache_dir=tmp_path / "c")


def test_paths_escaping_the_root_are_rejected(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _png(root / "in.png")
    _png(tmp_path / "outside.png")
    pd.DataFrame(
        {"image": ["in.png", "../outside.png", str(tmp_path / "outside.png")], "label": ["a"] * 3}
    ).to_csv(root / "m.csv", index=False)
    cfg = _cfg(layout="manifest", manifest="m.csv")
    with pytest.raises(DataError, match=r"'\.\./outside\.png'.*escapes") as err:
        load_split(root, cfg, cache_dir=tmp_path / "c")
    assert str(tmp_path / "outside.png") in str(err.value)
    ds = load_split(root, dataclasses.replace(cfg, skip_bad=True), cache_dir=tmp_path / "c")
    assert ds.ids == ["in.png"] and len(ds.report.skipped) == 2
    # kaggle ids cannot climb out of train/ either
    k = _small_kaggle(tmp_path / "k", [("a", "x"), ("../../outside", "x")], ["a.png"])
    with pytest.raises(DataError, match=r"'\.\./\.\./outside'.*escapes"):
        load_split(k, _cfg(), cache_dir=tmp_path / "c")


def test_duplicate_ids_are_named(tmp_path: Path) -> None:
    root = _small_kaggle(tmp_path / "d", [("a", "x"), ("b", "y"), ("a", "y")], ["a.png", "b.png"])
    with pytest.raises(DataError, match=r"line 4 \(id 'a'\): duplicate id \(first on line 2\)"):
        load_split(root, _cfg(), cache_dir=tmp_path / "c")
    ds = load_split(root, _cfg(skip_bad=True), cache_dir=tmp_path / "c")
    assert ds.ids == ["a", "b"] and ds.labels.tolist() == [0, 1]


def test_labels_outside_classes_and_empty_classes(tmp_path: Path) -> None:
    root = _small_kaggle(
        tmp_path / "d",
        [("a", "x"), ("b", "y"), ("c", "z"), ("d", "z")],
        ["a.png", "b.png", "c.png", "d.png"],
    )
    with pytest.raises(DataError, match=r"outside the classes \['x', 'y'\]: 'z' \(2\)"):
        load_split(root, _cfg(classes=["x", "y"]), cache_dir=tmp_path / "c")
    ds = load_split(root, _cfg(classes=["x", "y"], skip_bad=True), cache_dir=tmp_path / "c")
    assert ds.ids == ["a", "b"] and {s[0] for s in ds.report.skipped} == {"c", "d"}
    with pytest.raises(DataError, match=r"no images: \['w'\]"):
        load_split(root, _cfg(classes=["w", "x", "y", "z"]), cache_dir=tmp_path / "c")


def test_test_split_must_match_sample_submission(tmp_path: Path) -> None:
    root = _small_kaggle(tmp_path / "d", [("a", "x")], ["a.png"])
    _png(root / "test" / "t1.png")
    _png(root / "test" / "t2.png")
    _png(root / "test" / "stray.png")
    pd.DataFrame({"id": ["t2", "t1", "lost"], "label": "x"}).to_csv(
        root / "sample_submission.csv", index=False
    )
    with pytest.raises(DataError) as err:
        load_split(root, _cfg(), "test", class_names=["x"], cache_dir=tmp_path / "c")
    assert "id 'lost'): no image in test/" in str(err.value)
    assert "test/stray.png: id 'stray' is not in sample_submission.csv" in str(err.value)
    ds = load_split(root, _cfg(skip_bad=True), "test", class_names=["x"], cache_dir=tmp_path / "c")
    assert ds.ids == ["t2", "t1"] and len(ds.report.skipped) == 2


def test_missing_root_and_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere"):
        load_split(tmp_path / "nowhere", _cfg())
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_split(tmp_path, _cfg(), "val")


# ---------------------------------------------------------------------------------- cache
def test_cache_reused_and_invalidated(kaggle_root: Path, tmp_path: Path) -> None:
    cfg = _cfg(layout="kaggle")
    first = load_split(kaggle_root, cfg, cache_dir=tmp_path)
    again = load_split(kaggle_root, cfg, cache_dir=tmp_path)
    assert again.report.decoded == 0 and again.report.from_cache
    assert np.array_equal(first.images, again.images) and first.ids == again.ids
    assert np.array_equal(first.labels, again.labels) and first.source_hash == again.source_hash
    # normalisation happens per batch: not a decode parameter
    assert load_split(
        kaggle_root, dataclasses.replace(cfg, normalize="imagenet"), cache_dir=tmp_path
    ).report.from_cache
    bigger = load_split(kaggle_root, dataclasses.replace(cfg, image_size=40), cache_dir=tmp_path)
    assert bigger.report.decoded == len(first) and bigger.images.shape[1] == 40
    # touching one source file re-decodes
    target = next((kaggle_root / "train").iterdir())
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched = load_split(kaggle_root, cfg, cache_dir=tmp_path)
    assert touched.report.decoded == len(first) and touched.source_hash != first.source_hash


def test_cache_key_covers_skip_bad(tmp_path: Path) -> None:
    """A run that skipped a bad file must not answer a strict run from its cache."""
    root = _small_kaggle(tmp_path / "d", [("a", "x"), ("bad", "x"), ("b", "y")], ["a.png", "b.png"])
    (root / "train" / "bad.png").write_bytes(b"this is not a png")
    skipping = load_split(root, _cfg(skip_bad=True), cache_dir=tmp_path / "c")
    assert skipping.ids == ["a", "b"] and not skipping.report.from_cache
    again = load_split(root, _cfg(skip_bad=True), cache_dir=tmp_path / "c")
    assert again.report.from_cache and again.report.decoded == 0 and again.ids == ["a", "b"]
    with pytest.raises(DataError, match=r"bad\.png.*cannot decode"):
        load_split(root, _cfg(), cache_dir=tmp_path / "c")
    # clean data too: each setting decodes into its own entry, then hits it
    clean = _small_kaggle(tmp_path / "ok", [("a", "x"), ("b", "y")], ["a.png", "b.png"])
    strict = load_split(clean, _cfg(), cache_dir=tmp_path / "c")
    lenient = load_split(clean, _cfg(skip_bad=True), cache_dir=tmp_path / "c")
    assert lenient.report.decoded == 2 and lenient.source_hash != strict.source_hash
    assert load_split(clean, _cfg(), cache_dir=tmp_path / "c").report.from_cache
    assert load_split(clean, _cfg(skip_bad=True), cache_dir=tmp_path / "c").report.from_cache


def test_cache_key_covers_labels(tmp_path: Path) -> None:
    """Relabelling an image in train.csv (same files, same classes) decodes again."""
    root = _small_kaggle(tmp_path / "d", [("a", "x"), ("b", "y"), ("c", "y")], ["a.png", "b.png", "c.png"])
    first = load_split(root, _cfg(), cache_dir=tmp_path / "c")
    assert first.labels.tolist() == [0, 1, 1] and not first.report.from_cache
    pd.DataFrame([("a", "x"), ("b", "y"), ("c", "x")], columns=["id", "label"]).to_csv(
        root / "train.csv", index=False
    )
    relabelled = load_split(root, _cfg(), cache_dir=tmp_path / "c")
    assert not relabelled.report.from_cache and relabelled.report.decoded == 3
    assert relabelled.labels.tolist() == [0, 1, 0]
    assert relabelled.source_hash != first.source_hash
    again = load_split(root, _cfg(), cache_dir=tmp_path / "c")
    assert again.report.from_cache and again.labels.tolist() == [0, 1, 0]


def test_cache_key_covers_class_names(tmp_path: Path) -> None:
    """Classes renamed or reordered with the label indices unchanged decode again: the
    cache must not hand back the old names."""
    root = _small_kaggle(tmp_path / "d", [("a", "x"), ("b", "y")], ["a.png", "b.png"])
    first = load_split(root, _cfg(), cache_dir=tmp_path / "c")
    # "x" → "w": still sorted first, so every label index stays what it was
    pd.DataFrame([("a", "w"), ("b", "y")], columns=["id", "label"]).to_csv(
        root / "train.csv", index=False
    )
    renamed = load_split(root, _cfg(), cache_dir=tmp_path / "c")
    assert renamed.labels.tolist() == first.labels.tolist() == [0, 1]
    assert not renamed.report.from_cache and renamed.class_names == ["w", "y"]
    assert load_split(root, _cfg(), cache_dir=tmp_path / "c").class_names == ["w", "y"]
    # the unlabelled test split: only the class names given differ (every label is -1)
    _png(root / "test" / "t1.png")
    test_xy = load_split(root, _cfg(), "test", class_names=["w", "y"], cache_dir=tmp_path / "c")
    test_yx = load_split(root, _cfg(), "test", class_names=["y", "w"], cache_dir=tmp_path / "c")
    assert test_xy.labels.tolist() == test_yx.labels.tolist() == [-1]
    assert not test_yx.report.from_cache and test_yx.class_names == ["y", "w"]
    hit = load_split(root, _cfg(), "test", class_names=["y", "w"], cache_dir=tmp_path / "c")
    assert hit.report.from_cache and hit.class_names == ["y", "w"]


def test_default_cache_dir_is_in_the_data_root(tmp_path: Path) -> None:
    root = _small_kaggle(tmp_path / "d", [("a", "x")], ["a.png"])
    ds = load_split(root, _cfg())
    assert Path(ds.report.cache_file).parent == root / ".poketune_cache"
    assert load_split(root, _cfg()).report.from_cache


# ---------------------------------------------------------------------------------- decoding
def test_rgba_keep_and_composite(tmp_path: Path) -> None:
    root = _small_kaggle(tmp_path / "d", [("clear", "x"), ("rgb", "y")], [])
    _png(root / "train" / "clear.png", (10, 20, 30, 0))
    _png(root / "train" / "rgb.png", (10, 20, 30))
    keep = load_split(root, _cfg(rgba="keep", image_size=8), cache_dir=tmp_path / "c")
    assert keep.images.shape == (2, 8, 8, 4)
    assert keep.images[0, 0, 0, 3] == 0 and keep.images[1, 0, 0].tolist() == [10, 20, 30, 255]
    comp = load_split(root, _cfg(background=[0, 128, 255], image_size=8), cache_dir=tmp_path / "c")
    assert comp.images.shape == (2, 8, 8, 3)
    assert comp.images[0, 0, 0].tolist() == [0, 128, 255]  # transparent → background
    assert comp.images[1, 0, 0].tolist() == [10, 20, 30]


def test_real_world_modes_decode(tmp_path: Path) -> None:
    """Palette, greyscale and JPEG files all come out as the same 3 channels."""
    root = tmp_path / "d"
    (root / "train").mkdir(parents=True)
    Image.new("P", (12, 12), 3).save(root / "train" / "pal.png")
    Image.new("L", (12, 12), 77).save(root / "train" / "grey.png")
    Image.new("RGB", (12, 12), (9, 99, 199)).save(root / "train" / "photo.jpg", quality=95)
    pd.DataFrame({"id": ["pal", "grey", "photo"], "label": ["a", "a", "b"]}).to_csv(
        root / "train.csv", index=False
    )
    ds = load_split(root, _cfg(image_size=12), cache_dir=tmp_path / "c")
    assert ds.images.shape == (3, 12, 12, 3)
    assert ds.images[1, 0, 0].tolist() == [77, 77, 77]
    assert np.abs(ds.images[2, 6, 6].astype(int) - [9, 99, 199]).max() <= 3


# ---------------------------------------------------------------------------------- Preprocessing
def test_preprocessing_properties_and_roundtrip() -> None:
    p = Preprocessing(image_size=64, crop="silhouette", rgba="keep", background=(1, 2, 3))
    assert p.channels == 4 and p.mean == (0.5,) * 4 and p.std == (0.5,) * 4
    im = Preprocessing(image_size=224, normalize="imagenet")
    assert im.channels == 3 and im.mean == (0.485, 0.456, 0.406) and im.std == (0.229, 0.224, 0.225)
    im4 = dataclasses.replace(im, rgba="keep")
    assert im4.mean[3] == 0.5 and im4.std[3] == 0.5 and len(im4.mean) == 4
    assert Preprocessing.from_dict(p.to_dict()) == p
    assert (
        Preprocessing.from_config(DataConfig(rgba="keep", crop="silhouette", background=[1, 2, 3]))
        == p
    )
    with pytest.raises(DataError, match="unknown keys"):
        Preprocessing.from_dict({**p.to_dict(), "bogus": 1})
    with pytest.raises(DataError, match=r"Preprocessing\.crop"):
        Preprocessing(image_size=64, crop="square")


def test_cache_key_covers_decode_fields_only() -> None:
    base = Preprocessing(image_size=64)
    assert base.cache_key() == dataclasses.replace(base, normalize="imagenet").cache_key()
    assert base.cache_key() != dataclasses.replace(base, image_size=32).cache_key()
    assert base.cache_key() != dataclasses.replace(base, background=(0, 0, 0)).cache_key()
    assert base.cache_key() != dataclasses.replace(base, crop="silhouette").cache_key()
    keep = dataclasses.replace(base, rgba="keep")
    # with alpha kept the background is never used: changing it must not re-decode
    assert keep.cache_key() == dataclasses.replace(keep, background=(0, 0, 0)).cache_key()


# ---------------------------------------------------------------------------------- split
def test_stratified_split_keeps_proportions() -> None:
    labels = np.repeat(np.arange(3), [100, 50, 20])
    tr, va = stratified_split(labels, 0.2, seed=0)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(labels)
    assert np.bincount(labels[va]).tolist() == [20, 10, 4]
    again = stratified_split(labels, 0.2, seed=0)
    assert np.array_equal(again[1], va)
    assert not np.array_equal(stratified_split(labels, 0.2, seed=1)[1], va)


def test_stratified_split_names_too_small_classes() -> None:
    with pytest.raises(DataError, match=r"class index\(es\) \[2\] have a single image"):
        stratified_split([0, 0, 0, 1, 1, 1, 2], 0.3, seed=0)
    with pytest.raises(DataError, match="cannot split"):
        stratified_split([0, 0, 1, 1, 2, 2], 0.2, seed=0)  # 1 validation image for 3 classes


# ---------------------------------------------------------------------------------- tensors
def test_to_nchw_and_normalize_batch() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 5, 6, 4), dtype=np.uint8)
    x = to_nchw(images)
    assert x.shape == (2, 4, 5, 6) and x.dtype == torch.uint8 and x.is_contiguous()
    assert torch.equal(x[1, 2], torch.from_numpy(images[1, :, :, 2]))
    prep = Preprocessing(image_size=5, rgba="keep", normalize="imagenet")
    out = normalize_batch(x, prep)
    expect = (images[0, 3, 4, 1] / 255 - 0.456) / 0.224
    assert out.dtype == torch.float32 and out[0, 1, 3, 4].item() == pytest.approx(expect, abs=1e-6)
    assert out[0, 3, 0, 0].item() == pytest.approx((images[0, 0, 0, 3] / 255 - 0.5) / 0.5, abs=1e-6)
    cl = normalize_batch(x.contiguous(memory_format=torch.channels_last), prep)
    assert torch.allclose(cl, out)
    assert torch.allclose(normalize_batch(x.float() / 255, prep), out, atol=1e-6)
    with pytest.raises(ValueError, match="N×3×H×W"):
        normalize_batch(x, Preprocessing(image_size=5))
