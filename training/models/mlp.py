"""Fully connected classifier on flattened pixels (task 1)."""

from __future__ import annotations

from torch import Tensor, nn

from training.config import ModelConfig
from training.models._base import Classifier
from training.models._registry import MODELS

__all__ = ["MLP"]


class MLP(Classifier):
    """Flatten → [Linear → BatchNorm1d? → ReLU → Dropout] per hidden size → Linear."""

    def __init__(
        self,
        in_features: int,
        hidden_sizes: list[int],
        num_classes: int,
        *,
        batchnorm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden_sizes:
            if size < 1:
                raise ValueError(f"model.hidden_sizes: sizes must be >= 1, got {hidden_sizes}")
            # the bias is redundant when BatchNorm re-centres the output
            layers.append(nn.Linear(width, size, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm1d(size))
            layers += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        # flatten (not view): channels_last inputs are not contiguous in NCHW order
        return self.head(self.body(x.flatten(1)))


@MODELS.register("mlp")
def build_mlp(cfg: ModelConfig, *, in_channels: int, num_classes: int, image_size: int) -> MLP:
    return MLP(
        in_channels * image_size * image_size,
        list(cfg.hidden_sizes),
        num_classes,
        batchnorm=cfg.batchnorm,
        dropout=cfg.dropout,
    )
