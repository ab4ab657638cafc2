"""Synthetic stand-ins for the three competitions, in the Kaggle layout.

``make_dataset(kind, out)`` writes::

    out/train.csv              id,label
    out/train/<id>.png
    out/test/<id>.png
    out/sample_submission.csv  id,label (placeholder label)
    out/test_labels.csv        id,label (the answers, for scoring)

Nine classes with the real competition's imbalance.  task1/task2: 64×64 RGBA, a
class-dependent polygon with a black 2-px outline on a noisy background (or transparent).
task3: larger RGB images, an object on a striped/noisy texture.  Classes differ by shape
*and* colour but the colours overlap and ~5% of labels are wrong, so a small model lands
well below a perfect score.  Deterministic: the same seed writes byte-identical files.
"""

from __future__ import annotations

import colorsys
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from training.data._errors import DataError
from training.registry import Registry

__all__ = [
    "CLASS_COUNTS",
    "GENERATORS",
    "class_counts",
    "make_dataset",
    "render_image",
]

#: train images per class at scale 1.0 (the seeds' Pokémon-type imbalance)
CLASS_COUNTS: dict[str, int] = {
    "Water": 674,
    "Normal": 606,
    "Poison": 467,
    "Fire": 381,
    "Bug": 374,
    "Grass": 299,
    "Fighting": 291,
    "Rock": 264,
    "Ground": 244,
}
CLASS_NAMES = sorted(CLASS_COUNTS)
LABEL_NOISE = 0.05  # fraction of images whose recorded label is another class
TEST_FRACTION = 0.25
MIN_PER_CLASS = 4

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class _Style:
    vertices: int
    inner: float  # star: radius of every other vertex (1.0 = plain polygon)
    aspect: float  # width / height before rotation
    jitter: float  # per-vertex radius noise (irregular shapes)
    hue: float  # degrees; neighbouring classes overlap once hue noise is added
    sat: float
    size: float  # radius factor


# Fire/Fighting/Ground/Rock/Normal share warm, overlapping hues: shape has to separate them
_STYLES: dict[str, _Style] = {
    "Bug": _Style(3, 1.0, 1.0, 0.08, 75, 0.65, 0.9),
    "Fighting": _Style(4, 1.0, 0.8, 0.08, 22, 0.55, 1.0),
    "Fire": _Style(5, 0.5, 1.0, 0.08, 12, 0.80, 1.0),
    "Grass": _Style(6, 0.75, 0.6, 0.10, 110, 0.60, 1.0),
    "Ground": _Style(4, 1.0, 1.8, 0.10, 38, 0.50, 1.0),
    "Normal": _Style(12, 1.0, 1.0, 0.05, 32, 0.25, 0.95),
    "Poison": _Style(5, 1.0, 1.0, 0.08, 285, 0.55, 0.95),
    "Rock": _Style(7, 1.0, 1.1, 0.28, 28, 0.30, 1.0),
    "Water": _Style(8, 0.85, 1.3, 0.08, 205, 0.65, 1.0),
}
_HUE_NOISE = 22.0  # degrees (std)


# ------------------------------------------------------------------------------ drawing
def _noise(rng: np.random.Generator, std: float, size: int) -> np.ndarray:
    return rng.standard_normal((size, size, 3), dtype=np.float32) * np.float32(std)


def _polygon(
    style: _Style, cx: float, cy: float, r: float, rng: np.random.Generator
) -> list[tuple[float, float]]:
    n = style.vertices * (2 if style.inner < 1.0 else 1)
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 2 * np.pi)
    radius = r * np.clip(1 + rng.normal(0, style.jitter, n), 0.5, 1.5)
    if style.inner < 1.0:
        radius[1::2] *= style.inner
    aspect = style.aspect * rng.uniform(0.85, 1.15)
    x, y = radius * np.cos(theta) * np.sqrt(aspect), radius * np.sin(theta) / np.sqrt(aspect)
    rot = rng.uniform(0, 2 * np.pi)
    xr = cx + x * np.cos(rot) - y * np.sin(rot)
    yr = cy + x * np.sin(rot) + y * np.cos(rot)
    return list(zip(xr.tolist(), yr.tolist(), strict=True))


def _tint(style: _Style, rng: np.random.Generator, hue_noise: float = _HUE_NOISE) -> np.ndarray:
    hue = ((style.hue + rng.normal(0, hue_noise)) % 360) / 360
    sat = float(np.clip(style.sat + rng.normal(0, 0.12), 0.05, 1.0))
    val = rng.uniform(0.6, 1.0)
    return np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255


def _blobs(img: Image.Image, rng: np.random.Generator, count: int, lo: int = 60) -> None:
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for _ in range(count):
        x0, y0 = rng.uniform(-0.2, 0.9, 2) * (w, h)
        bw, bh = rng.uniform(0.1, 0.4, 2) * (w, h)
        colour = tuple(int(c) for c in rng.integers(lo, 256, 3))
        draw.ellipse((x0, y0, x0 + bw, y0 + bh), fill=colour)


def _render_outlined(
    class_index: int, rng: np.random.Generator, size: int, outline: bool
) -> tuple[Image.Image, Box | None]:
    """task1/task2: RGBA polygon with a black outline; returns the outline's bounding box."""
    style = _STYLES[CLASS_NAMES[class_index]]
    transparent = rng.random() < 0.35
    bg = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(90, 231, 3)))
    _blobs(bg, rng, int(rng.integers(1, 5)))
    pixels = np.asarray(bg, dtype=np.float32) + _noise(rng, 18, size)

    r = size * rng.uniform(0.18, 0.32) * style.size
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    poly = _polygon(style, cx, cy, r, rng)
    shape = Image.new("L", (size, size), 0)
    ImageDraw.Draw(shape).polygon(poly, fill=255)
    inside = np.asarray(shape) > 0
    fill = _tint(style, rng).astype(np.float32) + _noise(rng, 14, size)
    pixels = np.where(inside[..., None], fill, pixels)
    # nothing but the outline may be near-black: the silhouette crop relies on it
    pixels = np.clip(pixels, 48, 255)

    box: Box | None = None
    drawn = inside
    if outline:
        line = Image.new("L", (size, size), 0)
        ImageDraw.Draw(line).polygon(poly, outline=255, width=2)
        box = line.getbbox()
        on_line = np.asarray(line) > 0
        pixels[on_line] = rng.uniform(0, 25, (int(on_line.sum()), 1))
        drawn = inside | on_line
    alpha = np.full((size, size), 255, dtype=np.uint8)
    if transparent:  # artwork-style: alpha 0 (and black) outside the Pokémon
        alpha[~drawn] = 0
        pixels[~drawn] = 0
    rgba = np.dstack([pixels.astype(np.uint8), alpha])
    return Image.fromarray(rgba, "RGBA"), box


def _render_textured(
    class_index: int, rng: np.random.Generator, size: int, outline: bool
) -> tuple[Image.Image, Box | None]:
    """task3: RGB object on a striped or noisy texture, no outline."""
    del outline
    style = _STYLES[CLASS_NAMES[class_index]]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(0.05, 0.25) * size
    wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    # muted texture colours (grey ± a tint): a busy background, yet the object's colour stays
    # a cue, as it is for real photos of a subject
    c1, c2 = (rng.uniform(50, 220, (2, 1)) + rng.uniform(-35, 35, (2, 3))).astype(np.float32)
    mix = (
        (wave[..., None] + 1) / 2
        if rng.random() < 0.6
        else rng.random((size, size, 1), dtype=np.float32)
    )
    pixels = c1 * mix + c2 * (1 - mix) + _noise(rng, 12, size)

    r = size * rng.uniform(0.22, 0.38) * style.size
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    shape = Image.new("L", (size, size), 0)
    ImageDraw.Draw(shape).polygon(_polygon(style, cx, cy, r, rng), fill=255)
    inside = np.asarray(shape) > 0
    # a simple left-to-right shading gives the object some depth
    shade = 0.75 + 0.5 * (xx - cx) / size
    tint = _tint(style, rng, hue_noise=15.0).astype(np.float32)
    fill = tint * shade[..., None] + _noise(rng, 10, size)
    pixels = np.where(inside[..., None], fill, pixels)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return img, shape.getbbox()


@dataclass(frozen=True)
class _Kind:
    render: Callable[[int, np.random.Generator, int, bool], tuple[Image.Image, Box | None]]
    size: int
    count_divisor: int  # task3 is a third of the size of task1/task2
    outline_rate: float  # share of images drawn with an outline (the rest: crop fallback)


#: dataset kind → how its images are drawn
GENERATORS: Registry[_Kind] = Registry("synthetic dataset kind")
GENERATORS.register("task1")(_Kind(_render_outlined, 64, 1, 0.97))
GENERATORS.register("task2")(_Kind(_render_outlined, 64, 1, 0.97))
GENERATORS.register("task3")(_Kind(_render_textured, 128, 3, 1.0))


def render_image(
    kind: str,
    class_index: int,
    rng: np.random.Generator,
    *,
    size: int | None = None,
    outline: bool = True,
) -> tuple[Image.Image, Box | None]:
    """Draw one image of class ``CLASS_NAMES[class_index]``; also returns the drawn object's
    box ``(left, top, right, bottom)`` (the outline's, for task1/task2; None without one)."""
    spec = GENERATORS.get(kind)
    if not 0 <= class_index < len(CLASS_NAMES):
        raise DataError(f"class_index {class_index} out of range 0..{len(CLASS_NAMES) - 1}")
    return spec.render(class_index, rng, size or spec.size, outline)


# ------------------------------------------------------------------------------ dataset
def class_counts(kind: str, scale: float = 1.0, split: str = "train") -> dict[str, int]:
    """Images per class that :func:`make_dataset` writes."""
    spec = GENERATORS.get(kind)
    frac = TEST_FRACTION if split == "test" else 1.0
    low = 1 if split == "test" else MIN_PER_CLASS
    return {
        name: max(low, round(n * scale * frac / spec.count_divisor))
        for name, n in CLASS_COUNTS.items()
    }


def make_dataset(
    kind: str,
    out: str | Path,
    *,
    scale: float = 1.0,
    seed: int = 0,
    image_size: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic competition of ``kind`` (task1 | task2 | task3) to ``out``.

    ``scale`` multiplies the image counts (at least 4 per class in train);
    ``image_size`` overrides the kind's default (64, or 128 for task3).  An existing
    dataset in ``out`` is replaced only with ``overwrite=True``.
    """
    spec = GENERATORS.get(kind)
    if scale <= 0:
        raise DataError(f"scale must be > 0, got {scale}")
    out = Path(out)
    generated = [out / "train", out / "test"]
    csvs = [out / n for n in ("train.csv", "sample_submission.csv", "test_labels.csv")]
    existing = [p for p in generated + csvs if p.exists()]
    if existing and not overwrite:
        raise DataError(
            f"{out} already holds a dataset ({', '.join(p.name for p in existing)}); "
            "pass overwrite=True (--overwrite) to replace it"
        )
    for p in existing:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    size = image_size or spec.size
    kind_index = GENERATORS.names().index(kind)
    for split_index, split in enumerate(("train", "test")):
        rng = np.random.default_rng([seed, kind_index, split_index])
        counts = class_counts(kind, scale, split)
        classes = np.repeat(np.arange(len(CLASS_NAMES)), [counts[n] for n in CLASS_NAMES])
        rng.shuffle(classes)
        labels = _noisy(classes, rng)
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        prefix = "tr" if split == "train" else "te"
        ids = [f"{prefix}{i:05d}" for i in range(len(classes))]
        for id_, c in zip(ids, classes.tolist(), strict=True):
            img, _ = spec.render(c, rng, size, bool(rng.random() < spec.outline_rate))
            _save_png(img, folder / f"{id_}.png")
        rows = [f"{i},{CLASS_NAMES[lab]}" for i, lab in zip(ids, labels.tolist(), strict=True)]
        if split == "train":
            _write_lines(out / "train.csv", ["id,label", *rows])
        else:
            _write_lines(out / "test_labels.csv", ["id,label", *rows])
            _write_lines(
                out / "sample_submission.csv", ["id,label", *(f"{i},{CLASS_NAMES[0]}" for i in ids)]
            )
    return out


def _noisy(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Recorded labels: the drawn class, except ~5% moved to a random other class."""
    flip = rng.random(len(classes)) < LABEL_NOISE
    shift = rng.integers(1, len(CLASS_NAMES), len(classes))
    return np.where(flip, (classes + shift) % len(CLASS_NAMES), classes)


def _save_png(img: Image.Image, path: Path) -> None:
    # compress_level 1: the default (6) costs several times the encode time for ~10% less disk
    img.save(path, compress_level=1)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
