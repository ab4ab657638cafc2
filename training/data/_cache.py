"""The decoded-image cache: one uint8 ``.npy`` + one JSON per (sources, preprocessing, split).

Keyed by a hash of everything that changes the pixels or the labels, so touching a file,
editing a CSV or changing a decode parameter re-decodes, and nothing else does.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.data._sources import SourceItem
from training.files import atomic_write

__all__ = [
    "default_cache_dir",
    "load_cached",
    "save_cached",
    "source_hash",
    "write_atomic",
    "write_skipped",
]

# bump when the decode pipeline changes what it produces for the same parameters
_FORMAT = 1


def default_cache_dir(root: Path) -> Path:
    """``ROOT/.poketune_cache`` when the data folder is writable, else ``~/.cache/poketune``."""
    for candidate in (root / ".poketune_cache", Path.home() / ".cache" / "poketune"):
        if _writable(candidate):
            return candidate
    return Path(tempfile.gettempdir()) / "poketune_cache"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True


def source_hash(
    root: Path,
    items: Sequence[SourceItem],
    labels: Sequence[int] | np.ndarray,
    *,
    class_names: Sequence[str],
    split: str,
    layout: str,
    prep_key: str,
    skip_bad: bool,
) -> str:
    h = hashlib.sha256()
    header = {
        "format": _FORMAT,
        "split": split,
        "layout": layout,
        "prep": prep_key,
        "classes": list(class_names),
        # skip_bad changes what a bad file turns into, so a skip-run's cache must not
        # answer a strict run
        "skip_bad": skip_bad,
    }
    h.update(json.dumps(header, sort_keys=True).encode())
    stats: dict[Path, tuple[int, int]] = {}  # container files (CIFAR batches) stat once
    for item, label in zip(items, labels, strict=True):
        if item.path not in stats:
            st = item.path.stat()
            stats[item.path] = (st.st_size, st.st_mtime_ns)
        size, mtime = stats[item.path]
        try:
            rel = os.path.relpath(item.path, root)
        except ValueError:  # another drive (Windows)
            rel = str(item.path)
        h.update(json.dumps([item.id, rel, size, mtime, int(label)]).encode() + b"\n")
    return h.hexdigest()[:20]


def write_atomic(path: Path, data: bytes) -> None:
    """A concurrent reader (another Ray worker) never sees half a cache file."""
    atomic_write(path, data)


def _paths(cache_dir: Path, split: str, key: str) -> tuple[Path, Path]:
    return cache_dir / f"{split}-{key}.npy", cache_dir / f"{split}-{key}.json"


def save_cached(
    cache_dir: Path, split: str, key: str, images: np.ndarray, meta: dict[str, Any]
) -> Path | None:
    """Store images + meta; None when the folder cannot be written (loading still works)."""
    npy, js = _paths(cache_dir, split, key)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.save(buf, images, allow_pickle=False)
        write_atomic(npy, buf.getvalue())
        # the JSON goes last: its presence marks a complete entry
        write_atomic(js, json.dumps(meta).encode())
    except OSError:
        return None
    return npy


def load_cached(cache_dir: Path, split: str, key: str) -> tuple[np.ndarray, dict[str, Any]] | None:
    npy, js = _paths(cache_dir, split, key)
    if not (npy.is_file() and js.is_file()):
        return None
    try:
        meta = json.loads(js.read_text())
        images = np.load(npy, mmap_mode=None, allow_pickle=False)
    except (OSError, ValueError):
        return None  # a damaged entry is decoded again, not trusted
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(meta.get("ids", [])):
        return None
    return images, meta


def write_skipped(cache_dir: Path, key: str, skipped: Sequence[tuple[str, str]]) -> Path | None:
    path = cache_dir / f"skipped-{key}.csv"
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["item", "reason"])
    writer.writerows(skipped)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buf.getvalue().encode())
    except OSError:
        return None
    return path
