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
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.pyfunc import PythonModel
from torch import nn

from training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from training.config import DataConfig, TrainConfig
from training.data import ImageSet, Preprocessing, load_split
from training.loop import predict_proba
from training.run import model_from_checkpoint

__all__ = [
    "MEMBER_PREFIX",
    "EnsembleModel",
    "ModelURIError",
    "Predictor",
    "PredictorError",
    "decode_config",
    "inference_state",
    "load_predictor",
    "resolve_checkpoints",
]

#: artifact keys of the pyfunc model's members: member_0, member_1, ...
MEMBER_PREFIX = "member_"
_MLMODEL = "MLmodel"
# checkpoint keys only training needs; the registered model leaves them out (an Adam state is
# twice the weights)
_TRAINING_ONLY = ("optimizer", "scheduler", "scaler", "early_stop", "best_model")
# a submission's test folder is test/ (+ sample_submission.csv) whatever layout the training
# images had; layouts with their own test split keep it
_TEST_LAYOUT = {"auto": "kaggle", "manifest": "kaggle", "imagefolder": "kaggle"}


class PredictorError(ValueError):
    """Members that cannot form one predictor (different classes or preprocessing)."""


class ModelURIError(FileNotFoundError):
    """A model URI or checkpoint path that does not resolve; the message names it."""


def inference_state(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint dict with what prediction needs: the (best) weights, config, classes,
    preprocessing, history. Still a valid checkpoint for :func:`load_checkpoint`."""
    best = state.get("best_model")
    out = {k: v for k, v in state.items() if k not in _TRAINING_ONLY}
    if best is not None:
        out["model"] = best
    return out


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


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@dataclass
class Predictor:
    """Members that share classes and preprocessing; predictions average their probabilities."""

    members: list[tuple[nn.Module, TrainConfig]]
    class_names: list[str]
    preprocessing: Preprocessing
    sources: list[str]
    device: torch.device = dataclasses.field(default_factory=_default_device)

    @classmethod
    def from_states(
        cls,
        states: Sequence[dict[str, Any]],
        sources: Sequence[str],
        *,
        device: torch.device | None = None,
    ) -> Predictor:
        if not states:
            raise PredictorError("a predictor needs at least one checkpoint")
        classes = list(states[0]["class_names"])
        prep = Preprocessing.from_dict(states[0]["preprocessing"])
        for state, src in zip(states[1:], sources[1:], strict=True):
            if list(state["class_names"]) != classes:
                raise PredictorError(
                    f"{src}: class names {list(state['class_names'])} differ from "
                    f"{sources[0]}'s {classes}; ensemble members must share them"
                )
            other = Preprocessing.from_dict(state["preprocessing"])
            if other != prep:
                raise PredictorError(
                    f"{src}: preprocessing {other.to_dict()} differs from {sources[0]}'s "
                    f"{prep.to_dict()}; ensemble members must share it"
                )
        dev = device or _default_device()
        members = []
        for state in states:
            model, cfg = model_from_checkpoint(state)
            members.append((model.to(dev).eval(), cfg))
        return cls(members, classes, prep, list(sources), dev)

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


# ---------------------------------------------------------------------------------- resolving
def _is_mlflow_uri(uri: str) -> bool:
    return uri.startswith(("models:/", "runs:/"))


def _checkpoints_in(folder: Path) -> list[Path]:
    """The members of a downloaded pyfunc model (MLmodel order) or every checkpoint.pt inside."""
    mlmodels = sorted(folder.rglob(_MLMODEL))
    if mlmodels:
        from mlflow.models import Model

        root = mlmodels[0].parent
        conf = Model.load(str(mlmodels[0])).flavors.get("python_function", {})
        artifacts: dict[str, Any] = conf.get("artifacts") or {}
        members = sorted(
            (k for k in artifacts if k.startswith(MEMBER_PREFIX)),
            key=lambda k: int(k[len(MEMBER_PREFIX) :]),
        )
        if members:
            return [_as_checkpoint_file(root / artifacts[k]["path"]) for k in members]
    return sorted(folder.rglob(CHECKPOINT_FILE))


def _as_checkpoint_file(path: Path) -> Path:
    return path / CHECKPOINT_FILE if path.is_dir() else path


def _describe_registered(uri: str, tracking_uri: str | None) -> str:
    """Why ``models:/NAME/VERSION`` does not resolve, naming what does exist."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name = uri[len("models:/") :].split("/", 1)[0].split("@", 1)[0]
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        known = [m.name for m in client.search_registered_models(max_results=50)]
        return f"no registered model named {name!r}; registered models: {', '.join(known) or 'none'}"
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    return f"registered model {name!r} has versions {versions}"


def _download(uri: str, tracking_uri: str | None, dst: Path) -> Path:
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from tuning._mlflow import default_tracking_uri, tracking

    tracking_uri = tracking_uri or default_tracking_uri()
    try:
        # the explicit URIs are not enough: resolving models:/NAME/latest goes through the
        # global registry URI
        with tracking(tracking_uri):
            return Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, dst_path=str(dst), tracking_uri=tracking_uri, registry_uri=tracking_uri
                )
            )
    except MlflowException as exc:
        hint = ""
        if uri.startswith("models:/"):
            hint = "; " + _describe_registered(uri, tracking_uri)
        raise ModelURIError(f"model URI {uri!r} does not resolve: {exc.message}{hint}") from None


def resolve_checkpoints(
    model_uri: str, mlflow_uri: str | None = None, *, download_dir: str | Path | None = None
) -> list[Path]:
    """The local ``checkpoint.pt`` files behind ``model_uri``.

    ``model_uri``: ``models:/NAME/VERSION`` (or ``/latest``, ``@alias``), ``runs:/RUN_ID/PATH``,
    a checkpoint file, a folder holding ``checkpoint.pt`` (or a downloaded pyfunc model), or
    several of the local forms separated by commas (an ensemble).  MLflow artifacts go to
    ``download_dir`` (a new temporary folder by default).
    """
    model_uri = model_uri.strip()
    if _is_mlflow_uri(model_uri):
        dst = Path(download_dir or tempfile.mkdtemp(prefix="poketune-model-"))
        found = _checkpoints_in(_download(model_uri, mlflow_uri, dst))
        run_root = "runs:/" + model_uri[len("runs:/") :].split("/", 1)[0]
        if not found and model_uri.startswith("runs:/") and model_uri.rstrip("/") != run_root:
            # e.g. runs:/ID/model of an exported trial (a PyTorch model): its raw checkpoint
            # is elsewhere in the same run
            found = _checkpoints_in(_download(run_root, mlflow_uri, dst / "run"))
        if not found:
            raise ModelURIError(f"model URI {model_uri!r} holds no {CHECKPOINT_FILE}")
        return found

    paths: list[Path] = []
    for part in (p.strip() for p in model_uri.split(",")):
        if not part:
            continue
        if _is_mlflow_uri(part):
            raise ModelURIError(f"{part!r}: MLflow URIs cannot be mixed into a comma-separated list")
        path = Path(part).expanduser()
        if path.is_file():
            paths.append(path)
        elif path.is_dir():
            inside = [path / CHECKPOINT_FILE] if (path / CHECKPOINT_FILE).is_file() else (
                _checkpoints_in(path) if (path / _MLMODEL).is_file() else []
            )
            if not inside:
                raise ModelURIError(f"model path {path} holds no {CHECKPOINT_FILE}")
            paths.extend(inside)
        else:
            raise ModelURIError(f"model path {path} does not exist")
    if not paths:
        raise ModelURIError(f"no model given ({model_uri!r})")
    return paths


def load_predictor(
    model_uri: str, mlflow_uri: str | None = None, *, device: torch.device | None = None
) -> Predictor:
    """A :class:`Predictor` for any model form :func:`resolve_checkpoints` accepts."""
    download = Path(tempfile.mkdtemp(prefix="poketune-model-")) if _is_mlflow_uri(model_uri) else None
    try:
        files = resolve_checkpoints(model_uri, mlflow_uri, download_dir=download)
        states = [load_checkpoint(f) for f in files]
    finally:
        if download is not None:  # the weights are in memory now
            shutil.rmtree(download, ignore_errors=True)
    sources = [f"{model_uri} [{i}]" for i in range(len(files))] if download else [str(f) for f in files]
    return Predictor.from_states(states, sources, device=device)


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
        files = [_as_checkpoint_file(Path(context.artifacts[k])) for k in keys]
        self.predictor = Predictor.from_states([load_checkpoint(f) for f in files], keys)

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
