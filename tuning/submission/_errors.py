"""The submission package's error type."""

from __future__ import annotations

from training.errors import PoketuneError

__all__ = ["SubmissionError"]


class SubmissionError(PoketuneError, ValueError):
    """A submission or answers file that is not what it must be; the message names the rows."""
