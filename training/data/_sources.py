"""Building blocks shared by the layouts: what an item is, CSV reading, path checks and the
bad-item collector that either raises or skips (``DataConfig.skip_bad``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image

from training.data._errors import DataError

__all__ = [
    "IMAGE_EXTS",
    "Listing",
    "Problems",
    "SourceItem",
    "image_files",
    "inside",
    "read_csv",
]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class SourceItem:
    """One image to decode.

    ``path`` is fingerprinted (size + mtime) for the cache key.  Layouts whose images are not
    one file each (CIFAR-10 batches) point ``path`` at the container file and give ``read``,
    which returns the image; otherwise ``path`` is opened with PIL.
    """

    id: str
    path: Path
    label: str | None = None  # None: unlabelled (test split)
    read: Callable[[], Image.Image] | None = field(default=None, compare=False)


@dataclass
class Listing:
    """What a layout found: the items in order, plus what it skipped or filtered on purpose."""

    items: list[SourceItem]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    filtered: int = 0  # rows outside the class filter (manifest layout)
    # class names the layout knows even without images (imagefolder's empty folders), so an
    # empty class is reported instead of vanishing
    classes_found: list[str] = field(default_factory=list)
    # labels outside the class list are dropped (manifest) instead of being errors
    filters_classes: bool = False


class Problems:
    """Collects bad items; :meth:`settle` raises them all at once or turns them into skips."""

    _SHOWN = 20

    def __init__(self, what: str) -> None:
        self.what = what
        self.items: list[tuple[str, str]] = []

    def add(self, item: str, reason: str) -> None:
        self.items.append((item, reason))

    def __bool__(self) -> bool:
        return bool(self.items)

    def settle(self, skip_bad: bool) -> list[tuple[str, str]]:
        """The skipped items when ``skip_bad``; otherwise raise a DataError naming them."""
        if not self.items or skip_bad:
            return list(self.items)
        lines = [f"  {item}: {reason}" for item, reason in self.items[: self._SHOWN]]
        more = len(self.items) - self._SHOWN
        if more > 0:
            lines.append(f"  ... and {more} more")
        raise DataError(
            f"{self.what}: {len(self.items)} bad item(s):\n"
            + "\n".join(lines)
            + "\n(set data.skip_bad=true to skip and list them instead)"
        )


def read_csv(path: Path, required: Iterable[str], *, what: str = "CSV") -> pd.DataFrame:
    """Every column as a string (ids like ``007`` stay intact; empty cells are "")."""
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} {path} cannot be parsed: {exc}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"{what} {path} has no column(s) {missing}; its columns are {list(df.columns)} "
            "(set data.id_col / data.label_col / data.path_col)"
        )
    return df


def inside(path: Path, roots: Iterable[Path]) -> bool:
    """Whether ``path`` stays inside one of ``roots`` after resolving ``..``.

    Lexical on purpose (normpath, not resolve): a user's own symlinked data folder is fine,
    a ``../`` in a CSV is not.
    """
    p = os.path.normpath(os.path.abspath(path))
    for root in roots:
        r = os.path.normpath(os.path.abspath(root))
        if p == r or p.startswith(r.rstrip(os.sep) + os.sep):
            return True
    return False


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (sorted; hidden files ignored)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS
    )
