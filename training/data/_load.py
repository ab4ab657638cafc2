"""``load_split``: list a split (layout), check labels, decode once, cache as ``.npy``."""

from __future__ import annotations

import dataclasses
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from training.config import DataConfig
from training.data._cache import (
    default_cache_dir,
    load_cached,
    save_cached,
    source_hash,
    write_skipped,
)
from training.data._decode import Decoded, decode_item
from training.data._errors import DataError
from training.data._imageset import ImageSet, LoadReport
from training.data._layouts import LAYOUTS
from training.data._preprocessing import Preprocessing
from training.data._sources import Listing, Problems, SourceItem

__all__ = ["SPLITS", "load_split"]

SPLITS = ("train", "test")
# PIL decodes and resizes with the GIL released; two threads match the 2-core machines
# this runs on and keep a Ray worker from starving its neighbours
_DECODE_WORKERS = 2


def load_split(
    root: str | Path,
    cfg: DataConfig,
    split: str = "train",
    *,
    class_names: list[str] | None = None,
    cache_dir: str | Path | None = None,
) -> ImageSet:
    """Load one split of the dataset under ``root`` as preprocessed uint8 N×H×W×C images.

    ``class_names`` fixes the classes and their order (pass the training class names for the
    test split); otherwise ``cfg.classes``, otherwise the sorted labels found.  Bad items
    raise :class:`DataError` naming them, or are skipped and listed in ``report.skipped``
    when ``cfg.skip_bad``.  The first call decodes and caches; a later call with the same
    files, labels and decode parameters reads the cache (``report.decoded == 0``).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} is not a folder")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    prep = Preprocessing.from_config(cfg)
    if class_names is not None:
        cfg = dataclasses.replace(cfg, classes=list(class_names))
    listing = LAYOUTS.get(cfg.layout)(root, cfg, split)
    names = _class_names(cfg, listing, split)
    items, labels, label_skips = _label_items(listing, names, cfg.skip_bad)
    skipped = listing.skipped + label_skips
    if not items:
        raise DataError(f"no images in the {split} split of {root} (layout {cfg.layout!r})")
    if split == "train":
        _check_no_empty_class(names, labels)  # before decoding: fail fast

    key = source_hash(
        root,
        items,
        labels,
        class_names=names,
        split=split,
        layout=cfg.layout,
        prep_key=prep.cache_key(),
        skip_bad=cfg.skip_bad,
    )
    cdir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(root)
    cached = load_cached(cdir, split, key)
    # caches written before the transparency count existed are decoded again, once
    if cached is not None and "transparent" in cached[1]["report"]:
        images, meta = cached
        report = LoadReport.from_dict(meta["report"])
        report.from_cache = True
        report.cache_file = str(cdir / f"{split}-{key}.npy")
        return ImageSet(
            images=images,
            labels=np.asarray(meta["labels"], dtype=np.int64),
            ids=[str(i) for i in meta["ids"]],
            class_names=list(meta["class_names"]),
            preprocessing=prep,
            source_hash=key,
            report=report,
        )

    images, ok, fallback_ids, transparent, decode_skips = _decode_all(items, prep, cfg.skip_bad)
    skipped += decode_skips
    if not ok.all():
        items = [it for it, good in zip(items, ok, strict=True) if good]
        labels = labels[ok]
        images = images[ok]
    if split == "train":
        _check_no_empty_class(names, labels)  # again: skipped undecodable files may empty one

    report = LoadReport(
        skipped=skipped,
        crop_fallbacks=len(fallback_ids),
        crop_fallback_ids=fallback_ids,
        decoded=int(ok.sum()),
        filtered=listing.filtered,
        transparent=transparent,
    )
    if skipped:
        path = write_skipped(cdir, key, skipped)
        report.skipped_file = str(path) if path else ""
    ids = [it.id for it in items]
    meta = {
        "ids": ids,
        "labels": labels.tolist(),
        "class_names": names,
        "preprocessing": prep.to_dict(),
        "report": report.to_dict(),
    }
    npy = save_cached(cdir, split, key, images, meta)
    report.cache_file = str(npy) if npy else ""
    return ImageSet(images, labels, ids, names, prep, key, report)


def _class_names(cfg: DataConfig, listing: Listing, split: str) -> list[str]:
    if cfg.classes:
        dupes = sorted(n for n, c in Counter(cfg.classes).items() if c > 1)
        if dupes:
            raise DataError(f"data.classes lists {dupes} more than once")
        return list(cfg.classes)
    # an unlabelled test split finds none: the caller passes the training class names
    found = {it.label for it in listing.items if it.label is not None}
    return sorted(found | set(listing.classes_found))


def _label_items(
    listing: Listing, names: list[str], skip_bad: bool
) -> tuple[list[SourceItem], np.ndarray, list[tuple[str, str]]]:
    """Class indices (-1 for unlabelled); labels outside ``names`` are bad items."""
    index = {n: i for i, n in enumerate(names)}
    outside = [it for it in listing.items if it.label is not None and it.label not in index]
    if outside and not skip_bad:
        counts = Counter(it.label for it in outside)
        listed = ", ".join(f"{lab!r} ({n})" for lab, n in counts.most_common())
        examples = ", ".join(repr(it.id) for it in outside[:5])
        raise DataError(
            f"{len(outside)} image(s) have labels outside the classes {names}: {listed}; "
            f"e.g. ids {examples} (fix data.classes, or set data.skip_bad=true to skip them)"
        )
    skipped = [(it.id, f"label {it.label!r} not in the classes {names}") for it in outside]
    kept = [it for it in listing.items if it.label is None or it.label in index]
    labels = np.array([-1 if it.label is None else index[it.label] for it in kept], np.int64)
    return kept, labels, skipped


def _decode_all(
    items: list[SourceItem], prep: Preprocessing, skip_bad: bool
) -> tuple[np.ndarray, np.ndarray, list[str], int, list[tuple[str, str]]]:
    """Decode into one preallocated array; returns (images, ok mask, fallback ids, number of
    images with transparency, skips)."""
    size = prep.image_size
    images = np.zeros((len(items), size, size, prep.channels), dtype=np.uint8)
    errors: list[str | None] = [None] * len(items)
    fell_back = np.zeros(len(items), dtype=bool)
    transparent = np.zeros(len(items), dtype=bool)

    def work(i: int) -> None:
        try:
            decoded: Decoded = decode_item(items[i], prep)
        except Exception as exc:  # any decoder failure is a bad item, reported by name
            errors[i] = f"cannot decode: {type(exc).__name__}: {exc}"
            return
        images[i] = decoded.pixels
        fell_back[i] = decoded.crop_fell_back
        transparent[i] = decoded.transparent

    with ThreadPoolExecutor(max_workers=_DECODE_WORKERS) as pool:
        list(pool.map(work, range(len(items))))

    problems = Problems("decoding images")
    for item, err in zip(items, errors, strict=True):
        if err is not None:
            problems.add(f"{item.path} (id {item.id!r})", err)
    skips = problems.settle(skip_bad)
    ok = np.array([e is None for e in errors], dtype=bool)
    fallback_ids = [it.id for it, f, good in zip(items, fell_back, ok, strict=True) if f and good]
    return images, ok, fallback_ids, int((transparent & ok).sum()), skips


def _check_no_empty_class(names: list[str], labels: np.ndarray) -> None:
    counts = np.bincount(labels[labels >= 0], minlength=len(names))
    empty = [n for n, c in zip(names, counts, strict=True) if c == 0]
    if empty:
        raise DataError(f"class(es) with no images: {empty} (of {names})")
