"""The interface every model in :data:`MODELS` implements, and DDP-safe helpers over it."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

__all__ = [
    "Classifier",
    "count_parameters",
    "head_parameters",
    "regularization",
    "set_freeze_depth",
    "unwrap",
]


class Classifier(nn.Module):
    """Base class: a ``head`` submodule, an extra loss term and a freeze depth.

    Every model has :meth:`regularization` (zero unless overridden) so the loop can always add
    it to the loss; the module-level helpers below unwrap DDP first, which is why the loop should
    call those rather than the methods.
    """

    head: nn.Module

    def regularization(self) -> Tensor:
        """An extra loss term (e.g. a layer's L2 penalty); zero here."""
        return torch.zeros((), device=_device_of(self))

    def set_freeze_depth(self, depth: int) -> None:
        """Models trained from scratch have no pretrained stages: every layer always trains.

        Accepting any depth (rather than raising) lets the engine apply ``model.freeze_depth``
        uniformly; its default (2) is meant for transfer models and is simply moot here.
        """
        if depth < -1:
            raise ValueError(f"model.freeze_depth must be >= -1, got {depth}")
        self.requires_grad_(True)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel (Ray Train wraps it in DDP)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def regularization(model: nn.Module) -> Tensor:
    """``model``'s extra loss term; zero for a module that is not a :class:`Classifier`."""
    inner = unwrap(model)
    if isinstance(inner, Classifier):
        return inner.regularization()
    return torch.zeros((), device=_device_of(inner))


def set_freeze_depth(model: nn.Module, depth: int) -> None:
    """Train only the last ``depth`` backbone stages and the head (0 = head only, -1 = all)."""
    inner = unwrap(model)
    if not isinstance(inner, Classifier):
        raise TypeError(f"set_freeze_depth needs a poketune model, got {type(inner).__name__}")
    inner.set_freeze_depth(depth)


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the classification head (the layers a head-only phase trains)."""
    inner = unwrap(model)
    head = getattr(inner, "head", None)
    if not isinstance(head, nn.Module):
        raise TypeError(f"{type(inner).__name__} has no `head` submodule")
    return list(head.parameters())


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(total, trainable)`` parameter counts."""
    params = list(unwrap(model).parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _device_of(module: nn.Module) -> torch.device:
    first: Iterator[Tensor] = module.parameters()
    try:
        return next(first).device
    except StopIteration:
        return torch.device("cpu")
