"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse
from typing import Any

from training.config import parse_override

__all__ = ["add_storage", "overrides"]


def add_storage(p: argparse.ArgumentParser) -> None:
    from tuning.sweep import default_storage

    p.add_argument(
        "--storage",
        default=default_storage(),
        help="sweep storage: a folder or s3://… (default: ./poketune_runs)",
    )


def overrides(pairs: list[str] | None) -> dict[str, Any]:
    return dict(parse_override(p) for p in pairs or [])
