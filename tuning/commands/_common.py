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

__all__ = ["UsageError", "add_storage", "duration", "gpu_amount", "int_at_least", "overrides", "positive_float", "storage_uri"]

#: storage URI schemes pyarrow's filesystems (and so Ray Tune) understand
STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


class UsageError(PoketuneError):
    """Arguments that parse but do not go together (``--format parquet`` without ``--out``)."""


def duration(text: str) -> float:
    """An argparse ``type``: ``90s``, ``20m``, ``1.5h`` or a bare number of seconds."""
    from tuning.budget import BudgetError, parse_duration

    try:
        return parse_duration(text)
    except BudgetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def storage_uri(text: str) -> str:
    """An argparse ``type``: a folder, or a URI whose scheme a pyarrow filesystem serves."""
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in STORAGE_SCHEMES:
            raise argparse.ArgumentTypeError(
                f"unknown storage scheme {scheme + '://'!r} in {text!r}; use a folder or one of "
                + ", ".join(f"{s}://" for s in STORAGE_SCHEMES)
            )
    elif not text.strip():
        raise argparse.ArgumentTypeError("an empty storage path")
    return text


def add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage",
        type=storage_uri,
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


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def gpu_amount(text: str) -> float:
    """An argparse ``type``: GPUs per worker, as Ray takes them: 0, a fraction below 1 (trials
    share a GPU), or a whole number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a GPU count such as 0, 0.25 or 1, got {text!r}") from None
    if value < 0 or value == float("inf") or (value > 1 and not value.is_integer()):
        raise argparse.ArgumentTypeError(
            f"expected 0, a fraction below 1 or a whole number of GPUs, got {text} (Ray cannot split more than one GPU)"
        )
    return value
