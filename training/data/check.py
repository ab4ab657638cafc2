"""``poketune check``: what a team should know about its data before tuning on it.

Per split: images per class, image sizes and modes, files that do not decode; exact
duplicates (the same pixels) and near duplicates (perceptual hashes from ImageHash, also
against each image's mirror) within train and between train and test — the identity leak a
test image with a near twin in train implies — and duplicate copies whose labels disagree.

Hashes are cached next to the image cache, keyed by each file's size and mtime, so a second
check of the same data reads no image. A check warns; it blocks only when asked
(``--strict``): many competitions share identities between train and test by design.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from training.config import DataConfig
from training.data._cache import default_cache_dir
from training.data._errors import DataError
from training.data._layouts import LAYOUTS
from training.data._sources import SourceItem
from training.files import atomic_write

__all__ = ["DataCheck", "Pair", "check_data"]

#: Hamming distance (of 64 bits) at or under which two perceptual hashes count as near twins:
#: resized, re-encoded and lightly cropped copies land at 0–4, different sprites at 20+
NEAR_BITS = 6
_HASH_VERSION = 1


@dataclass(frozen=True)
class Pair:
    """Two images that are (near) copies of each other."""

    a: str  # "train/<id>"
    b: str
    label_a: str | None
    label_b: str | None
    distance: int  # bits between their perceptual hashes (0 for exact copies)
    exact: bool  # the same pixels
    mirrored: bool  # b matches a's horizontal mirror

    @property
    def across(self) -> bool:
        return self.a.split("/", 1)[0] != self.b.split("/", 1)[0]

    @property
    def label_conflict(self) -> bool:
        return self.label_a is not None and self.label_b is not None and self.label_a != self.label_b


@dataclass
class DataCheck:
    root: str
    images: dict[str, int]  # split → images listed
    counts: dict[str, dict[str, int]]  # split → class → images (train only has labels)
    sizes: dict[str, int]  # "WxH" → images
    modes: dict[str, int]  # PIL mode → images
    unreadable: list[tuple[str, str]]  # ("split/id", why)
    pairs: list[Pair] = field(default_factory=list)
    hashed: int = 0  # images whose hashes were computed (not read from the cache)
    #: "split/id" → the listed item (for the contact sheet; not part of the JSON)
    items: dict[str, SourceItem] = field(default_factory=dict, repr=False)

    @property
    def within_train(self) -> list[Pair]:
        return [p for p in self.pairs if not p.across]

    @property
    def train_test(self) -> list[Pair]:
        return [p for p in self.pairs if p.across]

    @property
    def label_conflicts(self) -> list[Pair]:
        return [p for p in self.pairs if p.label_conflict]

    @property
    def leaked_test_images(self) -> int:
        """Test images with a (near) twin in train: the identity leak."""
        return len({p.b for p in self.train_test})

    @property
    def findings(self) -> int:
        return len(self.unreadable) + len(self.pairs)

    def summary(self) -> str:
        lines = [f"data check of {self.root}"]
        for split, n in self.images.items():
            per_class = self.counts.get(split)
            classes = (
                ", ".join(f"{c} {k}" for c, k in sorted(per_class.items(), key=lambda x: -x[1]))
                if per_class
                else "unlabelled"
            )
            lines.append(f"  {split}: {n} images ({classes})")
        lines.append("  sizes: " + ", ".join(f"{s} ×{n}" for s, n in Counter(self.sizes).most_common(5)))
        lines.append("  modes: " + ", ".join(f"{m} ×{n}" for m, n in Counter(self.modes).most_common()))
        lines.append(f"  unreadable files: {len(self.unreadable)}")
        for where, why in self.unreadable[:5]:
            lines.append(f"    {where}: {why}")
        lines.append(
            f"  duplicates within train: {len(self.within_train)} pairs "
            f"({sum(p.exact for p in self.within_train)} exact)"
        )
        lines.append(
            f"  train/test duplicates: {len(self.train_test)} pairs; {self.leaked_test_images} "
            f"test images have a near twin in train (an identity leak, unless the competition "
            f"shares identities by design)"
        )
        lines.append(f"  duplicate copies with different labels: {len(self.label_conflicts)}")
        for p in self.label_conflicts[:5]:
            lines.append(f"    {p.a} ({p.label_a}) ~ {p.b} ({p.label_b}), {p.distance} bits")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("items")
        doc["pairs"] = [{**asdict(p), "label_conflict": p.label_conflict, "across": p.across} for p in self.pairs]
        doc["summary"] = {
            "unreadable": len(self.unreadable),
            "within_train_pairs": len(self.within_train),
            "train_test_pairs": len(self.train_test),
            "leaked_test_images": self.leaked_test_images,
            "label_conflicts": len(self.label_conflicts),
        }
        return doc

    def contact_sheet(self, out: Path, *, worst: int = 24) -> Path | None:
        """A PNG of the ``worst`` pairs (label conflicts first, then the closest), side by side."""
        from matplotlib.figure import Figure

        pairs = sorted(self.pairs, key=lambda p: (not p.label_conflict, p.distance))[:worst]
        if not pairs:
            return None
        fig = Figure(figsize=(4.2, 2.0 * len(pairs)), layout="constrained")
        axes = fig.subplots(len(pairs), 2, squeeze=False)
        for row, p in zip(axes, pairs, strict=True):
            for ax, key, label in ((row[0], p.a, p.label_a), (row[1], p.b, p.label_b)):
                with _open(self.items[key]) as img:
                    ax.imshow(np.asarray(img.convert("RGBA")))
                ax.set_title(f"{key} ({label or '?'})", fontsize=7)
                ax.axis("off")
            row[1].text(0, -0.02, f"{p.distance} bits{' mirrored' if p.mirrored else ''}",
                        transform=row[1].transAxes, fontsize=6, va="top")  # fmt: skip
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=80)
        return out


# ---------------------------------------------------------------------------------- hashing
def _open(item: SourceItem) -> Image.Image:
    return item.read() if item.read is not None else Image.open(item.path)


def _hash_one(item: SourceItem) -> dict[str, Any]:
    import imagehash

    with _open(item) as img:
        img.load()
        rgba = img.convert("RGBA")
        # transparent pixels count as white: the same sprite on another alpha is a copy
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat.alpha_composite(rgba)
        rgb = flat.convert("RGB")
        return {
            "pixels": hashlib.sha1(np.asarray(rgba).tobytes()).hexdigest(),
            "phash": str(imagehash.phash(rgb)),
            "phash_mirror": str(imagehash.phash(rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT))),
            "size": f"{img.width}x{img.height}",
            "mode": img.mode,
        }


def _file_key(item: SourceItem) -> str:
    st = item.path.stat()
    return f"{item.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{item.id}"


def _hashes(items: list[tuple[str, SourceItem]], cache: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """key → hash record (or {"error": why}); the second value counts images actually read."""
    try:
        cached: dict[str, dict[str, Any]] = json.loads(cache.read_text()) if cache.is_file() else {}
    except (OSError, json.JSONDecodeError):
        cached = {}
    out: dict[str, dict[str, Any]] = {}
    computed = 0
    for key, item in items:
        fkey = _file_key(item)
        rec = cached.get(fkey)
        if rec is None:
            try:
                rec = _hash_one(item)
            except Exception as exc:  # PIL raises many types for a broken file
                rec = {"error": f"{type(exc).__name__}: {exc}"}
            computed += 1
            cached[fkey] = rec
        out[key] = rec
    if computed:
        # a read-only cache folder only costs the next check its speed
        with contextlib.suppress(OSError):
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache, json.dumps(cached).encode())
    return out, computed


def _bits(hexes: list[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64)


def _near_pairs(keys_a: list[str], ha: np.ndarray, keys_b: list[str], hb: np.ndarray, hb_mirror: np.ndarray,
                same: bool, limit: int) -> list[tuple[str, str, int, bool]]:  # fmt: skip
    """(a, b, bits, mirrored) for every pair at most ``limit`` bits apart; ``same``: a and b
    are one set (each pair once)."""
    found: list[tuple[str, str, int, bool]] = []
    for start in range(0, len(ha), 512):  # rows in chunks: memory stays O(512 × len(b))
        block = ha[start : start + 512, None]
        plain = np.bitwise_count(block ^ hb[None, :])
        mirror = np.bitwise_count(block ^ hb_mirror[None, :])
        dist = np.minimum(plain, mirror)
        rows, cols = np.nonzero(dist <= limit)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if same and c <= i:
                continue
            found.append((keys_a[i], keys_b[c], int(dist[r, c]), bool(mirror[r, c] < plain[r, c])))
    return found


# ---------------------------------------------------------------------------------- check
def check_data(
    root: str | Path, cfg: DataConfig | None = None, *, cache_dir: str | Path | None = None,
    near_bits: int = NEAR_BITS,
) -> DataCheck:  # fmt: skip
    """Check the dataset under ``root`` (laid out as ``cfg.layout`` says)."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"--data {root}: no such folder")
    cfg = cfg or DataConfig()
    listed: dict[str, list[SourceItem]] = {}
    for split in ("train", "test"):
        try:
            listed[split] = LAYOUTS.get(cfg.layout)(root, cfg, split).items
        except DataError:
            if split == "train":
                raise
            listed[split] = []  # no test split: nothing to compare train against
    items = {f"{split}/{it.id}": it for split, its in listed.items() for it in its}
    cache = Path(cache_dir) if cache_dir else default_cache_dir(root)
    records, computed = _hashes(list(items.items()), cache / f"check-v{_HASH_VERSION}-hashes.json")

    unreadable = [(k, r["error"]) for k, r in records.items() if "error" in r]
    good = {k: r for k, r in records.items() if "error" not in r}
    counts: dict[str, dict[str, int]] = {}
    for split, its in listed.items():
        labels = Counter(it.label for it in its if it.label is not None)
        if labels:
            counts[split] = dict(labels)
    report = DataCheck(
        root=str(root),
        images={split: len(its) for split, its in listed.items() if its},
        counts=counts,
        sizes=dict(Counter(r["size"] for r in good.values())),
        modes=dict(Counter(r["mode"] for r in good.values())),
        unreadable=unreadable,
        hashed=computed,
        items=items,
    )
    label = {k: items[k].label for k in good}
    train = [k for k in good if k.startswith("train/")]
    test = [k for k in good if k.startswith("test/")]

    def arrays(keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return _bits([good[k]["phash"] for k in keys]), _bits([good[k]["phash_mirror"] for k in keys])

    tr, tr_m = arrays(train)
    found = _near_pairs(train, tr, train, tr, tr_m, True, near_bits) if train else []
    if test and train:
        te, te_m = arrays(test)
        found += _near_pairs(train, tr, test, te, te_m, False, near_bits)
    for a, b, bits, mirrored in found:
        exact = good[a]["pixels"] == good[b]["pixels"]
        report.pairs.append(Pair(a, b, label[a], label[b], 0 if exact else bits, exact, mirrored and not exact))
    report.pairs.sort(key=lambda p: (p.across, p.distance, p.a, p.b))
    return report


def check_before_training(root: str | Path, cfg: DataConfig, *, cache_dir: str | Path | None = None) -> DataCheck | None:
    """The check ``tune``, ``train`` and ``retrain`` run first (hashes cached, so fast after the
    first time): one warning line when it finds something, never an error. None when the
    data cannot be listed (the loader reports that itself, with more detail)."""
    import sys

    try:
        report = check_data(root, cfg, cache_dir=cache_dir)
    except DataError:
        return None
    if report.findings:
        parts = [
            f"{len(report.unreadable)} unreadable files" if report.unreadable else "",
            f"{len(report.within_train)} duplicate pairs within train" if report.within_train else "",
            f"{report.leaked_test_images} test images with a near twin in train" if report.train_test else "",
            f"{len(report.label_conflicts)} copies with different labels" if report.label_conflicts else "",
        ]
        print(f"warning: data check: {'; '.join(p for p in parts if p)} (details: poketune check --data {root})",
              file=sys.stderr, flush=True)  # fmt: skip
    return report


def duplicate_groups(
    root: str | Path, cfg: DataConfig, ids: list[str], *, cache_dir: str | Path | None = None
) -> np.ndarray:
    """A group number per training image ``ids[i]``: near-duplicate copies (pairs within
    train, joined transitively) share one, every other image has its own."""
    report = check_data(root, cfg, cache_dir=cache_dir)
    index = {f"train/{i}": n for n, i in enumerate(ids)}
    parent = list(range(len(ids)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for p in report.within_train:
        if p.a in index and p.b in index:
            parent[find(index[p.a])] = find(index[p.b])
    return np.array([find(i) for i in range(len(ids))], dtype=np.int64)
