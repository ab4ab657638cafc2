"""Sweep storage: a local folder or any URI pyarrow understands (``s3://``, ``gs://``).

On a cluster every node writes trial results and checkpoints to the same storage, so the
driver, ``poketune results`` and ``poketune retrain`` all read from there too.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

__all__ = [
    "DATA_CHECK",
    "SWEEP_META",
    "SWEEP_SPACE",
    "is_remote",
    "local_copy",
    "read_text",
    "resolve_storage",
    "sweep_uri",
    "write_text",
]

SWEEP_META = "poketune_sweep.json"
SWEEP_SPACE = "search_space.yaml"
DATA_CHECK = "data_check.json"  # poketune check's findings on the sweep's data


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def resolve_storage(storage: str) -> str:
    """Local paths become absolute (Ray Tune requires it); URIs pass through."""
    if is_remote(storage):
        return storage.rstrip("/")
    if storage.startswith("file://"):
        storage = storage[len("file://") :]
    return str(Path(storage).expanduser().resolve())


def sweep_uri(storage: str, name: str) -> str:
    return f"{resolve_storage(storage)}/{name}"


def write_text(uri: str, text: str) -> None:
    fs, path = pafs.FileSystem.from_uri(uri if is_remote(uri) else str(Path(uri).resolve()))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def read_text(uri: str) -> str:
    fs, path = pafs.FileSystem.from_uri(uri if is_remote(uri) else str(Path(uri).resolve()))
    with fs.open_input_stream(path) as f:
        return bytes(f.read()).decode()


def local_copy(uri: str) -> Path:
    """A local folder holding ``uri``: itself when local, else a synced copy in a temp cache."""
    if not is_remote(uri):
        return Path(resolve_storage(uri))
    target = Path(tempfile.gettempdir()) / "poketune-sync" / hashlib.sha1(uri.encode()).hexdigest()[:12]
    target.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(uri, str(target))
    return target
