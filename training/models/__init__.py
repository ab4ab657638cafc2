"""Models: the :data:`MODELS` registry and :func:`build_model`.

Transfer backbones: torchvision's (:mod:`training.models.transfer`; pretrained weights from the
torch hub cache or the network) and EfficientNet-Lite0/1/2
(:mod:`training.models.efficientnet_lite`; pretrained weights ship with poketune).
:func:`check_pretrained_offline` tells, before any training starts, whether ``model.pretrained``
can be satisfied without the network.

Every model is a :class:`Classifier`: it has a ``head`` submodule, ``regularization()`` (an extra
loss term, zero unless ``model.head_l2`` is set on a transfer model) and ``set_freeze_depth()``.
Call the module-level helpers (:func:`regularization`, :func:`set_freeze_depth`,
:func:`head_parameters`, :func:`count_parameters`): they also accept a DDP-wrapped model.
"""

from training.models import (  # noqa: F401  (registers the models)
    cnn,
    efficientnet_lite,
    mlp,
    transfer,
)
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
from training.models.efficientnet_lite import LITE_VARIANTS, lite_weights_file
from training.models.mlp import MLP
from training.models.transfer import (
    BACKBONES,
    TransferHead,
    TransferModel,
    check_pretrained_offline,
)

__all__ = [
    "BACKBONES",
    "CNN",
    "LITE_VARIANTS",
    "MLP",
    "MODELS",
    "Classifier",
    "PretrainedWeightsError",
    "TransferHead",
    "TransferModel",
    "build_model",
    "check_pretrained_offline",
    "count_parameters",
    "head_parameters",
    "lite_weights_file",
    "regularization",
    "set_freeze_depth",
    "unwrap",
]
