"""The error type of search-space loading and the helper that points it at a file line."""

from __future__ import annotations

from dataclasses import dataclass, field

from training.config import ConfigError

__all__ = ["Invalid", "KeyPath", "Locator", "SpaceError", "format_path"]

#: a position inside the YAML document: mapping keys and sequence indices
KeyPath = tuple[str | int, ...]


class SpaceError(ConfigError):
    """A search space is invalid; the message names the file, line, key path and what is allowed.

    A :class:`~training.config.ConfigError` (so a ``ValueError``): the space is the sweep's
    configuration, and callers that refuse bad configs refuse bad spaces the same way.
    """


class Invalid(Exception):
    """Raised by checks that do not know the file; the loader turns it into a :class:`SpaceError`.

    ``subpath`` is relative to the key being checked (``("step",)`` for a bad step).
    """

    def __init__(self, message: str, *subpath: str | int) -> None:
        super().__init__(message)
        self.message = message
        self.subpath: KeyPath = subpath


def format_path(path: KeyPath) -> str:
    """``("params", "optim.lr", "uniform", 1)`` → ``params.optim.lr.uniform[1]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@dataclass(frozen=True)
class Locator:
    """Builds ``file:line: key.path: message`` errors from the YAML node marks."""

    source: str
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line(self, path: KeyPath) -> int | None:
        # the deepest recorded ancestor: a value inside a flow list has no mark of its own
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def error(self, path: KeyPath, message: str) -> SpaceError:
        line = self.line(path)
        where = f"{self.source}:{line}" if line is not None else self.source
        key = format_path(path)
        return SpaceError(f"{where}: {key}: {message}" if key else f"{where}: {message}")
