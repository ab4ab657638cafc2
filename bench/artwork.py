"""Kaggle-layout sets built from the real Pokémon artwork: one seeded builder that every
quality benchmark reuses (issue 12 item 4, issue 13 item 5).

``build(kind, out)`` writes the same files as ``poketune make-data``::

    out/train.csv              id,label            (label = the Pokémon's type1)
    out/train/<id>.png
    out/test/<id>.png
    out/sample_submission.csv  id,label            (placeholder label)
    out/test_labels.csv        id,label            (the answers, for scoring)

plus ``images.csv`` (id, split, name, label, variant: which Pokémon each image shows, for
checks and error analysis; no loader reads it) and ``build.json`` (the parameters, the
counts and the build time; written last, so it marks a complete set that a later call with
the same parameters reuses instead of rebuilding).

Kinds:

* ``task1``: each Pokémon of the nine task types drawn ``variants`` times (scaled, maybe
  flipped, at a random offset) as 64×64 RGBA with a near-black 2-px silhouette outline on a
  transparent background, so the task1 preset's silhouette crop and composite-over-white
  apply.  Split by image, 80/20 per class.
* ``task2``: the same sprites on an opaque noisy coloured background.  Split by image.
* ``task3``: larger sprites (160 px output, no outline) composited onto random crops of
  real photographs bundled with scikit-image, with random scale, position and flips.  The
  test split is by Pokémon: no Pokémon has images in both splits.

The artwork's white background becomes alpha: near-white pixels connected to the image
border are background; white inside the sprite (eyes, bellies) stays.  The artwork itself is
never copied anywhere but into the rendered images.  Every image's randomness comes from
``(seed, kind, Pokémon, variant)``, so the same seed writes byte-identical files and a
Pokémon's variants do not depend on which other Pokémon a subset keeps.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "DEFAULT_ARTWORK",
    "KINDS",
    "TYPES",
    "ArtworkMissingError",
    "BuildParams",
    "Pokemon",
    "build",
    "build_info",
    "cut_out",
    "find_artwork",
    "load_pokemon",
]

REPO = Path(__file__).resolve().parents[1]
#: where the shared artwork lives next to a checkout (never inside it: it is not ours)
DEFAULT_ARTWORK = REPO.parent / "shared" / "data" / "pokemon-artwork"
#: the nine types of the competitions, in the sorted order the loaders use for class indices
TYPES = ("Bug", "Fighting", "Fire", "Grass", "Ground", "Normal", "Poison", "Rock", "Water")
KINDS = ("task1", "task2", "task3")

_DEFAULT_SIZE = {"task1": 64, "task2": 64, "task3": 160}
# task1/task2 as the issue-13 set (~6 images per Pokémon, ~2700 train / ~680 test);
# task3: 2 per Pokémon keeps a CPU epoch of Lite0 fine-tuning at ~15-20 s (issue 12)
_DEFAULT_VARIANTS = {"task1": 6, "task2": 6, "task3": 2}
# task1/task2 hold out 20 % of the images; task3 holds out 12 % of the Pokémon (~68 of 562,
# ~136 test images as in issue 12's measured set)
_DEFAULT_TEST_FRACTION = {"task1": 0.2, "task2": 0.2, "task3": 0.12}

#: a pixel is "near-white" when all of R, G, B are at least this; the artwork's background is
#: pure white and its anti-aliased rim fades into it, so a little below 255 catches the rim
WHITE_MIN = 235
#: the outline is drawn below training.data's silhouette threshold (max(R,G,B) < 40)
_OUTLINE_MAX = 25
# task2 backgrounds: nothing but the outline may be near-black (the silhouette crop's cue)
_BG_MIN = 48

# scikit-image's bundled photographs (no download needed); grey ones are used as grey RGB
_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
    "stereo_motorcycle", "coins", "camera", "grass", "gravel", "brick", "moon", "clock",
)  # fmt: skip


class ArtworkMissingError(FileNotFoundError):
    """The shared artwork folder is not there (a user's machine): callers skip with this
    message."""


@dataclass(frozen=True)
class Pokemon:
    index: int  # position in the sorted list of all usable Pokémon: seeds its images
    name: str
    label: str  # type1
    path: Path


@dataclass(frozen=True)
class BuildParams:
    """Everything that changes the written files (``build.json`` records it)."""

    kind: str
    seed: int
    variants: int
    size: int
    test_fraction: float
    pokemon: int | None  # a seeded, class-stratified subset of about this many; None = all
    test_variants: int  # task3: images per test Pokémon
    artwork_fingerprint: str

    def key(self) -> str:
        """A short hash of the parameters: names a cache folder."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


# ---------------------------------------------------------------------------------- artwork
def find_artwork(artwork: str | Path | None = None) -> Path:
    """The artwork folder (``artwork`` or :data:`DEFAULT_ARTWORK`); raises
    :class:`ArtworkMissingError` with the reason when it is not usable."""
    root = Path(artwork).expanduser() if artwork is not None else DEFAULT_ARTWORK
    if not (root / "labels.csv").is_file() or not (root / "images").is_dir():
        raise ArtworkMissingError(
            f"the Pokémon artwork is not at {root} (needs labels.csv and images/); "
            "it is shared data that is never copied into the repository: pass --artwork DIR"
        )
    return root


def load_pokemon(artwork: str | Path | None = None) -> list[Pokemon]:
    """Every Pokémon whose type1 is one of :data:`TYPES` and whose image exists, sorted by
    name (labels.csv lists 563; ``minior-meteor``'s image is missing, which leaves 562)."""
    import csv

    root = find_artwork(artwork)
    with (root / "labels.csv").open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["type1"] in TYPES]
    found = [(r["name"], r["type1"], root / r["image"]) for r in rows]
    usable = sorted((n, t, p) for n, t, p in found if p.is_file())
    return [Pokemon(i, n, t, p) for i, (n, t, p) in enumerate(usable)]


def _fingerprint(pokemon: Sequence[Pokemon]) -> str:
    # names, labels and file sizes: cheap, and it changes whenever the artwork does in practice
    h = hashlib.sha256()
    for p in pokemon:
        h.update(f"{p.name},{p.label},{p.path.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def cut_out(path: Path, white_min: int = WHITE_MIN) -> Image.Image:
    """The artwork as RGBA cropped to the Pokémon: near-white pixels connected to the border
    become transparent (a plain threshold would also punch out white eyes and highlights)."""
    from scipy import ndimage

    rgb = np.asarray(Image.open(path).convert("RGB"))
    near_white = rgb.min(axis=2) >= white_min
    regions, _ = ndimage.label(near_white)
    edge = np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]])
    background = np.isin(regions, np.unique(edge[edge > 0]))
    # the anti-aliased rim (light, just inside the white) would show as a pale halo on a
    # photo: peel one pixel of it off, but never the artwork's dark line art
    background |= ndimage.binary_dilation(background) & (rgb.min(axis=2) >= 180)
    alpha = np.where(background, 0, 255).astype(np.uint8)
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    box = rgba.getchannel("A").getbbox()
    return rgba.crop(box) if box else rgba


# ---------------------------------------------------------------------------------- drawing
def _place(
    sprite: Image.Image, size: int, rng: np.random.Generator, scale: tuple[float, float], margin: int
) -> tuple[np.ndarray, np.ndarray]:
    """The sprite scaled so its longer side is ``scale`` × the canvas, flipped half of the
    time, at a random offset: returns the canvas-sized RGB and alpha (0..1) arrays."""
    w, h = sprite.size
    room = size - 2 * margin
    f = rng.uniform(*scale) * room / max(w, h)
    nw, nh = max(4, min(room, round(w * f))), max(4, min(room, round(h * f)))
    # Pillow resizes RGBA with premultiplied alpha: no white fringe bleeds in from the background
    spr = sprite.resize((nw, nh), Image.Resampling.LANCZOS)
    if rng.random() < 0.5:
        spr = spr.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    x = int(rng.integers(margin, size - margin - nw + 1))
    y = int(rng.integers(margin, size - margin - nh + 1))
    arr = np.asarray(spr, dtype=np.float32)
    rgb = np.zeros((size, size, 3), np.float32)
    alpha = np.zeros((size, size), np.float32)
    rgb[y : y + nh, x : x + nw] = arr[..., :3]
    alpha[y : y + nh, x : x + nw] = arr[..., 3] / 255
    return rgb, alpha


def _noisy_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """task2's background: a flat colour, a few coloured blobs, pixel noise (as make-data)."""
    from PIL import ImageDraw

    bg = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(90, 231, 3)))
    draw = ImageDraw.Draw(bg)
    for _ in range(int(rng.integers(1, 5))):
        x0, y0 = rng.uniform(-0.2, 0.9, 2) * size
        bw, bh = rng.uniform(0.1, 0.4, 2) * size
        draw.ellipse((x0, y0, x0 + bw, y0 + bh), fill=tuple(int(c) for c in rng.integers(60, 256, 3)))
    noise = rng.standard_normal((size, size, 3), dtype=np.float32) * np.float32(18)
    return np.asarray(bg, dtype=np.float32) + noise


def _render_outlined(
    sprite: Image.Image, size: int, rng: np.random.Generator, *, opaque: bool
) -> Image.Image:
    """task1 (transparent) / task2 (opaque, noisy background): sprite with a black outline."""
    from scipy import ndimage

    rgb, alpha = _place(sprite, size, rng, scale=(0.55, 1.0), margin=2)
    inside = alpha > 0.5  # hard edge: the outline covers the anti-aliased rim
    # 2 px like make-data: the sprite's own rim pixel plus one pixel outside it
    outline = (ndimage.binary_dilation(inside) & ~inside) | (inside & ~ndimage.binary_erosion(inside))
    drawn = inside | outline
    if opaque:
        pixels = np.where(inside[..., None], rgb, _noisy_background(size, rng))
        pixels = np.where(inside[..., None], pixels, np.clip(pixels, _BG_MIN, 255))
    else:
        pixels = np.where(inside[..., None], rgb, 0.0)
    pixels[outline] = rng.uniform(0, _OUTLINE_MAX, (int(outline.sum()), 1))
    out_alpha = np.full((size, size), 255, np.uint8) if opaque else np.where(drawn, 255, 0)
    if not opaque:
        pixels[~drawn] = 0  # transparent black, as make-data writes transparent pixels
    rgba = np.dstack([np.clip(pixels, 0, 255).astype(np.uint8), out_alpha.astype(np.uint8)])
    return Image.fromarray(rgba, "RGBA")


def _photos() -> list[np.ndarray]:
    """scikit-image's bundled photographs as H×W×3 uint8 (grey ones as grey RGB)."""
    try:
        import skimage.data as skdata
    except ImportError as exc:  # a dev extra: the task3 set cannot be built without it
        raise ArtworkMissingError(
            "task3 backgrounds are scikit-image's bundled photos: install scikit-image "
            "(pip install -e '.[dev]')"
        ) from exc
    photos = []
    for name in _PHOTOS:
        try:
            img = getattr(skdata, name)()
        except (AttributeError, ImportError, OSError, ValueError):
            continue  # a photo this scikit-image lacks or would download: skip it
        img = img[0] if isinstance(img, tuple) else img  # stereo_motorcycle: (left, right, disp)
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        photos.append(np.ascontiguousarray(img[..., :3].astype(np.uint8)))
    if len(photos) < 3:
        raise ArtworkMissingError(f"scikit-image offers only {len(photos)} bundled photos here")
    return photos


def _render_photo(
    sprite: Image.Image, size: int, rng: np.random.Generator, photos: Sequence[np.ndarray]
) -> Image.Image:
    """task3: the sprite composited (soft alpha, no outline) onto a random photo crop."""
    photo = photos[int(rng.integers(len(photos)))]
    ph, pw = photo.shape[:2]
    side = int(rng.uniform(0.35, 1.0) * min(ph, pw))
    top, left = int(rng.integers(0, ph - side + 1)), int(rng.integers(0, pw - side + 1))
    crop = Image.fromarray(photo[top : top + side, left : left + side])
    crop = crop.resize((size, size), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    rgb, alpha = _place(sprite, size, rng, scale=(0.4, 0.9), margin=0)
    a = alpha[..., None]
    pixels = rgb * a + np.asarray(crop, dtype=np.float32) * (1 - a)
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")


# ---------------------------------------------------------------------------------- splits
def _subset(pokemon: Sequence[Pokemon], n: int | None, seed: int) -> list[Pokemon]:
    """About ``n`` Pokémon, each class in proportion but at least 3 (so every class has
    train, validation and test images even in the quick sets)."""
    if n is None or n >= len(pokemon):
        return list(pokemon)
    rng = np.random.default_rng([seed, 7919])
    chosen: list[Pokemon] = []
    for t in TYPES:
        members = [p for p in pokemon if p.label == t]
        take = min(len(members), max(3, round(n * len(members) / len(pokemon))))
        order = rng.permutation(len(members))[:take]
        chosen += [members[i] for i in sorted(order)]
    return sorted(chosen, key=lambda p: p.index)


def _per_class_holdout(labels: Sequence[str], fraction: float, rng: np.random.Generator) -> set[int]:
    """Indices held out: ``fraction`` of each class (at least 1 where the class has 2+)."""
    held: set[int] = set()
    for t in TYPES:
        idx = [i for i, lab in enumerate(labels) if lab == t]
        if len(idx) < 2:
            continue
        k = min(len(idx) - 1, max(1, round(fraction * len(idx))))
        held.update(int(i) for i in rng.permutation(idx)[:k])
    return held


# ---------------------------------------------------------------------------------- build
def _complete(out: Path, params: BuildParams) -> bool:
    try:
        doc = json.loads((out / "build.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(doc.get("params") == asdict(params))


def build(
    kind: str,
    out: str | Path,
    *,
    artwork: str | Path | None = None,
    seed: int = 0,
    variants: int | None = None,
    size: int | None = None,
    test_fraction: float | None = None,
    pokemon: int | None = None,
    test_variants: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the ``kind`` set (task1 | task2 | task3) to ``out`` and return ``out``.

    ``variants`` images per Pokémon (default 6 for task1/task2, 2 for task3), ``size`` px
    (64, or 160 for task3), ``test_fraction`` of the images (task1/task2, default 0.2) or of
    the Pokémon (task3, default 0.12) per class, ``pokemon``: a seeded class-stratified
    subset of about that many (quick sets), ``test_variants``: task3's images per test
    Pokémon (default ``variants``).  A complete set with the same parameters in ``out`` is
    reused as it is; a different one is replaced only with ``overwrite=True``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    everyone = load_pokemon(artwork)
    params = BuildParams(
        kind=kind,
        seed=seed,
        variants=variants or _DEFAULT_VARIANTS[kind],
        size=size or _DEFAULT_SIZE[kind],
        test_fraction=_DEFAULT_TEST_FRACTION[kind] if test_fraction is None else test_fraction,
        pokemon=pokemon,
        test_variants=(test_variants or variants or _DEFAULT_VARIANTS[kind]) if kind == "task3" else 0,
        artwork_fingerprint=_fingerprint(everyone),
    )
    if params.variants < 1 or params.size < 16 or not 0 < params.test_fraction < 1:
        raise ValueError(f"bad build parameters: {params}")
    out = Path(out)
    if _complete(out, params):
        return out
    existing = [p for p in (out / "train", out / "test", out / "train.csv") if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out} holds another dataset ({', '.join(p.name for p in existing)}); "
            "pass overwrite=True to replace it"
        )
    for name in ("train", "test"):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / "build.json").unlink(missing_ok=True)

    t0 = time.perf_counter()
    chosen = _subset(everyone, pokemon, seed)
    kind_index = KINDS.index(kind)
    # (pokemon, variant, split) of every image, in a fixed order before ids are drawn
    split_rng = np.random.default_rng([seed, kind_index, 104729])
    plan: list[tuple[Pokemon, int, str]] = []
    if kind == "task3":  # by Pokémon: the test Pokémon are never seen in training
        held = _per_class_holdout([p.label for p in chosen], params.test_fraction, split_rng)
        for i, p in enumerate(chosen):
            n = params.test_variants if i in held else params.variants
            plan += [(p, v, "test" if i in held else "train") for v in range(n)]
    else:  # by image: a Pokémon's other variants may sit in the other split (as issue 13's set)
        images = [(p, v) for p in chosen for v in range(params.variants)]
        held = _per_class_holdout([p.label for p, _ in images], params.test_fraction, split_rng)
        plan = [(p, v, "test" if i in held else "train") for i, (p, v) in enumerate(images)]

    photos = _photos() if kind == "task3" else []
    sprites: dict[int, Image.Image] = {}
    rows: dict[str, list[tuple[str, Pokemon, int]]] = {"train": [], "test": []}
    for split in ("train", "test"):
        items = [(p, v) for p, v, s in plan if s == split]
        order = split_rng.permutation(len(items))  # ids do not give the Pokémon away
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        prefix = "tr" if split == "train" else "te"
        for n, j in enumerate(order.tolist()):
            p, v = items[j]
            if p.index not in sprites:  # each artwork is decoded once per build
                sprites[p.index] = cut_out(p.path)
            sprite = sprites[p.index]
            rng = np.random.default_rng([seed, kind_index, p.index, v])
            if kind == "task3":
                img = _render_photo(sprite, params.size, rng, photos)
            else:
                img = _render_outlined(sprite, params.size, rng, opaque=kind == "task2")
            id_ = f"{prefix}{n:05d}"
            # compress_level 1, as make-data: the default costs several times the encode time
            img.save(folder / f"{id_}.png", compress_level=1)
            rows[split].append((id_, p, v))

    def lines(split: str) -> list[str]:
        return ["id,label", *(f"{i},{p.label}" for i, p, _ in rows[split])]

    _write(out / "train.csv", lines("train"))
    _write(out / "test_labels.csv", lines("test"))
    _write(out / "sample_submission.csv", ["id,label", *(f"{i},{TYPES[0]}" for i, _, _ in rows["test"])])
    _write(
        out / "images.csv",
        ["id,split,name,label,variant"]
        + [f"{i},{s},{p.name},{p.label},{v}" for s in ("train", "test") for i, p, v in rows[s]],
    )
    counts: dict[str, Any] = {
        s: {"images": len(rows[s]), "pokemon": len({p.index for _, p, _ in rows[s]})}
        for s in ("train", "test")
    }
    for s in ("train", "test"):
        counts[s]["per_class"] = {t: sum(p.label == t for _, p, _ in rows[s]) for t in TYPES}
    doc = {"params": asdict(params), "counts": counts, "build_s": round(time.perf_counter() - t0, 2)}
    (out / "build.json").write_text(json.dumps(doc, indent=2) + "\n")
    return out


def build_info(root: str | Path) -> dict[str, Any]:
    """The ``build.json`` of a built set: parameters, counts, build time."""
    info: dict[str, Any] = json.loads((Path(root) / "build.json").read_text())
    return info


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":  # python -m bench.artwork KIND OUT [--seed N] [--pokemon N] ...
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench.artwork", description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=KINDS)
    ap.add_argument("out")
    ap.add_argument("--artwork")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", type=int)
    ap.add_argument("--size", type=int)
    ap.add_argument("--pokemon", type=int)
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args()
    root = build(
        a.kind, a.out, artwork=a.artwork, seed=a.seed, variants=a.variants, size=a.size,
        pokemon=a.pokemon, overwrite=a.overwrite,
    )  # fmt: skip
    print(json.dumps({k: v for k, v in build_info(root).items() if k != "params"}, indent=2))
