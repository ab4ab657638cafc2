"""One image → one preprocessed uint8 H×W×C array (crop → composite/keep alpha → resize)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from training.data._crop import silhouette_box
from training.data._preprocessing import Preprocessing
from training.data._sources import SourceItem

__all__ = ["Decoded", "decode_item", "preprocess_image"]


@dataclass
class Decoded:
    pixels: np.ndarray  # H×W×C uint8
    crop_fell_back: bool  # silhouette crop asked for, but no outline found
    # any pixel not fully opaque: composited images then show the background colour, which
    # augmentation must fill with too (an opaque photo keeps black fill)
    transparent: bool = False


def preprocess_image(img: Image.Image, prep: Preprocessing) -> Decoded:
    # RGBA first: palette/greyscale/transparency-keyed PNGs all become the same 4 channels
    rgba = img.convert("RGBA")
    lowest_alpha, _ = rgba.getchannel("A").getextrema()
    transparent = float(lowest_alpha) < 255  # type: ignore[arg-type]
    fell_back = False
    if prep.crop == "silhouette":
        box = silhouette_box(np.asarray(rgba), pad=prep.crop_pad)
        if box is None:
            fell_back = True
        else:
            rgba = rgba.crop(box)
    if prep.rgba == "composite":
        bg = Image.new("RGBA", rgba.size, (*prep.background, 255))
        out = Image.alpha_composite(bg, rgba).convert("RGB")
    else:
        out = rgba
    size = (prep.image_size, prep.image_size)
    if out.size != size:
        # Pillow's resize filters are antialiased when shrinking and premultiply alpha for
        # RGBA, so transparent pixels' colours do not bleed into the edges
        out = out.resize(size, Image.Resampling.BILINEAR)
    return Decoded(np.asarray(out, dtype=np.uint8), fell_back, transparent)


def decode_item(item: SourceItem, prep: Preprocessing) -> Decoded:
    if item.read is not None:
        return preprocess_image(item.read(), prep)
    with Image.open(item.path) as img:
        img.load()  # truncated/corrupt files fail here, inside the caller's try
        return preprocess_image(img, prep)
