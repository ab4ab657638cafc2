"""The checkpoint: one typed record from ``fit`` to ``submit``.

``fit`` writes a :class:`Checkpoint` when an epoch is worth keeping, resume reads it back,
and every later stage (``train``'s report, export, retrain, compare, predict, submit) reads
the same type. Nothing outside this module knows how it is laid out on disk: the file is a
plain dict of tensors and Python values (so it loads with ``weights_only=True``) whose keys
are this dataclass's fields plus ``format``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from training.config import TrainConfig
from training.data import Preprocessing
from training.errors import PoketuneError
from training.files import atomic_write, atomic_write_text

__all__ = [
    "CHECKPOINT_FILE",
    "DIGEST_SUFFIX",
    "FORMAT_VERSION",
    "PREVIOUS_FILE",
    "Checkpoint",
    "CheckpointError",
    "OutOfFold",
    "build_model_for",
    "load_checkpoint",
    "load_initial_weights",
    "load_resumable",
    "save_resumable",
    "without_head",
    "write_verified",
]

CHECKPOINT_FILE = "checkpoint.pt"
#: a trial's checkpoint folder also holds the checkpoint it reported before this one, so a
#: corrupt latest file costs the epochs since the one before, not the trial (Tune keeps one
#: folder per trial: keeping two folders would halve how often it snapshots the sweep)
PREVIOUS_FILE = "previous.pt"
#: every checkpoint file has a ``NAME.sha256`` beside it: torch.load checks no CRC, so a
#: flipped byte inside a tensor would load silently
DIGEST_SUFFIX = ".sha256"
#: bumped whenever the stored fields change: 1 = the untyped dict, 2 = :class:`Checkpoint`
FORMAT_VERSION = 2

StateDict = dict[str, Tensor]


class CheckpointError(PoketuneError, ValueError):
    """A checkpoint that is missing, unreadable or of another format; names the file."""


def build_model_for(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The (untrained) model ``cfg`` describes for ``num_classes`` classes."""
    from training.models import build_model

    return build_model(
        cfg.model,
        in_channels=cfg.in_channels,
        num_classes=num_classes,
        image_size=cfg.data.image_size,
    )


@dataclass
class OutOfFold:
    """A cross-validated trial's predictions for every training image, each made by the one
    fold model that did not train on it, at the trial's best epoch (by the folds' mean)."""

    ids: list[str]  # image ids (``train.csv``), in the order of the rows below
    labels: Tensor  # int64 N: the images' classes
    probs: Tensor  # float32 N×C: softmax of the fold model that held the image out
    fold: Tensor  # int64 N: which fold held it out (0-based)
    epoch: int  # the 1-based epoch the predictions are of

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass
class Checkpoint:
    """Everything resume, retrain and prediction need, in one record.

    ``model`` holds the weights after ``epoch`` epochs, ``best_model`` the weights of the
    best epoch so far (``None`` when that is ``model`` itself: an inference checkpoint, or a
    run without validation). The training-only state (optimizer, scheduler, scaler,
    early stopping) is empty in an inference checkpoint.
    """

    config: TrainConfig
    preprocessing: Preprocessing
    class_names: list[str]
    model: StateDict = field(repr=False)
    best_model: StateDict | None = field(default=None, repr=False)
    epoch: int = 0  # epochs completed
    best_epoch: int = 0  # 1-based epoch whose weights ``best_weights`` are
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)
    optimizer: dict[str, Any] = field(default_factory=dict, repr=False)
    scheduler: dict[str, Any] = field(default_factory=dict, repr=False)
    scaler: dict[str, Any] = field(default_factory=dict, repr=False)
    early_stop: dict[str, Any] = field(default_factory=dict, repr=False)
    source_hash: str = ""  # the training data's hash (``ImageSet.source_hash``)
    #: a cross-validated trial (``tune --cv K``): each fold's own full state, which resume
    #: continues; ``model``/``best_model`` above are fold 0's, so one fold serves as the
    #: trial's model wherever a single one is asked for
    folds: list[Checkpoint] = field(default_factory=list, repr=False)
    oof: OutOfFold | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ derived views
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def best_weights(self) -> StateDict:
        return self.best_model if self.best_model is not None else self.model

    def for_inference(self) -> Checkpoint:
        """The best weights with what prediction needs (config, classes, preprocessing,
        history); an Adam state alone is twice the weights, so training state is dropped."""
        return dataclasses.replace(
            self,
            model=self.best_weights,
            best_model=None,
            optimizer={},
            scheduler={},
            scaler={},
            early_stop={},
            folds=[],
            oof=None,
        )

    def members(self) -> list[Checkpoint]:
        """The models this checkpoint stands for, ready for inference: each fold's of a
        cross-validated trial (trained on the other folds' images), else itself."""
        return [f.for_inference() for f in self.folds] if self.folds else [self.for_inference()]

    def build_model(self, *, best: bool = True) -> nn.Module:
        """The model in eval mode with its best (or last) weights, on the CPU."""
        # the checkpoint holds every weight: fetching ImageNet weights first would be wasted
        # (and fails offline)
        cfg = self.config.replace(**{"model.pretrained": False, "model.weights_path": None})
        model = build_model_for(cfg, self.num_classes)
        model.load_state_dict(self.best_weights if best else self.model)
        return model.eval()

    # ------------------------------------------------------------------ (de)serialise
    def _state(self) -> dict[str, Any]:
        # torch.save keeps shared storages shared: fold 0's tensors are written once
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        state["config"] = self.config.to_flat()
        state["preprocessing"] = self.preprocessing.to_dict()
        state["folds"] = [f._state() for f in self.folds]
        state["oof"] = self.oof.to_dict() if self.oof is not None else None
        state["format"] = FORMAT_VERSION
        return state

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> Checkpoint:
        state = dict(state)
        state.pop("format", None)
        state["config"] = TrainConfig.from_flat(state["config"])
        state["preprocessing"] = Preprocessing.from_dict(state["preprocessing"])
        state["folds"] = [cls._from_state(f) for f in state.get("folds") or []]
        oof = state.get("oof")
        state["oof"] = OutOfFold(**oof) if oof is not None else None
        return cls(**state)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save(self._state(), buf)
        return buf.getvalue()

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/checkpoint.pt`` and its digest atomically (a crash leaves the
        previous file)."""
        return write_verified(Path(directory) / CHECKPOINT_FILE, self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        """Read a checkpoint file, or the ``checkpoint.pt`` inside a folder, onto the CPU."""
        file = _file(path)
        return cls.from_bytes(_read_verified(file), file)

    @classmethod
    def from_bytes(cls, data: bytes, file: Path) -> Checkpoint:
        """Parse a checkpoint file's ``data``; ``file`` names it in errors."""
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # zip/pickle errors come in many types: all mean unreadable
            raise CheckpointError(f"{file}: not a readable checkpoint ({exc})") from exc
        version = state.get("format") if isinstance(state, dict) else None
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{file}: checkpoint format {version!r}, this poketune reads format "
                f"{FORMAT_VERSION}; retrain it with this version"
            )
        try:
            return cls._from_state(state)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{file}: malformed checkpoint ({exc})") from exc


def load_checkpoint(path: str | Path) -> Checkpoint:
    """:meth:`Checkpoint.load`, for call sites that read better as a function."""
    return Checkpoint.load(path)


HEAD_PREFIX = "head."  # every poketune model's classification head is its ``head`` submodule


def without_head(state: StateDict) -> StateDict:
    """``state`` less the head's weights: what :func:`load_initial_weights` starts a model's
    body from while its head starts from the model's own (seeded) initialisation."""
    return {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}


def load_initial_weights(model: nn.Module, state: StateDict, *, source: str) -> None:
    """Start ``model`` from ``state``: a warm start, not a resume (the optimizer, schedule and
    epoch count start afresh). ``state`` holds every weight, or every weight but the head's
    (:func:`without_head`), and then the head keeps the model's own initialisation. Strict
    otherwise: a missing, extra or reshaped key is a :class:`CheckpointError` that names
    ``source`` and the first keys."""
    expected = model.state_dict()
    if not any(k.startswith(HEAD_PREFIX) for k in state):  # the body only: the head starts afresh
        expected = without_head(expected)
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
        for label, keys in (
            ("missing keys", sorted(expected.keys() - state.keys())),
            ("unexpected keys", sorted(state.keys() - expected.keys())),
            (
                "shape mismatches",
                [k for k in sorted(expected.keys() & state.keys()) if expected[k].shape != state[k].shape],
            ),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(f"{source}: its weights do not fit this model: " + "; ".join(problems))
    model.load_state_dict(state, strict=len(expected) == len(model.state_dict()))


def _file(path: str | Path) -> Path:
    file = Path(path)
    return file / CHECKPOINT_FILE if file.is_dir() else file


def _digest_file(file: Path) -> Path:
    return file.with_name(file.name + DIGEST_SUFFIX)


def write_verified(file: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``file`` atomically, then its sha256 beside it (``NAME.sha256``)."""
    target = atomic_write(file, data)
    atomic_write_text(_digest_file(target), hashlib.sha256(data).hexdigest() + "\n")
    return target


def _read_verified(file: Path) -> bytes:
    """The file's bytes, checked against its digest when one is beside it (files written
    before digests existed, or copied alone, are read unchecked)."""
    if not file.is_file():
        raise CheckpointError(f"no checkpoint at {file}")
    data = file.read_bytes()
    digest = _digest_file(file)
    if digest.is_file():
        expected = digest.read_text().strip()
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise CheckpointError(
                f"{file}: corrupt checkpoint ({len(data)} bytes whose sha256 {actual[:12]}… is not "
                f"the {expected[:12]}… written with it)"
            )
    return data


def save_resumable(directory: str | Path, checkpoint: Checkpoint, previous: bytes | None) -> bytes:
    """Write a trial checkpoint folder :func:`load_resumable` reads: ``checkpoint`` and, when
    given, the file bytes of the one reported before it (:data:`PREVIOUS_FILE`), each with
    its digest. Returns ``checkpoint``'s file bytes: the next folder's ``previous``."""
    data = checkpoint.to_bytes()
    write_verified(Path(directory) / CHECKPOINT_FILE, data)
    if previous is not None:
        write_verified(Path(directory) / PREVIOUS_FILE, previous)
    return data


def load_resumable(path: str | Path) -> tuple[Checkpoint, bytes, str | None]:
    """A trial checkpoint folder's latest readable checkpoint, for resuming.

    Returns the checkpoint, its file's bytes, and ``None``; or, when ``checkpoint.pt`` is
    corrupt or unreadable and the folder holds the one reported before it
    (:data:`PREVIOUS_FILE`), that one with a sentence saying what happened. Raises the
    latest file's :class:`CheckpointError` when there is nothing to fall back to.
    """
    file = _file(path)
    try:
        data = _read_verified(file)
        return Checkpoint.from_bytes(data, file), data, None
    except CheckpointError as latest:
        previous = file.with_name(PREVIOUS_FILE)
        if not previous.is_file():
            raise
        data = _read_verified(previous)
        ckpt = Checkpoint.from_bytes(data, previous)
        return ckpt, data, f"{latest}; resumed from the checkpoint before it (epoch {ckpt.epoch})"
