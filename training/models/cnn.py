"""Small from-scratch CNN (task 2, CIFAR-10 baseline)."""

from __future__ import annotations

from torch import Tensor, nn

from training.config import ModelConfig
from training.models._base import Classifier
from training.models._registry import MODELS

__all__ = ["CNN"]

POOLS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class CNN(Classifier):
    """``stages`` × [Conv → BN? → ReLU → Pool(2)], channels doubling; GAP → Dropout → Linear."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        stages: int = 4,
        channels: int = 32,
        kernel_size: int = 3,
        pooling: str = "max",
        batchnorm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if pooling not in POOLS:
            raise ValueError(f"model.pooling: unknown {pooling!r}; valid: {', '.join(POOLS)}")
        if channels < 1 or kernel_size < 1:
            raise ValueError(
                f"model.channels and model.kernel_size must be >= 1 (got {channels}, {kernel_size})"
            )
        blocks: list[nn.Module] = []
        width = in_channels
        for i in range(stages):
            out = channels * 2**i
            block: list[nn.Module] = [
                nn.Conv2d(width, out, kernel_size, padding="same", bias=not batchnorm)
            ]
            if batchnorm:
                block.append(nn.BatchNorm2d(out))
            block += [nn.ReLU(inplace=True), POOLS[pooling](2)]
            blocks.append(nn.Sequential(*block))
            width = out
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


@MODELS.register("cnn")
def build_cnn(cfg: ModelConfig, *, in_channels: int, num_classes: int, image_size: int) -> CNN:
    if image_size < 2**cfg.stages:
        raise ValueError(
            f"model.stages={cfg.stages} halves the image {cfg.stages} times; "
            f"data.image_size={image_size} is too small (need >= {2**cfg.stages})"
        )
    return CNN(
        in_channels,
        num_classes,
        stages=cfg.stages,
        channels=cfg.channels,
        kernel_size=cfg.kernel_size,
        pooling=cfg.pooling,
        batchnorm=cfg.batchnorm,
        dropout=cfg.dropout,
    )
