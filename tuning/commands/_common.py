"""Arguments and errors shared by several subcommands.

Cheap to import, like every ``add_arguments``: building the parser (``poketune --help``)
must not import Ray, torch, pandas or MLflow; a command imports those in its ``run``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from training.config import parse_override
from training.errors import PoketuneError
from training.ray_session import default_storage

__all__ = ["UsageError", "add_storage", "int_at_least", "overrides"]


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


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum``, named in argparse's one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse
