"""Optimizer and LR-scheduler registries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from training.config import OptimConfig
from training.registry import Registry

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "Scheduler",
    "build_optimizer",
    "build_scheduler",
    "fused_ok",
]

OPTIMIZERS: Registry[Callable[[list[torch.Tensor], OptimConfig, float], torch.optim.Optimizer]] = (
    Registry("optimizer")
)


def fused_ok(params: list[torch.Tensor]) -> bool | None:
    """Whether the fused (one kernel for all parameters) optimizer step applies.

    On CPU the default per-parameter step dominated task1's small-batch MLP epochs: fused
    Adam made them ~3x faster (bench/seeds.py). Fused kernels exist for floating-point
    parameters on CPU and CUDA; elsewhere torch's default (None) is kept.
    """
    ok = bool(params) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params
    )
    return True if ok else None


@OPTIMIZERS.register("adam")
def _adam(params: list[torch.Tensor], cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        params, lr=lr, weight_decay=cfg.weight_decay, fused=fused_ok(params)
    )


@OPTIMIZERS.register("adamw")
def _adamw(params: list[torch.Tensor], cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        params, lr=lr, weight_decay=cfg.weight_decay, fused=fused_ok(params)
    )


@OPTIMIZERS.register("sgd")
def _sgd(params: list[torch.Tensor], cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params,
        lr=lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=True,
        fused=fused_ok(params),
    )


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, lr: float | None = None
) -> torch.optim.Optimizer:
    """An optimizer over the parameters that currently require grad."""
    params: list[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]
    return OPTIMIZERS.get(cfg.optimizer)(params, cfg, cfg.lr if lr is None else lr)


class Scheduler:
    """One interface over epoch-level schedulers: ``step(monitored_value)`` once per epoch.

    ReduceLROnPlateau needs the monitored value, the others ignore it; wrapping them keeps
    the loop free of ``isinstance`` checks.
    """

    def __init__(self, inner: Any | None, needs_metric: bool = False) -> None:
        self.inner = inner
        self.needs_metric = needs_metric

    def step(self, metric: float) -> None:
        if self.inner is None:
            return
        if self.needs_metric:
            self.inner.step(metric)
        else:
            self.inner.step()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.inner is None else dict(self.inner.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.inner is not None and state:
            self.inner.load_state_dict(state)


SCHEDULERS: Registry[Callable[[torch.optim.Optimizer, OptimConfig, int, str], Scheduler]] = (
    Registry("scheduler")
)


@SCHEDULERS.register("none")
def _none(opt: torch.optim.Optimizer, cfg: OptimConfig, epochs: int, mode: str) -> Scheduler:
    return Scheduler(None)


@SCHEDULERS.register("step")
def _step(opt: torch.optim.Optimizer, cfg: OptimConfig, epochs: int, mode: str) -> Scheduler:
    return Scheduler(
        torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.step_gamma)
    )


@SCHEDULERS.register("cosine")
def _cosine(opt: torch.optim.Optimizer, cfg: OptimConfig, epochs: int, mode: str) -> Scheduler:
    return Scheduler(
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1), eta_min=cfg.min_lr)
    )


@SCHEDULERS.register("plateau")
def _plateau(opt: torch.optim.Optimizer, cfg: OptimConfig, epochs: int, mode: str) -> Scheduler:
    inner = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt,
        mode="min" if mode == "min" else "max",
        factor=cfg.plateau_factor,
        patience=cfg.plateau_patience,
        min_lr=cfg.min_lr,
    )
    return Scheduler(inner, needs_metric=True)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int, mode: str = "min"
) -> Scheduler:
    """``mode`` is the direction of the value passed to ``step`` (plateau only)."""
    return SCHEDULERS.get(cfg.scheduler)(optimizer, cfg, epochs, mode)
