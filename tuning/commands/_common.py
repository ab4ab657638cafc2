"""Arguments and errors shared by several subcommands.

Cheap to import, like every ``add_arguments``: building the parser (``poketune --help``)
must not import Ray, torch, pandas or MLflow; a command imports those in its ``run``.
"""

from __future__ import annotations

import argparse
from typing import Any

from training.config import parse_override
from training.errors import PoketuneError
from training.ray_session import default_storage

__all__ = ["UsageError", "add_storage", "overrides"]


class UsageError(PoketuneError):
    """Arguments that parse but do not go together (``--format parquet`` without ``--out``)."""


def add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage",
        default=default_storage(),
        help="sweep storage: a folder or s3://… (default: ./poketune_runs)",
    )


def overrides(pairs: list[str] | None) -> dict[str, Any]:
    return dict(parse_override(p) for p in pairs or [])
