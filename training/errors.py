"""The user's mistakes, as one exception family.

A :class:`PoketuneError` means "the input was wrong, and the message says which file, key or
line": the CLI prints it as one line and exits 2. Anything else is a bug of ours and keeps
its traceback. Cheap to import (the CLI imports it before any command runs).
"""

from __future__ import annotations

__all__ = ["PoketuneError"]


class PoketuneError(Exception):
    """Bad input (a file, key, value or URI); the message names it."""
