"""What :func:`load_split` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.data._preprocessing import Preprocessing

__all__ = ["ImageSet", "LoadReport"]


@dataclass
class LoadReport:
    """What happened while loading; the caller decides what to print."""

    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item, reason), skip_bad only
    crop_fallbacks: int = 0  # images kept whole because no outline was found
    crop_fallback_ids: list[str] = field(default_factory=list)
    decoded: int = 0  # images decoded by this call (0 on a cache hit)
    from_cache: bool = False
    filtered: int = 0  # rows dropped on purpose by the class filter (manifest layout)
    cache_file: str = ""  # the .npy holding the images ("" when nothing could be cached)
    skipped_file: str = ""  # CSV listing `skipped` ("" when nothing was skipped)
    transparent: int = 0  # images with transparent pixels (composited over the background)

    def to_dict(self) -> dict[str, Any]:
        return {
            "skipped": [list(s) for s in self.skipped],
            "crop_fallbacks": self.crop_fallbacks,
            "crop_fallback_ids": list(self.crop_fallback_ids),
            "filtered": self.filtered,
            "skipped_file": self.skipped_file,
            "transparent": self.transparent,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoadReport:
        return cls(
            skipped=[(str(a), str(b)) for a, b in d.get("skipped", [])],
            crop_fallbacks=int(d.get("crop_fallbacks", 0)),
            crop_fallback_ids=[str(i) for i in d.get("crop_fallback_ids", [])],
            filtered=int(d.get("filtered", 0)),
            skipped_file=str(d.get("skipped_file", "")),
            transparent=int(d.get("transparent", 0)),
        )

    def summary(self) -> str:
        """One line for logs."""
        parts = [f"decoded {self.decoded}" if not self.from_cache else "from cache"]
        if self.filtered:
            parts.append(f"{self.filtered} rows filtered by class")
        if self.skipped:
            where = f" (listed in {self.skipped_file})" if self.skipped_file else ""
            parts.append(f"{len(self.skipped)} bad items skipped{where}")
        if self.crop_fallbacks:
            parts.append(f"{self.crop_fallbacks} images without outline kept uncropped")
        return ", ".join(parts)


@dataclass
class ImageSet:
    images: np.ndarray  # uint8, N×H×W×C
    labels: np.ndarray  # int64, -1 where unknown (test split)
    ids: list[str]
    class_names: list[str]
    preprocessing: Preprocessing
    source_hash: str  # hash of the source files, labels, preprocessing and split
    report: LoadReport = field(default_factory=LoadReport)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> np.ndarray:
        """Images per class (length num_classes); unlabelled (-1) images are not counted."""
        known = self.labels[self.labels >= 0]
        return np.bincount(known, minlength=self.num_classes).astype(np.int64)

    def subset(self, idx: np.ndarray) -> ImageSet:
        """The images at ``idx`` (a train/val split), sharing class names and preprocessing."""
        idx = np.asarray(idx, dtype=np.int64)
        return ImageSet(
            images=self.images[idx],
            labels=self.labels[idx],
            ids=[self.ids[i] for i in idx.tolist()],
            class_names=list(self.class_names),
            preprocessing=self.preprocessing,
            source_hash=self.source_hash,
            report=self.report,
        )
