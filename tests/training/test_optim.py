"""Optimizers: the registry builds fused steps where they apply, and they train like torch's
reference implementation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.config import OptimConfig
from training.optim import OPTIMIZERS, build_optimizer, fused_ok


def _model() -> nn.Module:
    # no BatchNorm after a biased layer: that bias gets ~0 gradients, whose rounding noise
    # Adam scales up to full-size steps, so the two implementations could not be compared
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_cpu_float_parameters_get_the_fused_step(name: str) -> None:
    opt = build_optimizer(_model(), OptimConfig(optimizer=name))
    assert opt.param_groups[0]["fused"] is True


def test_fused_is_left_to_torch_for_parameters_it_cannot_fuse() -> None:
    assert fused_ok([]) is None
    assert fused_ok([torch.zeros(2, dtype=torch.int64)]) is None
    assert fused_ok([torch.zeros(2, device="meta")]) is None


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_fused_steps_match_the_reference_implementation(name: str) -> None:
    cfg = OptimConfig(optimizer=name, lr=1e-2, weight_decay=1e-4)
    x, y = torch.randn(32, 12, generator=torch.Generator().manual_seed(1)), torch.arange(32) % 3
    trained = []
    for fused in (True, False):
        model = _model()
        params = list(model.parameters())
        opt = OPTIMIZERS.get(name)(params, cfg, cfg.lr)
        if not fused:  # the same optimizer, torch's per-parameter loop
            for group in opt.param_groups:
                group["fused"], group["foreach"] = None, False
        for _ in range(5):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        trained.append(torch.cat([p.detach().flatten() for p in params]))
    assert not torch.equal(trained[0], torch.cat([p.flatten() for p in _model().parameters()]))
    torch.testing.assert_close(trained[0], trained[1], rtol=1e-4, atol=1e-5)
