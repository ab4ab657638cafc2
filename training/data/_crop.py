"""Silhouette crop: the artwork's black outline gives the Pokémon's bounding box."""

from __future__ import annotations

import numpy as np

__all__ = ["DARK_MAX", "MIN_OUTLINE_FRACTION", "silhouette_box"]

#: a pixel belongs to the outline when max(R, G, B) is below this (and it is not transparent)
DARK_MAX = 40
#: fewer outline pixels than this fraction of the image means "no outline": keep it whole
MIN_OUTLINE_FRACTION = 0.002

Box = tuple[int, int, int, int]


def silhouette_box(rgba: np.ndarray, pad: float = 0.0) -> Box | None:
    """Bounding box ``(left, top, right, bottom)`` (right/bottom exclusive, PIL's convention)
    of the near-black outline pixels of an H×W×4 uint8 image, grown by ``pad`` × the box's
    width/height on each side and clipped to the image; None when there is no outline."""
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"silhouette_box expects H×W×4 RGBA, got shape {rgba.shape}")
    h, w = rgba.shape[:2]
    dark = (rgba[..., :3].max(axis=2) < DARK_MAX) & (rgba[..., 3] > 0)
    if dark.sum() < max(1.0, MIN_OUTLINE_FRACTION * h * w):
        return None
    rows = np.flatnonzero(dark.any(axis=1))
    cols = np.flatnonzero(dark.any(axis=0))
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(cols[0]), int(cols[-1]) + 1
    if pad > 0:
        px = round(pad * (right - left))
        py = round(pad * (bottom - top))
        left, right = max(0, left - px), min(w, right + px)
        top, bottom = max(0, top - py), min(h, bottom + py)
    return left, top, right, bottom
