"""Train/validation split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from training.data._errors import DataError

__all__ = ["kfold_splits", "stratified_group_split", "stratified_split"]


def stratified_split(
    labels: Sequence[int] | np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted int64 index arrays ``(train_idx, val_idx)`` keeping every class's proportion."""
    y = np.asarray(labels, dtype=np.int64)
    if y.ndim != 1 or len(y) == 0:
        raise DataError(f"stratified_split needs a non-empty 1-D label array, got shape {y.shape}")
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if (y < 0).any():
        raise DataError("stratified_split got unlabelled samples (label -1): split the train set")
    classes, counts = np.unique(y, return_counts=True)
    too_few = [int(c) for c, n in zip(classes, counts, strict=True) if n < 2]
    if too_few:
        raise DataError(
            f"class index(es) {too_few} have a single image: a stratified split needs "
            "at least 2 per class"
        )
    try:
        train_idx, val_idx = train_test_split(
            np.arange(len(y)), test_size=val_fraction, random_state=seed, stratify=y
        )
    except ValueError as exc:  # e.g. fewer validation samples than classes
        raise DataError(
            f"cannot split {len(y)} images of {len(classes)} classes with "
            f"val_fraction={val_fraction}: {exc}"
        ) from None
    return np.sort(train_idx).astype(np.int64), np.sort(val_idx).astype(np.int64)


def stratified_group_split(
    labels: Sequence[int] | np.ndarray, groups: Sequence[int] | np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`stratified_split`, but every group (near-duplicate copies of one image)
    lands on one side: the first fold of sklearn's ``StratifiedGroupKFold`` with
    ``round(1 / val_fraction)`` folds is the validation set."""
    y = np.asarray(labels, dtype=np.int64)
    g = np.asarray(groups)
    if len(g) != len(y):
        raise DataError(f"stratified_group_split: {len(y)} labels but {len(g)} groups")
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    folds = max(2, round(1 / val_fraction))
    try:
        train_idx, val_idx = next(
            StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, g)
        )
    except ValueError as exc:  # fewer groups than folds
        raise DataError(f"cannot split {len(y)} images in {len(np.unique(g))} duplicate groups into {folds} folds: {exc}") from None
    return np.sort(train_idx).astype(np.int64), np.sort(val_idx).astype(np.int64)


def kfold_splits(
    labels: Sequence[int] | np.ndarray,
    k: int,
    seed: int,
    groups: Sequence[int] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` stratified folds as sorted ``(train_idx, val_idx)`` pairs: every image is in
    exactly one fold's validation set. With ``groups`` (near-duplicate copies of one image)
    a group never straddles train and validation (sklearn's ``StratifiedGroupKFold``)."""
    y = np.asarray(labels, dtype=np.int64)
    if k < 2:
        raise DataError(f"cross-validation needs at least 2 folds, got {k}")
    classes, counts = np.unique(y, return_counts=True)
    short = [
        f"{class_names[c] if class_names else c} ({n})" for c, n in zip(classes, counts, strict=True) if n < k
    ]
    if short:
        raise DataError(
            f"{k}-fold cross-validation needs at least {k} images per class; "
            f"{', '.join(short)} {'has' if len(short) == 1 else 'have'} fewer: lower --cv"
        )
    x = np.zeros(len(y))
    if groups is None:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y)
    else:
        try:
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y, np.asarray(groups))
            folds = list(splitter)
        except ValueError as exc:  # fewer groups than folds
            raise DataError(f"cannot split {len(y)} images in {len(set(groups))} duplicate groups into {k} folds: {exc}") from None
        return [(np.sort(t).astype(np.int64), np.sort(v).astype(np.int64)) for t, v in folds]
    return [(np.sort(t).astype(np.int64), np.sort(v).astype(np.int64)) for t, v in splitter]
