"""The one exception type of the data layer."""

from __future__ import annotations

from training.errors import PoketuneError

__all__ = ["DataError"]


class DataError(PoketuneError, ValueError):
    """Bad input data; the message names the offending file, row, id or column."""
