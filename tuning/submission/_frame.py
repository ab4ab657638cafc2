"""The submission table: shaped like ``sample_submission.csv``, validated, written atomically."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from training.files import atomic_write_text
from tuning.submission._errors import SubmissionError

__all__ = ["build_submission", "few", "label_column", "validate_submission", "write_submission"]

_SHOWN = 5


def few(items: Iterable[object], n: int = _SHOWN) -> str:
    """``'a', 'b', 'c' (and 7 more)``: enough to find the rows, not a wall of text."""
    items = list(items)
    shown = ", ".join(repr(i) for i in items[:n])
    return shown + (f" (and {len(items) - n} more)" if len(items) > n else "")


def label_column(columns: Sequence[str], id_col: str, label_col: str, *, what: str) -> str:
    """The column to fill with predictions: ``label_col``, or the only one besides the id."""
    if id_col not in columns:
        raise SubmissionError(f"{what} has no id column {id_col!r}; its columns are {list(columns)}")
    if label_col in columns:
        others = [c for c in columns if c not in (id_col, label_col)]
        if others:
            raise SubmissionError(
                f"{what} has columns {others} besides {id_col!r} and {label_col!r}; "
                "only a single label column can be predicted"
            )
        return label_col
    others = [c for c in columns if c != id_col]
    if len(others) != 1:
        raise SubmissionError(
            f"{what} has no label column {label_col!r} and its other columns {others} do not "
            "name a single one"
        )
    return others[0]


def build_submission(
    ids: Sequence[str],
    labels: Sequence[str],
    *,
    template: pd.DataFrame | None = None,
    id_col: str = "id",
    label_col: str = "label",
) -> pd.DataFrame:
    """Predicted ``labels`` for ``ids`` in ``template``'s columns and row order (its label
    column replaced), else ``id_col,label_col`` sorted by id."""
    if len(ids) != len(labels):
        raise SubmissionError(f"{len(ids)} ids but {len(labels)} predicted labels")
    predicted = pd.Series(list(labels), index=pd.Index(list(ids), name=id_col), dtype=object)
    if predicted.index.has_duplicates:
        dupes = predicted.index[predicted.index.duplicated()].unique()
        raise SubmissionError(f"predictions repeat ids {few(dupes)}")
    if template is None:
        frame = predicted.rename(label_col).reset_index()
        return frame.sort_values(id_col, kind="stable").reset_index(drop=True)
    target = label_column(list(template.columns), id_col, label_col, what="sample submission")
    frame = template.copy()
    frame[target] = frame[id_col].map(predicted)
    return frame


def validate_submission(
    frame: pd.DataFrame,
    *,
    expected_ids: Sequence[str],
    class_names: Sequence[str],
    id_col: str = "id",
    label_col: str = "label",
) -> None:
    """Every expected id exactly once, nothing else, every label a class name."""
    target = label_column(list(frame.columns), id_col, label_col, what="submission")
    ids = frame[id_col].astype(str)
    problems = []
    dupes = ids[ids.duplicated()].unique()
    if len(dupes):
        problems.append(f"ids listed more than once: {few(dupes)}")
    expected = set(expected_ids)
    missing = sorted(expected - set(ids))
    if missing:
        problems.append(f"{len(missing)} test id(s) missing: {few(missing)}")
    extra = sorted(set(ids) - expected)
    if extra:
        problems.append(f"{len(extra)} id(s) that are not test images: {few(extra)}")
    labels = frame[target]
    known = set(class_names)
    bad = labels[~labels.isin(known)]
    if len(bad):
        rows = frame.loc[bad.index, id_col].astype(str)
        problems.append(
            f"{len(bad)} label(s) outside the classes {list(class_names)}: "
            f"{few(f'{i}={v}' for i, v in zip(rows, bad, strict=True))}"
        )
    if len(frame) != len(expected_ids):
        problems.append(f"{len(frame)} rows for {len(expected_ids)} test images")
    if problems:
        raise SubmissionError("invalid submission: " + "; ".join(problems))


def write_submission(frame: pd.DataFrame, out: str | Path) -> Path:
    """Write ``frame`` as CSV atomically: an interrupted run never leaves half a submission
    where a good one was."""
    return atomic_write_text(Path(out).expanduser(), frame.to_csv(index=False))
