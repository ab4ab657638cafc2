"""Batch augmentation on float images in [0, 1], *before* normalisation.

Contract with the loop::

    x = batch_uint8.float() / 255          # N×C×H×W in [0, 1], on the training device
    x, y = augment(x, y)                   # geometry + colour per sample, then MixUp/CutMix
    x = normalize_batch(x, prep)           # (x - mean) / std

Colour jitter clamps to [0, 1] and mixes channels by luminance, which is only meaningful on
unnormalised data; alpha (the 4th channel of RGBA inputs) moves with the geometry but is
never colour-jittered.

Per-sample randomness: a torchvision v2 transform called on a batch tensor draws *one* set
of random parameters for the whole batch (every image flipped, or none; all rotated by the
same angle), which augments far less than intended.  So the geometric and colour transforms
run per sample.  Measured on 2 CPU cores with hflip+rotation+translate+scale+jitter: the
per-sample loop does ~3,800 img/s at 64×64 RGBA (batch 16 or 128) and ~1,000 img/s at
224×224 RGB; one draw per batch was 2–7× faster at 64×64 and no faster at 224×224.  That is
about 1 s per 3,600-image epoch, small next to the model's forward/backward, so exact
per-sample randomness wins over chunking (which shares parameters within each chunk).
MixUp/CutMix are batch operations by design (each sample mixes with another of the batch)
and run once per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from training.config import AugmentConfig

__all__ = ["BatchAugment"]


class BatchAugment:
    """``(x float N×C×H×W in [0, 1], y int64 N) -> (x, y)``; ``y`` becomes soft float targets
    N×num_classes when MixUp or CutMix is on.  Works on any device (uses ``x``'s).

    ``fill`` is the value per channel for pixels moved in from outside the image by the
    affine transform: pass :attr:`Preprocessing.fill` (background colour, or transparent).
    """

    def __init__(
        self,
        cfg: AugmentConfig,
        num_classes: int,
        *,
        fill: float | Sequence[float] = 0.0,
    ) -> None:
        self.cfg = cfg
        self.num_classes = num_classes
        fill_list = [float(fill)] if isinstance(fill, (int, float)) else [float(f) for f in fill]
        geometric: list[v2.Transform] = []
        if cfg.hflip > 0:
            geometric.append(v2.RandomHorizontalFlip(p=cfg.hflip))
        if cfg.vflip > 0:
            geometric.append(v2.RandomVerticalFlip(p=cfg.vflip))
        if cfg.rotation > 0 or cfg.translate > 0 or cfg.scale > 0:
            geometric.append(
                v2.RandomAffine(
                    degrees=cfg.rotation,
                    translate=(cfg.translate, cfg.translate) if cfg.translate > 0 else None,
                    scale=(1 - cfg.scale, 1 + cfg.scale) if cfg.scale > 0 else None,
                    interpolation=v2.InterpolationMode.BILINEAR,
                    fill=fill_list if len(fill_list) > 1 else fill_list[0],
                )
            )
        self.geometric: v2.Transform | None = v2.Compose(geometric) if geometric else None
        s = cfg.color_jitter
        self.color: v2.Transform | None = (
            v2.ColorJitter(brightness=s, contrast=s, saturation=s) if s > 0 else None
        )
        mixers: list[v2.Transform] = []
        if cfg.mixup_alpha > 0:
            mixers.append(v2.MixUp(alpha=cfg.mixup_alpha, num_classes=num_classes))
        if cfg.cutmix_alpha > 0:
            mixers.append(v2.CutMix(alpha=cfg.cutmix_alpha, num_classes=num_classes))
        self.mix: v2.Transform | None = (
            None if not mixers else mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)
        )

    @property
    def enabled(self) -> bool:
        """False when every strength is 0: the loop can skip the call."""
        return any(t is not None for t in (self.geometric, self.color, self.mix))

    @property
    def soft_targets(self) -> bool:
        """Whether the returned labels are N×num_classes probabilities."""
        return self.mix is not None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or not x.is_floating_point():
            raise ValueError(
                f"BatchAugment expects float N×C×H×W in [0, 1], got {x.dtype} {tuple(x.shape)}"
            )
        if self.geometric is not None or self.color is not None:
            x = torch.stack([self._one(img) for img in x])
        if self.mix is not None and len(x) > 1:
            x, y = self.mix(x, y.long())
        elif self.mix is not None:  # a batch of one has nobody to mix with: still soft targets
            y = torch.nn.functional.one_hot(y.long(), self.num_classes).to(x.dtype)
        return x, y

    def _one(self, img: torch.Tensor) -> torch.Tensor:
        if self.geometric is not None:
            img = self.geometric(img)
        if self.color is not None:
            if img.shape[0] == 4:
                img = torch.cat([self.color(img[:3]), img[3:]])
            else:
                img = self.color(img)
        return img
