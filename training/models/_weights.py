"""Where a transfer backbone's initial weights come from: a file, the torch hub cache, or the
network — plus the first-conv surgery that lets a 3-channel backbone take RGBA input."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models import Weights, get_model_weights

from training.errors import PoketuneError

__all__ = [
    "PretrainedWeightsError",
    "adapt_first_conv",
    "clean_state_dict",
    "hub_checkpoint_path",
    "hub_weights_file",
    "load_backbone_state",
    "pretrained_state_dict",
    "read_state_dict",
]

# a checkpoint may hold the state dict under one of these keys instead of being one
_NESTED_KEYS = ("model", "state_dict", "model_state")
# prefixes a saved poketune model (optionally DDP-wrapped) puts in front of backbone keys
_STRIP_PREFIXES = ("module.", "backbone.")


class PretrainedWeightsError(PoketuneError, RuntimeError):
    """Initial weights cannot be found, read, or do not fit the backbone; names the source."""


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``path`` (a bare state dict, or a checkpoint dict holding one)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"model.weights_path: no such file: {file}")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors come in many types; all mean "unreadable"
        raise PretrainedWeightsError(
            f"cannot read {file} as a weights-only state dict: {exc}"
        ) from exc
    return _as_state_dict(obj, str(file))


def hub_checkpoint_path(url: str) -> Path:
    """Where :func:`torch.hub.load_state_dict_from_url` caches ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def hub_weights_file(arch: str) -> Path:
    """Where the torch hub cache keeps torchvision's default ImageNet weights for ``arch``."""
    return hub_checkpoint_path(get_model_weights(arch).DEFAULT.url)


def pretrained_state_dict(arch: str) -> tuple[dict[str, Tensor], str]:
    """torchvision's default ImageNet weights for ``arch`` and where they were read from.

    The hub cache is checked first so that a cached file never touches the network; otherwise
    the download is tried once and any failure becomes a :class:`PretrainedWeightsError` that
    tells the user how to proceed offline.
    """
    weights = get_model_weights(arch).DEFAULT
    cached = hub_checkpoint_path(weights.url)
    if cached.is_file():
        return read_state_dict(cached), str(cached)
    try:
        state = _download_state_dict(weights)
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
        raise PretrainedWeightsError(
            f"pretrained weights for {arch} are not cached at {cached} and cannot be "
            f"downloaded ({exc}); pass model.weights_path=FILE or model.pretrained=false, or "
            f"use an efficientnet_lite0/1/2 backbone (its weights ship with poketune)"
        ) from exc
    return _as_state_dict(state, weights.url), weights.url


def _download_state_dict(weights: Weights) -> Mapping[str, Any]:
    # a separate function so tests can stand in for the network
    return weights.get_state_dict(progress=False, check_hash=True)


def clean_state_dict(
    state: Mapping[str, Tensor], ignore_prefixes: Iterable[str] = ()
) -> dict[str, Tensor]:
    """``state`` keyed like a bare torchvision backbone.

    Accepts torchvision's own files (their classifier keys go in ``ignore_prefixes``) and state
    dicts of a saved poketune model (``backbone.``/``module.`` prefixes, ``head.`` keys).
    """
    ignored = (*ignore_prefixes, "head.")
    cleaned: dict[str, Tensor] = {}
    for key, value in state.items():
        for prefix in _STRIP_PREFIXES:
            key = key.removeprefix(prefix)
        if not key.startswith(ignored):
            cleaned[key] = value
    return cleaned


def load_backbone_state(
    backbone: nn.Module, cleaned: Mapping[str, Tensor], *, source: str, arch: str
) -> None:
    """Load a :func:`clean_state_dict` result strictly; mismatches name ``source``."""
    expected = backbone.state_dict()
    missing = sorted(expected.keys() - cleaned.keys())
    unexpected = sorted(cleaned.keys() - expected.keys())
    wrong_shape = [
        f"{k}: file {tuple(cleaned[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(expected.keys() & cleaned.keys())
        if cleaned[k].shape != expected[k].shape
    ]
    problems = [
        f"{label} ({len(items)}): {', '.join(items[:5])}{', ...' if len(items) > 5 else ''}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", wrong_shape),
        )
        if items
    ]
    if problems:
        raise PretrainedWeightsError(
            f"weights in {source} do not fit backbone {arch}: " + "; ".join(problems)
        )
    backbone.load_state_dict(cleaned, strict=True)


def adapt_first_conv(backbone: nn.Module, path: str, in_channels: int) -> None:
    """Give the RGB convolution at ``path`` ``in_channels`` inputs (RGBA: 4).

    The RGB filters are copied unchanged so pretrained colour features survive; each extra
    channel's filter starts as the mean of the RGB filters, i.e. the alpha mask is first seen
    like a grey image (its silhouette edges excite the same edge detectors) rather than as
    noise. Later training is free to specialise it.
    """
    conv = backbone.get_submodule(path)
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"{path} is a {type(conv).__name__}, expected Conv2d")
    if conv.in_channels == in_channels:
        return
    if conv.in_channels != 3 or in_channels < 3 or conv.groups != 1:
        raise ValueError(
            f"transfer backbones take 3 (RGB) or more input channels, got {in_channels}"
        )
    # a copy rather than a new nn.Conv2d keeps the layer's class and whatever it adds to a
    # plain convolution (EfficientNet-Lite's stem pads like TensorFlow's "SAME" in forward)
    new = copy.deepcopy(conv)
    new.in_channels = in_channels
    with torch.no_grad():
        weight = conv.weight.new_empty((conv.out_channels, in_channels, *conv.kernel_size))
        weight[:, :3] = conv.weight
        weight[:, 3:] = conv.weight.mean(dim=1, keepdim=True)
    new.weight = nn.Parameter(weight, requires_grad=conv.weight.requires_grad)
    parent_path, _, name = path.rpartition(".")
    setattr(backbone.get_submodule(parent_path) if parent_path else backbone, name, new)


def _as_state_dict(obj: Any, source: str) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise PretrainedWeightsError(f"{source} does not hold a state dict (name → tensor)")
    return dict(obj)
