from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import get_model

from training.config import ModelConfig
from training.models import (
    BACKBONES,
    MODELS,
    PretrainedWeightsError,
    TransferModel,
    _weights,
    build_model,
    count_parameters,
    head_parameters,
    regularization,
    set_freeze_depth,
)
from training.registry import UnknownNameError

NUM_CLASSES = 9
EXPECTED_STAGES = {"resnet": 5, "vgg16": 5, "efficientnet": 9}


def _build(name: str, *, in_channels: int = 3, image_size: int = 32, **kw: object) -> nn.Module:
    cfg = ModelConfig(name=name, **kw)  # type: ignore[arg-type]
    return build_model(cfg, in_channels=in_channels, num_classes=NUM_CLASSES, image_size=image_size)


def _forward_backward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.train()
    out = model(x)
    assert out.shape == (x.shape[0], NUM_CLASSES)
    (nn.functional.cross_entropy(out, torch.arange(x.shape[0])) + regularization(model)).backward()
    return out


def _stage_params(model: TransferModel) -> list[list[nn.Parameter]]:
    return [[p for m in stage for p in m.parameters()] for stage in model.stages()]


def _bns(modules: list[nn.Module]) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m
        for mod in modules
        for m in mod.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]


def test_every_expected_model_is_registered() -> None:
    assert set(MODELS.names()) == {"mlp", "cnn", *BACKBONES}
    assert set(BACKBONES) >= {"resnet50", "vgg16", "efficientnet_b0", "efficientnet_b2"}


def test_unknown_model_name_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match=r"'resnet51'.*valid: .*cnn.*mlp.*resnet50.*vgg16"):
        _build("resnet51")


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("in_channels", [3, 4])
@pytest.mark.parametrize("image_size", [32, 64])
def test_scratch_models_train_on_task_shapes(name: str, in_channels: int, image_size: int) -> None:
    torch.manual_seed(0)
    model = _build(name, in_channels=in_channels, image_size=image_size, stages=3, channels=8)
    _forward_backward(model, torch.randn(4, in_channels, image_size, image_size))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert regularization(model).item() == 0.0


def test_mlp_layers_follow_config() -> None:
    model = _build("mlp", hidden_sizes=[32, 16], batchnorm=False, dropout=0.25)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (3 * 32 * 32, 32),
        (32, 16),
        (16, NUM_CLASSES),
    ]
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.25}


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_cnn_stages_channels_pooling_and_channels_last(pooling: str) -> None:
    model = _build("cnn", in_channels=4, stages=3, channels=8, kernel_size=5, pooling=pooling)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (4, 8, (5, 5)),
        (8, 16, (5, 5)),
        (16, 32, (5, 5)),
    ]
    pool_type = nn.MaxPool2d if pooling == "max" else nn.AvgPool2d
    assert sum(isinstance(m, pool_type) for m in model.modules()) == 3
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 4, 32, 32).to(memory_format=torch.channels_last)
    _forward_backward(model, x)


def test_cnn_rejects_images_too_small_for_its_stages() -> None:
    with pytest.raises(ValueError, match=r"model.stages=5.*image_size=16"):
        _build("cnn", image_size=16, stages=5)


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_transfer_backbone_trains_only_unfrozen_stages(arch: str) -> None:
    torch.manual_seed(0)
    model = _build(arch, freeze_depth=1, head_hidden=[16])
    assert isinstance(model, TransferModel)
    family = next(k for k in EXPECTED_STAGES if arch.startswith(k))
    stages = _stage_params(model)
    assert len(stages) == EXPECTED_STAGES[family]
    _forward_backward(model, torch.randn(2, 3, 32, 32))
    assert all(p.grad is None for stage in stages[:-1] for p in stage)
    assert all(p.grad is not None for p in stages[-1] + head_parameters(model))


def test_freeze_depth_counts_and_frozen_batchnorm_stays_in_eval() -> None:
    model = _build("resnet18", freeze_depth=0)
    assert isinstance(model, TransferModel)
    stages = _stage_params(model)
    sizes = [sum(p.numel() for p in s) for s in stages]
    head = sum(p.numel() for p in head_parameters(model))
    total, _ = count_parameters(model)
    assert total == sum(sizes) + head
    for depth, trainable_stages in [(0, 0), (1, 1), (2, 2), (5, 5), (9, 5), (-1, 5)]:
        set_freeze_depth(model, depth)
        flags = [{p.requires_grad for p in s} for s in stages]
        assert flags == [{False}] * (5 - trainable_stages) + [{True}] * trainable_stages
        assert count_parameters(model) == (total, head + sum(sizes[5 - trainable_stages :]))

    set_freeze_depth(model, 2)
    model.train()
    frozen = _bns(model.stages()[0] + model.stages()[1] + model.stages()[2])
    unfrozen = _bns(model.stages()[3] + model.stages()[4])
    assert frozen and unfrozen
    assert not any(bn.training for bn in frozen)
    assert all(bn.training for bn in unfrozen)
    before = [bn.running_mean.clone() for bn in frozen + unfrozen]
    model(torch.randn(4, 3, 32, 32) * 3 + 1)
    changed = [
        not torch.equal(b, bn.running_mean) for b, bn in zip(before, frozen + unfrozen, strict=True)
    ]
    assert changed == [False] * len(frozen) + [True] * len(unfrozen)

    set_freeze_depth(model, -1)  # unfreezing hands the stats back to training
    assert all(bn.training for bn in frozen)
    model.eval()
    assert not any(bn.training for bn in unfrozen)
    with pytest.raises(ValueError, match="freeze_depth"):
        set_freeze_depth(model, -2)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_scratch_models_train_every_layer_at_any_freeze_depth(name: str) -> None:
    model = _build(name, stages=2)
    for depth in (0, 2, -1):
        set_freeze_depth(model, depth)
        total, trainable = count_parameters(model)
        assert total == trainable > 0
    with pytest.raises(ValueError, match="freeze_depth"):
        set_freeze_depth(model, -2)


@pytest.mark.parametrize("layout", ["backbone", "torchvision", "poketune_checkpoint"])
def test_weights_path_loads_saved_backbone(tmp_path: Path, layout: str) -> None:
    torch.manual_seed(1)
    source = _build("resnet18", head_hidden=[8])
    assert isinstance(source, TransferModel)
    if layout == "backbone":
        state = source.backbone.state_dict()
    elif layout == "torchvision":  # a file as torchvision publishes it, fc included
        tv = get_model("resnet18", weights=None)
        tv.load_state_dict(source.backbone.state_dict(), strict=False)
        state = tv.state_dict()
        assert "fc.weight" in state
    else:  # a whole saved poketune model, nested under "model", head keys included
        state = {"model": source.state_dict(), "epoch": torch.tensor(3)}
    path = tmp_path / "w.pt"
    torch.save(state, path)

    torch.manual_seed(2)
    loaded = _build("resnet18", weights_path=str(path), head_hidden=[8])
    assert isinstance(loaded, TransferModel)
    expected = source.backbone.state_dict()
    got = loaded.backbone.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_missing_or_mismatching_weights_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        _build("resnet18", weights_path=str(missing))
    wrong = tmp_path / "resnet18.pt"
    torch.save(_build("resnet18").state_dict(), wrong)
    with pytest.raises(PretrainedWeightsError, match=r"resnet18.pt.*resnet34.*missing keys"):
        _build("resnet34", weights_path=str(wrong))
    garbage = tmp_path / "garbage.pt"
    torch.save({"lr": 0.1}, garbage)
    with pytest.raises(PretrainedWeightsError, match=r"garbage\.pt"):
        _build("resnet18", weights_path=str(garbage))


def _offline(monkeypatch: pytest.MonkeyPatch, hub: Path) -> list[str]:
    """Point the torch hub cache at ``hub`` and make any download attempt fail (and record it)."""
    attempts: list[str] = []

    def no_network(weights: object) -> None:
        attempts.append(str(weights))
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(_weights, "_download_state_dict", no_network)
    return attempts


def test_pretrained_without_cache_or_network_gives_instructions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = _offline(monkeypatch, tmp_path)
    with pytest.raises(PretrainedWeightsError) as err:
        _build("efficientnet_b0", pretrained=True)
    message = str(err.value)
    assert "efficientnet_b0" in message and "not cached" in message
    assert str(tmp_path / "checkpoints") in message
    assert "model.weights_path=FILE" in message and "model.pretrained=false" in message
    assert len(attempts) == 1


def test_pretrained_reads_the_hub_cache_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = _offline(monkeypatch, tmp_path)
    torch.manual_seed(3)
    published = get_model("resnet18", weights=None).state_dict()
    cache = tmp_path / "checkpoints" / "resnet18-f37072fd.pth"
    cache.parent.mkdir()
    torch.save(published, cache)
    model = _build("resnet18", pretrained=True)
    assert isinstance(model, TransferModel)
    assert torch.equal(
        model.backbone.state_dict()["layer4.1.conv2.weight"], published["layer4.1.conv2.weight"]
    )
    assert attempts == []


def test_weights_path_wins_over_pretrained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = _offline(monkeypatch, tmp_path)
    path = tmp_path / "w.pt"
    state = get_model("resnet18", weights=None).state_dict()
    torch.save(state, path)
    model = _build("resnet18", pretrained=True, weights_path=str(path))
    assert isinstance(model, TransferModel)
    assert torch.equal(model.backbone.state_dict()["conv1.weight"], state["conv1.weight"])
    assert attempts == []


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0"])
def test_four_channel_input_copies_rgb_filters_and_averages_them_for_alpha(
    tmp_path: Path, arch: str
) -> None:
    rgb = get_model(arch, weights=None).state_dict()
    key = f"{BACKBONES[arch].first_conv}.weight"
    path = tmp_path / "rgb.pt"
    torch.save(rgb, path)
    model = _build(arch, in_channels=4, weights_path=str(path))
    assert isinstance(model, TransferModel)
    weight = model.backbone.state_dict()[key]
    assert weight.shape[1] == 4
    assert torch.equal(weight[:, :3], rgb[key])
    assert torch.allclose(weight[:, 3], rgb[key].mean(dim=1))
    _forward_backward(model, torch.randn(2, 4, 32, 32))

    # an RGBA model's own saved backbone loads back into an RGBA model unchanged
    rgba_path = tmp_path / "rgba.pt"
    torch.save(model.backbone.state_dict(), rgba_path)
    again = _build(arch, in_channels=4, weights_path=str(rgba_path))
    assert isinstance(again, TransferModel)
    assert torch.equal(again.backbone.state_dict()[key], weight)


def test_head_layers_dropouts_and_l2_regularization() -> None:
    torch.manual_seed(0)
    plain = _build("resnet18", head_hidden=[16, 8], head_dropout=[0.2, 0.0])
    assert isinstance(plain, TransferModel)
    assert [m.p for m in plain.head.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.0]
    assert [
        (m.in_features, m.out_features) for m in plain.head.modules() if isinstance(m, nn.Linear)
    ] == [
        (512, 16),
        (16, 8),
        (8, NUM_CLASSES),
    ]
    assert regularization(plain).item() == 0.0

    shared = _build("resnet18", head_hidden=[16, 8], head_dropout=[0.4])
    assert [m.p for m in shared.modules() if isinstance(m, nn.Dropout)] == [0.4, 0.4]

    model = _build("resnet18", head_hidden=[16, 8], head_l2=1e-3, freeze_depth=0)
    assert isinstance(model, TransferModel)
    last_hidden = model.head.hidden[3]
    assert isinstance(last_hidden, nn.Linear) and last_hidden.out_features == 8
    penalty = regularization(model)
    assert penalty.item() == pytest.approx(1e-3 * last_hidden.weight.square().sum().item())
    penalty.backward()
    assert last_hidden.weight.grad is not None
    assert all(p.grad is None for p in model.parameters() if p is not last_hidden.weight)


def test_helpers_see_through_a_ddp_style_wrapper() -> None:
    class Wrapper(nn.Module):  # DistributedDataParallel keeps the model as `.module`
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    model = _build("resnet18", head_hidden=[8], head_l2=0.5, freeze_depth=0)
    wrapped = Wrapper(model)
    assert regularization(wrapped).item() > 0
    assert head_parameters(wrapped) == head_parameters(model)
    set_freeze_depth(wrapped, -1)
    assert count_parameters(wrapped)[0] == count_parameters(wrapped)[1]


def test_transfer_rejects_tiny_images_and_too_few_channels() -> None:
    with pytest.raises(ValueError, match="image_size >= 32"):
        _build("resnet18", image_size=16)
    with pytest.raises(ValueError, match="input channels"):
        _build("resnet18", in_channels=1)
