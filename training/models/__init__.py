"""Models: the :data:`MODELS` registry and :func:`build_model`.

Every model is a :class:`Classifier`: it has a ``head`` submodule, ``regularization()`` (an extra
loss term, zero unless ``model.head_l2`` is set on a transfer model) and ``set_freeze_depth()``.
Call the module-level helpers (:func:`regularization`, :func:`set_freeze_depth`,
:func:`head_parameters`, :func:`count_parameters`): they also accept a DDP-wrapped model.
"""

from training.models import cnn, mlp, transfer  # noqa: F401  (registers the models)
from training.models._base import (
    Classifier,
    count_parameters,
    head_parameters,
    regularization,
    set_freeze_depth,
    unwrap,
)
from training.models._registry import MODELS, build_model
from training.models._weights import PretrainedWeightsError
from training.models.cnn import CNN
from training.models.mlp import MLP
from training.models.transfer import BACKBONES, TransferHead, TransferModel

__all__ = [
    "BACKBONES",
    "CNN",
    "MLP",
    "MODELS",
    "Classifier",
    "PretrainedWeightsError",
    "TransferHead",
    "TransferModel",
    "build_model",
    "count_parameters",
    "head_parameters",
    "regularization",
    "set_freeze_depth",
    "unwrap",
]
