"""Loading trained models for prediction: checkpoints, ensembles, MLflow models.

A :class:`Predictor` is one or more members (model + its config) that share class names and
preprocessing; it predicts averaged class probabilities for uint8 images and decodes a test
folder exactly as the members' training data was decoded (crop, size, RGBA policy,
background come from the stored :class:`Preprocessing`, never from the user).

:class:`EnsembleModel` is the same thing as an ``mlflow.pyfunc`` model: its artifacts are the
members' ``checkpoint.pt`` files, so ``poketune submit`` can fetch them back from a
``models:/NAME/VERSION`` URI and apply the stored preprocessing itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.pyfunc import PythonModel
from torch import nn

from training.checkpoint import Checkpoint
from training.config import DataConfig, TrainConfig
from training.data import ImageSet, Preprocessing, load_split
from training.errors import PoketuneError
from training.evaluation import default_device
from training.loop import predict_proba
from tuning._mlflow import MEMBER_PREFIX
from tuning.resolve import ModelURIError, as_checkpoint_file, resolve

__all__ = [
    "MEMBER_PREFIX",
    "EnsembleModel",
    "ModelURIError",
    "Predictor",
    "PredictorError",
    "decode_config",
    "load_predictor",
]

# a submission's test folder is test/ (+ sample_submission.csv) whatever layout the training
# images had; layouts with their own test split keep it
_TEST_LAYOUT = {"auto": "kaggle", "manifest": "kaggle", "imagefolder": "kaggle"}


class PredictorError(PoketuneError, ValueError):
    """Members that cannot form one predictor (different classes or preprocessing)."""


def decode_config(prep: Preprocessing, where: DataConfig) -> DataConfig:
    """``where``'s file locations (layout, CSV columns) with ``prep``'s decode parameters.

    Every test image must be predicted, so bad items are errors and no class filter applies.
    """
    cfg = dataclasses.replace(
        where,
        layout=_TEST_LAYOUT.get(where.layout, where.layout),
        image_size=prep.image_size,
        crop=prep.crop,
        rgba=prep.rgba,
        background=list(prep.background),
        normalize=prep.normalize,
        classes=[],
        skip_bad=False,
    )
    # DataConfig has no crop_pad: a checkpoint written with another padding cannot be decoded
    # through load_split faithfully, so refuse rather than predict on different pixels
    if Preprocessing.from_config(cfg) != prep:
        raise PredictorError(
            f"stored preprocessing {prep.to_dict()} cannot be reproduced by a DataConfig "
            f"(got {Preprocessing.from_config(cfg).to_dict()})"
        )
    return cfg


@dataclass
class Predictor:
    """Members that share classes and preprocessing; predictions average their probabilities."""

    members: list[tuple[nn.Module, TrainConfig]]
    class_names: list[str]
    preprocessing: Preprocessing
    sources: list[str]
    device: torch.device = dataclasses.field(default_factory=default_device)

    @classmethod
    def from_checkpoints(
        cls,
        checkpoints: Sequence[Checkpoint],
        sources: Sequence[str],
        *,
        device: torch.device | None = None,
    ) -> Predictor:
        if not checkpoints:
            raise PredictorError("a predictor needs at least one checkpoint")
        first = checkpoints[0]
        for ckpt, src in zip(checkpoints[1:], sources[1:], strict=True):
            if ckpt.class_names != first.class_names:
                raise PredictorError(
                    f"{src}: class names {ckpt.class_names} differ from "
                    f"{sources[0]}'s {first.class_names}; ensemble members must share them"
                )
            if ckpt.preprocessing != first.preprocessing:
                raise PredictorError(
                    f"{src}: preprocessing {ckpt.preprocessing.to_dict()} differs from "
                    f"{sources[0]}'s {first.preprocessing.to_dict()}; ensemble members must share it"
                )
        dev = device or default_device()
        members = [(c.build_model().to(dev).eval(), c.config) for c in checkpoints]
        return cls(members, list(first.class_names), first.preprocessing, list(sources), dev)

    @property
    def config(self) -> TrainConfig:
        """The first member's config (members share their data section's meaning)."""
        return self.members[0][1]

    def data_config(self, where: DataConfig | None = None) -> DataConfig:
        """How to list and decode a test folder: file locations from ``where`` (default: the
        stored config's), decode parameters from the stored preprocessing."""
        return decode_config(self.preprocessing, where or self.config.data)

    def load_test(
        self, root: str | Path, where: DataConfig | None = None, *, cache_dir: str | Path | None = None
    ) -> ImageSet:
        """The test split of ``root``, decoded exactly like the training images."""
        return load_split(
            root, self.data_config(where), "test", class_names=self.class_names, cache_dir=cache_dir
        )

    def predict_proba(
        self, images: np.ndarray | torch.Tensor, *, tta: bool = False, batch_size: int | None = None
    ) -> np.ndarray:
        """Averaged class probabilities (N×classes, float32) for uint8 N×C×H×W images."""
        x = torch.as_tensor(images)
        if x.dtype != torch.uint8:
            raise PredictorError(f"predict_proba expects uint8 images, got {x.dtype}")
        self._check_shape(x)
        total = torch.zeros(len(x), len(self.class_names))
        for model, cfg in self.members:
            total += predict_proba(
                model,
                x,
                self.device,
                self.preprocessing,
                batch_size=batch_size or cfg.eval_batch_size,
                amp=cfg.optim.amp,
                tta=tta,
            )
        return (total / len(self.members)).numpy()

    @torch.no_grad()
    def predict_proba_normalized(self, x: np.ndarray | torch.Tensor, *, tta: bool = False) -> np.ndarray:
        """Averaged probabilities for already normalised float N×C×H×W input (the pyfunc's
        declared input: what a serving client sends)."""
        t = torch.as_tensor(x, dtype=torch.float32)
        self._check_shape(t)
        total = torch.zeros(len(t), len(self.class_names))
        for model, cfg in self.members:
            model.eval()
            for start in range(0, len(t), cfg.eval_batch_size):
                xb = t[start : start + cfg.eval_batch_size].to(self.device)
                p = model(xb).float().softmax(-1)
                if tta:
                    p = (p + model(torch.flip(xb, dims=[-1])).float().softmax(-1)) / 2
                total[start : start + len(xb)] += p.cpu()
        return (total / len(self.members)).numpy()

    def _check_shape(self, x: torch.Tensor) -> None:
        size = self.preprocessing.image_size
        want = (self.preprocessing.channels, size, size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise PredictorError(
                f"expected N×{want[0]}×{want[1]}×{want[2]} images, got shape {tuple(x.shape)}"
            )


def load_predictor(
    model_uri: str, mlflow_uri: str | None = None, *, device: torch.device | None = None
) -> Predictor:
    """A :class:`Predictor` for any model spec :func:`tuning.resolve.resolve` accepts."""
    found = resolve(model_uri, mlflow_uri=mlflow_uri)
    return Predictor.from_checkpoints(
        [r.checkpoint for r in found], [r.source for r in found], device=device
    )


# ---------------------------------------------------------------------------------- pyfunc
class EnsembleModel(PythonModel):  # type: ignore[misc]
    """``mlflow.pyfunc`` model over the ``member_<k>`` checkpoint artifacts.

    ``predict`` takes the normalised float32 N×C×H×W batch the signature declares, or (called
    on the unwrapped model, where no schema is enforced) uint8 images, which it normalises
    with the stored preprocessing; it returns the members' averaged class probabilities.
    """

    def load_context(self, context: Any) -> None:
        keys = sorted(
            (k for k in context.artifacts if k.startswith(MEMBER_PREFIX)),
            key=lambda k: int(k[len(MEMBER_PREFIX) :]),
        )
        files = [as_checkpoint_file(Path(context.artifacts[k])) for k in keys]
        self.predictor = Predictor.from_checkpoints([Checkpoint.load(f) for f in files], keys)

    # np.ndarray is a hint MLflow accepts without deriving a schema from it: the logged
    # signature describes the input
    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        tta = bool((params or {}).get("tta", False))
        x = np.asarray(model_input)
        if x.dtype == np.uint8:
            return self.predictor.predict_proba(x, tta=tta)
        return self.predictor.predict_proba_normalized(x.astype(np.float32, copy=False), tta=tta)
