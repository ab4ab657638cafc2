"""The config schema: every named value is checked where a config is built, whatever built it
(``--set``, a preset, a search space, a checkpoint), against the registry that owns it."""

from __future__ import annotations

import pytest

from training.config import ConfigError, TrainConfig, named_keys, unknown_name
from training.data import LAYOUTS
from training.losses import IMBALANCE
from training.models import MODELS
from training.optim import OPTIMIZERS, SCHEDULERS


@pytest.mark.parametrize(
    ("key", "typo", "valid"),
    [
        ("model.name", "resnet5O", MODELS.names()),
        ("optim.optimizer", "adamm", OPTIMIZERS.names()),
        ("optim.scheduler", "cosin", SCHEDULERS.names()),
        ("loss.imbalance", "oversample", IMBALANCE.names()),
        ("data.layout", "parquet", LAYOUTS.names()),
        ("data.normalize", "imagenett", ["half", "imagenet", "lite"]),
        ("data.crop", "silhouete", ["none", "silhouette"]),
    ],
)
def test_a_misspelt_name_is_refused_when_the_config_is_built(key: str, typo: str, valid: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_flat({key: typo})
    message = str(info.value)
    assert message.startswith(f"{key}: unknown ") and repr(typo) in message
    assert message.endswith(f"valid: {', '.join(valid)}")
    # the same rule the search-space loader asks, which adds the file and line
    assert unknown_name(key, typo) == message.removeprefix(f"{key}: ")
    assert unknown_name(key, valid[0]) is None
    TrainConfig.from_flat({key: valid[0]})


def test_a_newly_registered_name_is_valid_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown optimizer 'lion'"):
        TrainConfig.from_flat({"optim.optimizer": "lion"})
    monkeypatch.setitem(OPTIMIZERS._items, "lion", OPTIMIZERS.get("adam"))
    assert TrainConfig.from_flat({"optim.optimizer": "lion"}).optim.optimizer == "lion"


def test_every_named_key_points_at_something_that_holds_names() -> None:
    for key, (module, attr) in named_keys().items():
        default = TrainConfig().to_flat()[key]
        assert unknown_name(key, default) is None, (key, module, attr)
        assert unknown_name(key, default + "_nope") is not None, key
