"""The explicit checkpoint dict: everything resume, retrain and submit need.

Keys: ``model`` (current weights), ``best_model`` (weights of the best epoch so far),
``optimizer``, ``scheduler``, ``scaler``, ``epoch`` (epochs completed), ``best_epoch``,
``config`` (flat TrainConfig), ``class_names``, ``preprocessing`` (Preprocessing.to_dict()),
``history`` (per-epoch metrics), ``early_stop`` (its state), ``source_hash``, ``format``.
Only tensors and plain Python values, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT_FILE", "FORMAT_VERSION", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT_VERSION = 1


def save_checkpoint(state: dict[str, Any], directory: str | Path) -> Path:
    """Write ``state`` to ``directory/checkpoint.pt`` atomically (a crash leaves the old one)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CHECKPOINT_FILE
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"format": FORMAT_VERSION, **state}, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file, or the ``checkpoint.pt`` inside a directory, onto the CPU."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint format {state.get('format')!r}")
    return state
