"""Batch augmentation on float images in [0, 1], *before* normalisation.

Contract with the loop::

    x = batch_uint8.float() / 255          # N×C×H×W in [0, 1], on the training device
    x, y = augment(x, y)                   # geometry + colour per sample, then MixUp/CutMix
    x = normalize_batch(x, prep)           # (x - mean) / std

Colour jitter clamps to [0, 1] and mixes channels by luminance, which is only meaningful on
unnormalised data; alpha (the 4th channel of RGBA inputs) moves with the geometry but is
never colour-jittered.

Per-sample randomness, batched: a torchvision v2 transform called on a batch tensor draws
*one* set of random parameters for the whole batch (every image flipped, or none; all
rotated by the same angle), which augments far less than intended, and looping over the
images instead costs several small host→device copies and ~20 kernel launches per image
on a GPU (and drops channels_last in the ``torch.stack``).  So every random parameter is
drawn here as a length-N tensor on the batch's device and applied in one batched op:

* flips: ``torch.where`` with a per-sample mask;
* rotation / translation / scale: one N×2×3 ``affine_grid`` + bilinear ``grid_sample``
  (the inverse of torchvision's ``RandomAffine`` matrix per sample; translations are not
  rounded to whole pixels);
* colour jitter (brightness, contrast, saturation in a random order per sample, as
  ``ColorJitter`` does): the three adjustments as batched blends, selected per sample.

Nothing here reads a tensor back to the host, so the GPU never waits on Python.  On the
CPU too it is faster than the per-image loop it replaced: 64 RGBA images of 64×64, one
thread, CPU time per batch: hflip+rotation+translate+scale+jitter 24 → 11 ms, the geometry
alone 13 → 4 ms, jitter alone 7 → 4.7 ms.
MixUp/CutMix are batch operations by design (each sample mixes with another of the batch)
and run once per batch through torchvision.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F
from torchvision.transforms import v2

from training.config import AugmentConfig

__all__ = ["BatchAugment", "affine_batch", "color_jitter_batch"]

# ITU-R 601 luma, the weights torchvision's rgb_to_grayscale uses
_LUMA = (0.2989, 0.587, 0.114)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return (
        torch.channels_last
        if x.ndim == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format
    )


def affine_batch(
    x: torch.Tensor,
    angle_deg: torch.Tensor,
    translate_px: torch.Tensor,
    scale: torch.Tensor,
    fill: torch.Tensor,
) -> torch.Tensor:
    """Rotate each image of ``x`` (N×C×H×W) by ``angle_deg[n]`` counter-clockwise about its
    centre, scale it by ``scale[n]`` and shift it by ``translate_px[n] = (dx, dy)`` pixels,
    bilinearly; pixels from outside the frame take ``fill`` (C values, or one for all).

    ``grid_sample`` pads with zeros, so the image is sampled as ``x - fill`` and ``fill``
    added back: bilinear interpolation against a constant ``fill`` border, exactly.
    """
    n, _, h, w = x.shape
    a = torch.deg2rad(angle_deg.to(x.dtype))
    cos, sin = torch.cos(a), torch.sin(a)
    inv_s = 1.0 / scale.to(x.dtype)
    tx, ty = translate_px[:, 0].to(x.dtype), translate_px[:, 1].to(x.dtype)
    # output → input in centred pixel coordinates (y down): p_in = R(-a)·(p_out - t) / s,
    # then in affine_grid's normalised coordinates (±1 at the frame's edges): D⁻¹·…·D,
    # D = diag(W/2, H/2), so non-square images rotate without shearing
    theta = torch.stack(
        [
            torch.stack(
                [cos * inv_s, -sin * (h / w) * inv_s, -(cos * tx - sin * ty) * inv_s * (2 / w)], -1
            ),
            torch.stack(
                [sin * (w / h) * inv_s, cos * inv_s, -(sin * tx + cos * ty) * inv_s * (2 / h)], -1
            ),
        ],
        1,
    )
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    fill = fill.to(device=x.device, dtype=x.dtype).reshape(1, -1, 1, 1)
    out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out + fill).contiguous(memory_format=_memory_format(x))


def _gray(rgb: torch.Tensor) -> torch.Tensor:
    if rgb.shape[1] != 3:
        return rgb.mean(1, keepdim=True)
    r, g, b = rgb.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def color_jitter_batch(
    rgb: torch.Tensor, factors: torch.Tensor, order: torch.Tensor
) -> torch.Tensor:
    """torchvision's brightness / contrast / saturation adjustments on N×3×H×W ``rgb`` in
    [0, 1], with per-sample ``factors`` (3×N: brightness, contrast, saturation) applied in
    the per-sample ``order`` (N×3, a permutation of 0, 1, 2 per row)."""
    n = rgb.shape[0]
    for slot in range(3):
        op = order[:, slot]
        # every adjustment is a blend clamp(f·rgb + (1-f)·target) with target 0 (brightness),
        # the image's mean grey (contrast) or its per-pixel grey (saturation): pick the
        # sample's factor and target, then one blend over the batch
        f = factors.to(rgb.dtype).gather(0, op.view(1, n)).view(n, 1, 1, 1)
        gray = _gray(rgb)
        mean = gray.mean(dim=(1, 2, 3), keepdim=True)
        sel = op.view(n, 1, 1, 1)
        target = torch.where(sel == 0, 0.0, torch.where(sel == 1, mean, gray))
        rgb = torch.addcmul((1 - f) * target, f, rgb).clamp_(0, 1)
    return rgb


class BatchAugment:
    """``(x float N×C×H×W in [0, 1], y int64 N) -> (x, y)``; ``y`` becomes soft float targets
    N×num_classes when MixUp or CutMix is on.  Works on any device (uses ``x``'s) and keeps
    ``x``'s memory format.

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
        self.fill = torch.tensor(fill_list)
        # one copy per device: moving the CPU fill to the GPU every batch would be a copy each
        self._fill_on: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self.affine = cfg.rotation > 0 or cfg.translate > 0 or cfg.scale > 0
        self.geometric = cfg.hflip > 0 or cfg.vflip > 0 or self.affine
        self.color = cfg.color_jitter > 0
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
        return self.geometric or self.color or self.mix is not None

    @property
    def soft_targets(self) -> bool:
        """Whether the returned labels are N×num_classes probabilities."""
        return self.mix is not None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or not x.is_floating_point():
            raise ValueError(
                f"BatchAugment expects float N×C×H×W in [0, 1], got {x.dtype} {tuple(x.shape)}"
            )
        fmt = _memory_format(x)
        if self.geometric:
            x = self._geometry(x)
        if self.color:
            x = self._color(x)
        if self.mix is not None and len(x) > 1:
            x, y = self.mix(x, y.long())
        elif self.mix is not None:  # a batch of one has nobody to mix with: still soft targets
            y = torch.nn.functional.one_hot(y.long(), self.num_classes).to(x.dtype)
        return x.contiguous(memory_format=fmt), y

    def _fill_for(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        if key not in self._fill_on:
            fill = self.fill.to(device=x.device, dtype=x.dtype)
            if fill.numel() not in (1, x.shape[1]):
                raise ValueError(
                    f"BatchAugment fill has {fill.numel()} values for {x.shape[1]} channels"
                )
            self._fill_on[key] = fill.expand(x.shape[1]).contiguous()
        return self._fill_on[key]

    def _geometry(self, x: torch.Tensor) -> torch.Tensor:
        n, dev = len(x), x.device
        cfg = self.cfg
        if cfg.hflip > 0:
            x = torch.where((torch.rand(n, device=dev) < cfg.hflip).view(n, 1, 1, 1), x.flip(-1), x)
        if cfg.vflip > 0:
            x = torch.where((torch.rand(n, device=dev) < cfg.vflip).view(n, 1, 1, 1), x.flip(-2), x)
        if self.affine:
            # RandomAffine's ranges: angle in ±degrees, shift in ±translate·size, scale in 1±s
            angle = (torch.rand(n, device=dev) * 2 - 1) * cfg.rotation
            u = torch.rand(n, 2, device=dev) * 2 - 1
            shift = torch.stack(
                [u[:, 0] * (cfg.translate * x.shape[-1]), u[:, 1] * (cfg.translate * x.shape[-2])],
                1,
            )
            scale = 1 + (torch.rand(n, device=dev) * 2 - 1) * cfg.scale
            x = affine_batch(x, angle, shift, scale, self._fill_for(x))
        return x

    def _color(self, x: torch.Tensor) -> torch.Tensor:
        n, dev, s = len(x), x.device, self.cfg.color_jitter
        lo, hi = max(0.0, 1 - s), 1 + s
        factors = torch.empty(3, n, device=dev).uniform_(lo, hi)
        order = torch.rand(n, 3, device=dev).argsort(dim=1)  # a random permutation per sample
        c = min(x.shape[1], 3)
        rgb = color_jitter_batch(x[:, :c], factors, order)
        # alpha (channels past RGB) moves with the geometry only
        return torch.cat([rgb, x[:, c:]], 1) if x.shape[1] > c else rgb
