"""Name → model factory; :func:`build_model` is the only way the rest of the code makes a model."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from training.config import ModelConfig
from training.registry import Registry

__all__ = ["MODELS", "ModelFactory", "build_model"]

#: A factory is called as ``factory(cfg, in_channels=, num_classes=, image_size=)``.
ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")


def build_model(
    cfg: ModelConfig, *, in_channels: int, num_classes: int, image_size: int
) -> nn.Module:
    """Build ``cfg.name`` for ``in_channels``×``image_size``² inputs and ``num_classes`` outputs.

    Unknown names raise :class:`training.registry.UnknownNameError` listing the valid ones.
    Transfer models come back with ``cfg.freeze_depth`` applied.
    """
    factory = MODELS.get(cfg.name)
    if in_channels < 1 or num_classes < 2 or image_size < 1:
        raise ValueError(
            f"model {cfg.name!r}: need in_channels >= 1, num_classes >= 2, image_size >= 1 "
            f"(got {in_channels}, {num_classes}, {image_size})"
        )
    return factory(cfg, in_channels=in_channels, num_classes=num_classes, image_size=image_size)
