"""Typed training configuration: the one schema of every config key, its type, its bounds
and, for keys whose values name something the training code owns (a model, an optimizer,
an imbalance strategy, a preprocessing mode, …), where the valid names live.

Tune, the CLI (``--set optim.lr=0.01``) and YAML search spaces all speak *flat dotted
dicts* (``{"optim.lr": 1e-3, "model.hidden_sizes": [256, 128]}``).  They become a
:class:`TrainConfig` exactly once, at the worker entry, through :meth:`TrainConfig.from_flat`;
nothing below that reads string keys. The search-space loader validates every value through
the same schema (:func:`unknown_name`, :meth:`TrainConfig.from_flat`), adding file and line.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from training.errors import PoketuneError
from training.registry import Registry

__all__ = [
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "EarlyStopConfig",
    "FeaturesConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "flat_keys",
    "named_keys",
    "parse_override",
    "unknown_name",
]


class ConfigError(PoketuneError, ValueError):
    """A configuration key or value is invalid; the message names the key."""


def _named(default: str, module: str, attr: str) -> Any:
    """A field whose value must be one of the names held by ``module.attr`` (a
    :class:`~training.registry.Registry`, or a tuple/dict of names). Looked up when a config
    is validated, so a newly registered name is valid everywhere at once."""
    return field(default=default, metadata={"names": (module, attr)})


@dataclass
class ModelConfig:
    name: str = _named("mlp", "training.models", "MODELS")
    # MLP
    hidden_sizes: list[int] = field(default_factory=lambda: [256, 128])
    batchnorm: bool = True
    dropout: float = 0.2
    # CNN: `stages` conv blocks, channels double from `channels` at each stage
    stages: int = 4
    channels: int = 32
    kernel_size: int = 3
    pooling: str = _named("max", "training.models.cnn", "POOLS")  # max | avg
    # transfer backbones (torchvision): custom head + freeze depth
    head_hidden: list[int] = field(default_factory=lambda: [512])
    # one value for every head layer, or one per hidden layer
    head_dropout: list[float] = field(default_factory=lambda: [0.5])
    head_l2: float = 0.0  # extra L2 on the last hidden head layer (the study's Dense 256, L2 1e-3)
    freeze_depth: int = 2  # trailing backbone stages that train; 0 = head only, -1 = all
    pretrained: bool = False
    weights_path: str | None = None


@dataclass
class DataConfig:
    # where the images come from (the root folder itself is given separately: --data DIR)
    # auto | kaggle | imagefolder | manifest | cifar10 (the package registers cifar10)
    layout: str = _named("auto", "training.data", "LAYOUTS")
    manifest: str = "train.csv"  # kaggle: labels CSV; manifest: the CSV of image paths
    id_col: str = "id"
    label_col: str = "label"
    path_col: str = "image"  # manifest layout: column of relative image paths
    classes: list[str] = field(default_factory=list)  # keep only these (and this order); [] = all
    skip_bad: bool = False
    # decode-time preprocessing (part of the cache key)
    image_size: int = 64
    crop: str = _named("none", "training.data._preprocessing", "CROPS")  # none | silhouette
    rgba: str = _named("composite", "training.data._preprocessing", "RGBA_MODES")  # composite | keep
    background: list[int] = field(default_factory=lambda: [255, 255, 255])
    # half (mean=std=0.5) | imagenet | lite ((x - 127) / 128)
    normalize: str = _named("half", "training.data._preprocessing", "NORMALIZATIONS")
    val_fraction: float = 0.2
    # keep near-duplicate copies (poketune check's pairs within train) on one side of the
    # validation split (sklearn's StratifiedGroupKFold), so a copy cannot score its twin
    group_duplicates: bool = False


@dataclass
class OptimConfig:
    optimizer: str = _named("adam", "training.optim", "OPTIMIZERS")  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    batch_size: int = 16
    epochs: int = 10
    scheduler: str = _named("none", "training.optim", "SCHEDULERS")  # none | step | plateau | cosine
    step_size: int = 5
    step_gamma: float = 0.1
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    amp: bool = True  # only takes effect on CUDA
    # two-phase fine-tuning: `head_epochs` head-only epochs, then unfreeze to
    # model.freeze_depth with `finetune_lr` (defaults to lr)
    head_epochs: int = 0
    finetune_lr: float | None = None


@dataclass
class LossConfig:
    # none | weighted_ce | focal | sampler: the criterion and the sampler together
    imbalance: str = _named("none", "training.losses", "IMBALANCE")
    focal_gamma: float = 2.0


@dataclass
class EarlyStopConfig:
    patience: int = 0  # 0 = off
    monitor: str = "val_f1"  # val_f1 | val_acc | val_loss
    min_delta: float = 0.0
    start_epoch: int = 0  # no stopping before this epoch
    # the seeds' rule: stop when val_f1 moved less than f1_tol (relative) over the last f1_window epochs
    f1_window: int = 0
    f1_tol: float = 0.02
    restore_best: bool = True


@dataclass
class AugmentConfig:
    hflip: float = 0.0  # probability
    vflip: float = 0.0
    rotation: float = 0.0  # degrees
    translate: float = 0.0  # fraction of the image
    scale: float = 0.0  # +- fraction
    color_jitter: float = 0.0  # brightness/contrast/saturation strength
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0


@dataclass
class FeaturesConfig:
    # Frozen-backbone feature cache (transfer models): while the backbone is frozen (freeze
    # depth 0, or the head phase of two-phase fine-tuning) its pooled features are computed
    # once and the head trains on them. Live augmentation cannot be cached: with `views` > 0,
    # that many augmented copies of the training set are featurised once and epochs cycle
    # through them; with 0, trials that augment run the backbone every step as before.
    cache: bool = True
    views: int = 0


_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "loss": LossConfig,
    "early_stop": EarlyStopConfig,
    "augment": AugmentConfig,
    "features": FeaturesConfig,
}


@dataclass
class TrainConfig:
    task: str = "task2"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    seed: int = 0
    eval_batch_size: int = 512
    num_threads: int = 0  # torch threads per worker; 0 = leave torch's default
    # Seconds between checkpoints of the latest state; epochs that improve the monitored
    # metric and the last epoch are always saved. 0 = every epoch. A checkpoint of task1's
    # MLP (weights, best weights, Adam state: ~50 MB) cost more than half an epoch.
    checkpoint_every_s: float = 30.0

    # ------------------------------------------------------------------ flat views
    def to_flat(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _SECTIONS:
                for sf in dataclasses.fields(value):
                    out[f"{f.name}.{sf.name}"] = _copy(getattr(value, sf.name))
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_flat(cls, flat: dict[str, Any], *, base: TrainConfig | None = None) -> TrainConfig:
        """Build a config from dotted keys on top of ``base`` (defaults when None).

        Values are type-checked and coerced (``"1e-3"`` → float, ``3`` → ``[3]`` for list
        fields); an unknown key raises :class:`ConfigError` listing the valid ones.
        """
        merged = (base or cls()).to_flat()
        valid = flat_keys()
        for key, value in flat.items():
            if key not in valid:
                raise ConfigError(
                    f"unknown config key {key!r}; valid keys: {', '.join(sorted(valid))}"
                )
            merged[key] = _coerce(key, value, valid[key])
        top: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        for key, value in merged.items():
            if "." in key:
                sec, name = key.split(".", 1)
                sections[sec][name] = value
            else:
                top[key] = value
        cfg = cls(**top, **{name: _SECTIONS[name](**kw) for name, kw in sections.items()})
        cfg.validate()
        return cfg

    def replace(self, **flat: Any) -> TrainConfig:
        """A copy with dotted-key overrides: ``cfg.replace(**{"optim.lr": 0.1})``."""
        return TrainConfig.from_flat(flat, base=self)

    def validate(self) -> None:
        def check(cond: bool, key: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"{key}: {msg} (got {self.to_flat()[key]!r})")

        check(self.optim.lr > 0, "optim.lr", "must be > 0")
        check(self.optim.batch_size >= 1, "optim.batch_size", "must be >= 1")
        check(self.optim.epochs >= 1, "optim.epochs", "must be >= 1")
        check(0 < self.data.val_fraction < 1, "data.val_fraction", "must be in (0, 1)")
        check(self.data.image_size >= 8, "data.image_size", "must be >= 8")
        check(len(self.data.background) == 3, "data.background", "needs 3 values (RGB)")
        check(0 <= self.model.dropout < 1, "model.dropout", "must be in [0, 1)")
        check(self.model.stages >= 1, "model.stages", "must be >= 1")
        check(self.optim.head_epochs >= 0, "optim.head_epochs", "must be >= 0")
        check(self.checkpoint_every_s >= 0, "checkpoint_every_s", "must be >= 0")
        check(self.features.views >= 0, "features.views", "must be >= 0")
        check(
            self.early_stop.monitor in ("val_f1", "val_acc", "val_loss"),
            "early_stop.monitor",
            "valid: val_f1, val_acc, val_loss",
        )
        flat = self.to_flat()
        for key in named_keys():
            problem = unknown_name(key, flat[key])
            if problem is not None:
                raise ConfigError(f"{key}: {problem}")

    @property
    def in_channels(self) -> int:
        return 4 if self.data.rgba == "keep" else 3


def flat_keys() -> dict[str, Any]:
    """Every valid dotted key → its annotated type."""
    hints_top = typing.get_type_hints(TrainConfig)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name in _SECTIONS:
            hints = typing.get_type_hints(_SECTIONS[f.name])
            for sf in dataclasses.fields(_SECTIONS[f.name]):
                out[f"{f.name}.{sf.name}"] = hints[sf.name]
        else:
            out[f.name] = hints_top[f.name]
    return out


def named_keys() -> dict[str, tuple[str, str]]:
    """Every dotted key whose value names something → the (module, attribute) holding the
    valid names."""
    out: dict[str, tuple[str, str]] = {}
    for f in dataclasses.fields(TrainConfig):
        fields = dataclasses.fields(_SECTIONS[f.name]) if f.name in _SECTIONS else ()
        for sf in fields:
            if "names" in sf.metadata:
                out[f"{f.name}.{sf.name}"] = sf.metadata["names"]
    return out


def unknown_name(key: str, value: Any) -> str | None:
    """What is wrong with ``value`` for a :func:`named_keys` key (``"unknown optimizer
    'adamm'; valid: adam, adamw, sgd"``); None when it is valid or ``key`` takes no name."""
    source = named_keys().get(key)
    if source is None or not isinstance(value, str):
        return None
    found = _valid_names(*source, key)
    if found is None or value in found[1]:
        return None
    kind, valid = found
    return f"unknown {kind} {value!r}; valid: {', '.join(valid)}"


def _valid_names(module_name: str, attr: str, key: str) -> tuple[str, list[str]] | None:
    """(what the names are, the sorted names) held by ``module_name.attr``; None when that
    module is not installed here."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None  # that part of the project is not installed here
        raise
    owner = getattr(module, attr)  # an AttributeError here is a stale _named() source
    if isinstance(owner, Registry):
        return owner.kind, owner.names()
    return key, sorted(str(name) for name in owner)


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=1e-3"`` → ``("optim.lr", "1e-3")``; values are coerced by from_flat.

    YAML parses the value so ``[256,128]``, ``true`` and ``null`` work on the command line.
    """
    import yaml

    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _coerce(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    try:
        if origin is list:
            items = value if isinstance(value, (list, tuple)) else [value]
            return [_coerce(key, v, args[0]) for v in items]
        if hint is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            if isinstance(value, (int, float)) and value in (0, 1):
                return bool(value)
            raise ValueError("not a boolean")
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("not an integer")
            if isinstance(value, bool):
                raise ValueError("not an integer")
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError("not a number")
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise ValueError("not a string")
            return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: expected {_type_name(hint)}, got {value!r} ({exc})") from None
    return value


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))
