"""Decode-time preprocessing: stored in every checkpoint so submission re-applies it exactly."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from training.data._errors import DataError

if TYPE_CHECKING:
    from training.config import DataConfig

__all__ = ["Preprocessing"]

CROPS = ("none", "silhouette")
RGBA_MODES = ("composite", "keep")
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # (mean, std) for RGB; alpha (4th channel) always gets 0.5/0.5
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # EfficientNet-Lite's TF preprocessing, (x - 127) / 128 on 0..255 pixels
    "lite": ((127 / 255,) * 3, (128 / 255,) * 3),
}


@dataclass(frozen=True)
class Preprocessing:
    image_size: int
    crop: str = "none"  # none | silhouette
    rgba: str = "composite"  # composite (over `background` → RGB) | keep (4 channels)
    background: tuple[int, int, int] = (255, 255, 255)
    crop_pad: float = 0.05  # silhouette box padding, fraction of the box size per side
    normalize: str = "half"  # half | imagenet | lite (applied per batch, not at decode time)

    def __post_init__(self) -> None:
        def bad(name: str, msg: str) -> DataError:
            return DataError(f"Preprocessing.{name}: {msg} (got {getattr(self, name)!r})")

        if not isinstance(self.image_size, int) or self.image_size < 1:
            raise bad("image_size", "must be a positive integer")
        if self.crop not in CROPS:
            raise bad("crop", f"valid: {', '.join(CROPS)}")
        if self.rgba not in RGBA_MODES:
            raise bad("rgba", f"valid: {', '.join(RGBA_MODES)}")
        if self.normalize not in NORMALIZATIONS:
            raise bad("normalize", f"valid: {', '.join(NORMALIZATIONS)}")
        if not 0 <= self.crop_pad < 1:
            raise bad("crop_pad", "must be in [0, 1)")
        bg = tuple(int(v) for v in self.background)
        if len(bg) != 3 or not all(0 <= v <= 255 for v in bg):
            raise bad("background", "needs 3 integers in 0..255")
        # lists from JSON/config become a hashable tuple so the dataclass stays frozen-safe
        object.__setattr__(self, "background", bg)

    # ------------------------------------------------------------------ derived
    @property
    def channels(self) -> int:
        return 4 if self.rgba == "keep" else 3

    @property
    def mean(self) -> tuple[float, ...]:
        return NORMALIZATIONS[self.normalize][0] + (0.5,) * (self.channels - 3)

    @property
    def std(self) -> tuple[float, ...]:
        return NORMALIZATIONS[self.normalize][1] + (0.5,) * (self.channels - 3)

    @property
    def fill(self) -> tuple[float, ...]:
        """Per-channel fill in [0, 1] for pixels that augmentation moves in from outside:
        the background colour for composited images, transparent black for RGBA."""
        if self.rgba == "keep":
            return (0.0,) * 4
        return tuple(v / 255 for v in self.background)

    # ------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["background"] = list(self.background)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(
                f"Preprocessing.from_dict: unknown keys {unknown}; valid: {sorted(known)}"
            )
        if "image_size" not in d:
            raise DataError("Preprocessing.from_dict: missing key 'image_size'")
        kw = dict(d)
        if "background" in kw:
            kw["background"] = tuple(kw["background"])
        return cls(**kw)

    @classmethod
    def from_config(cls, cfg: DataConfig) -> Preprocessing:
        return cls(
            image_size=int(cfg.image_size),
            crop=cfg.crop,
            rgba=cfg.rgba,
            # a wrong length is rejected by __post_init__ with the field named
            background=cast(tuple[int, int, int], tuple(int(v) for v in cfg.background)),
            normalize=cfg.normalize,
        )

    def cache_key(self) -> str:
        """Hash of the parameters that change decoded pixels.

        ``normalize`` is applied per batch, so it is left out; so are the background when
        alpha is kept and the crop padding when nothing is cropped — changing those must not
        force a re-decode.
        """
        key: dict[str, Any] = {"image_size": self.image_size, "crop": self.crop, "rgba": self.rgba}
        if self.rgba == "composite":
            key["background"] = list(self.background)
        if self.crop != "none":
            key["crop_pad"] = self.crop_pad
        blob = json.dumps(key, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
