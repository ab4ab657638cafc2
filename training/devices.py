"""Which device a training process may use: what Ray granted it, not what it can see.

Ray 2.60 leaves ``CUDA_VISIBLE_DEVICES`` untouched for a task or actor granted no GPU, so a
Tune trial started with ``--gpus-per-trial 0`` on a GPU host still sees every GPU. Trusting
``torch.cuda.is_available()`` there puts every such trial on ``cuda:0``, unreserved. So under
Ray the device follows the granted GPU ids; outside Ray (tests, a bare ``fit``) a visible GPU
is used. A granted GPU that CUDA cannot start is an error, not a silent CPU fallback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch

from training.errors import PoketuneError

__all__ = ["DeviceError", "granted_gpu_ids", "granted_gpu_share", "release_device_memory", "training_device"]


class DeviceError(PoketuneError, RuntimeError):
    """A GPU was granted but cannot be used."""


def _ray() -> Any:
    """The initialised ``ray`` module, or None: never imported for this (outside Ray it is
    not there, and importing it costs seconds)."""
    ray = sys.modules.get("ray")
    return ray if ray is not None and ray.is_initialized() else None


def granted_gpu_ids() -> list[int | str] | None:
    """The GPU ids Ray granted this process, or None when it is not a Ray worker."""
    ray = _ray()
    return None if ray is None else list(ray.get_gpu_ids())


def granted_gpu_share() -> float:
    """The fraction of a GPU this Ray trial or worker reserved (``--gpus-per-trial 0.25`` →
    0.25); 1 outside Ray or with a whole GPU."""
    ray = _ray()
    if ray is None:
        return 1.0
    gpus = ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)
    return min(float(gpus), 1.0) if gpus else 1.0


def training_device(granted: Sequence[int | str] | None = None, *, under_ray: bool | None = None) -> torch.device:
    """The device for this process's training.

    ``granted``: the GPU ids Ray granted (default: asked of Ray); ``None`` outside Ray.
    """
    if under_ray is None:
        under_ray = granted is not None or granted_gpu_ids() is not None
    if granted is None and under_ray:
        granted = granted_gpu_ids() or []
    if not under_ray:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if not granted:
        return torch.device("cpu")  # a GPU may be visible, but it was not reserved for us
    try:
        if not torch.cuda.is_available():
            raise RuntimeError("torch.cuda.is_available() is False")
        torch.cuda.init()
    except Exception as exc:  # driver too old for the CUDA build, no device nodes, ...
        raise DeviceError(
            f"Ray granted GPU {list(granted)} but CUDA cannot use it ({exc}); check the NVIDIA "
            f"driver against torch {torch.__version__} (CUDA {torch.version.cuda}), or run on CPU"
        ) from None
    # Ray sets CUDA_VISIBLE_DEVICES to the granted ids for a process that has GPUs: the first
    # visible device is ours
    return torch.device("cuda", 0)


def release_device_memory(device: torch.device) -> None:
    """Hand a finished trial's cached CUDA blocks back: a reused Tune actor would otherwise
    keep them, and the next trial's free-memory check (``loop.data_fits_on_device``) and
    other trials packed on the same GPU would see them as used."""
    if device.type == "cuda":
        import gc

        gc.collect()  # tensors kept alive only by reference cycles hold blocks too
        torch.cuda.empty_cache()
