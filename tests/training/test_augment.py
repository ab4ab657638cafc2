"""BatchAugment: per-sample randomness, flips, alpha untouched, MixUp/CutMix targets."""

from __future__ import annotations

import pytest
import torch

from training.config import AugmentConfig
from training.data import BatchAugment


def _batch(
    n: int = 32, c: int = 3, size: int = 16, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g), torch.randint(0, 9, (n,), generator=g)


def test_disabled_when_all_zero() -> None:
    assert not BatchAugment(AugmentConfig(), 9).enabled
    assert BatchAugment(AugmentConfig(hflip=0.5), 9).enabled
    assert BatchAugment(AugmentConfig(mixup_alpha=0.2), 9).enabled


def test_flips_flip() -> None:
    x, y = _batch()
    out, out_y = BatchAugment(AugmentConfig(hflip=1.0), 9)(x, y)
    assert torch.equal(out, x.flip(-1)) and torch.equal(out_y, y) and out_y.dtype == torch.int64
    out, _ = BatchAugment(AugmentConfig(vflip=1.0), 9)(x, y)
    assert torch.equal(out, x.flip(-2))


def test_randomness_is_per_sample() -> None:
    torch.manual_seed(0)
    one, y = _batch(n=1)
    x = one.repeat(64, 1, 1, 1)  # 64 copies of the same image
    out, _ = BatchAugment(AugmentConfig(hflip=0.5), 9)(x, y.repeat(64))
    flipped = torch.tensor([torch.equal(o, one[0].flip(-1)) for o in out])
    kept = torch.tensor([torch.equal(o, one[0]) for o in out])
    assert torch.all(flipped | kept) and 0 < int(flipped.sum()) < 64
    out, _ = BatchAugment(AugmentConfig(rotation=30.0, color_jitter=0.3), 9)(x, y.repeat(64))
    distinct = {tuple(o.flatten()[:50].tolist()) for o in out}
    assert len(distinct) > 32


def test_colour_jitter_leaves_alpha_alone() -> None:
    torch.manual_seed(0)
    x, y = _batch(c=4)
    out, _ = BatchAugment(AugmentConfig(color_jitter=0.5), 9)(x, y)
    assert torch.equal(out[:, 3], x[:, 3])
    assert not torch.allclose(out[:, :3], x[:, :3])
    assert out.min() >= 0 and out.max() <= 1


def test_geometry_moves_alpha_with_colour_and_fills() -> None:
    torch.manual_seed(0)
    x = torch.zeros(8, 4, 16, 16)
    out, _ = BatchAugment(AugmentConfig(rotation=45.0, scale=0.3), 9, fill=(1.0, 1.0, 1.0, 0.25))(
        x, torch.zeros(8, dtype=torch.long)
    )
    # pixels rotated in from outside take the fill value, per channel; pixels sampled half
    # inside blend bilinearly with the (zero) image, so every pixel is k·fill for one k
    fill = torch.tensor([1.0, 1.0, 1.0, 0.25])
    corners = out[:, :, 0, 0]
    moved = corners[:, 0] > 0.999
    assert moved.any()
    assert torch.allclose(corners[moved], fill.expand(int(moved.sum()), 4))
    k = out[:, :1]
    assert torch.allclose(out, k * fill.view(1, 4, 1, 1), atol=1e-6)


@pytest.mark.parametrize(
    "cfg",
    [
        AugmentConfig(mixup_alpha=0.4),
        AugmentConfig(cutmix_alpha=1.0),
        AugmentConfig(mixup_alpha=0.4, cutmix_alpha=1.0, hflip=0.5),
    ],
)
def test_mixing_gives_soft_targets(cfg: AugmentConfig) -> None:
    torch.manual_seed(0)
    x, y = _batch(n=16)
    aug = BatchAugment(cfg, 9)
    out, soft = aug(x, y)
    assert aug.soft_targets and out.shape == x.shape
    assert soft.shape == (16, 9) and soft.is_floating_point()
    assert torch.allclose(soft.sum(1), torch.ones(16))
    # each row mixes the sample's own class with at most one other
    assert (soft[torch.arange(16), y] > 0).all()
    assert ((soft > 0).sum(1) <= 2).all()
    _, single = aug(x[:1], y[:1])  # nobody to mix with: one-hot, same shape
    assert single.shape == (1, 9) and single[0, y[0]] == 1


def test_rejects_uint8_input() -> None:
    with pytest.raises(ValueError, match="float"):
        BatchAugment(AugmentConfig(hflip=0.5), 9)(
            torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2)
        )
