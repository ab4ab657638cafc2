"""numpy → torch layout and per-batch normalisation (on the batch's device)."""

from __future__ import annotations

import numpy as np
import torch

from training.data._preprocessing import Preprocessing

__all__ = ["normalize_batch", "to_nchw"]


def to_nchw(images: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W×C numpy → contiguous uint8 N×C×H×W tensor."""
    if images.ndim != 4:
        raise ValueError(f"to_nchw expects N×H×W×C, got shape {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def normalize_batch(x: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """``(x/255 - mean) / std`` per channel, as float32 on ``x``'s device.

    uint8 input is scaled by 1/255; floating input is taken as already in [0, 1] (the output
    of :class:`~training.data.augment.BatchAugment`, which must run before this).  The
    memory format (channels_last) is kept.
    """
    if x.ndim != 4 or x.shape[1] != prep.channels:
        raise ValueError(
            f"normalize_batch expects N×{prep.channels}×H×W for {prep.rgba!r} images, "
            f"got shape {tuple(x.shape)}"
        )
    xf = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    mean = torch.tensor(prep.mean, dtype=xf.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(prep.std, dtype=xf.dtype, device=x.device).view(1, -1, 1, 1)
    return (xf - mean) / std
