"""Scoring a submission against known labels (the generator's ``test_labels.csv``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, f1_score

from tuning.submission._errors import SubmissionError
from tuning.submission._frame import few, label_column

__all__ = ["ScoreResult", "score_submission"]


@dataclass
class ScoreResult:
    macro_f1: float
    accuracy: float
    report: str  # scikit-learn's classification_report
    per_class: pd.DataFrame  # index: class; precision, recall, f1-score, support
    n: int


def _read(path: str | Path, what: str, id_col: str, label_col: str) -> tuple[pd.DataFrame, str]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise SubmissionError(f"{what} file not found: {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{what} {path} cannot be parsed: {exc}") from None
    target = label_column(list(df.columns), id_col, label_col, what=f"{what} {path}")
    dupes = df[id_col][df[id_col].duplicated()].unique()
    if len(dupes):
        raise SubmissionError(f"{what} {path}: ids listed more than once: {few(dupes)}")
    empty = df.loc[df[target] == "", id_col]
    if len(empty):
        raise SubmissionError(f"{what} {path}: empty {target!r} for ids {few(empty)}")
    return df[[id_col, target]].rename(columns={target: label_col}), str(path)


def score_submission(
    sub_path: str | Path, answers_path: str | Path, *, id_col: str = "id", label_col: str = "label"
) -> ScoreResult:
    """Macro-F1, accuracy and the per-class report of ``sub_path`` against ``answers_path``.

    Both files need the same ids, each once; every predicted label must be one of the
    answers' classes.
    """
    sub, sub_name = _read(sub_path, "submission", id_col, label_col)
    ans, ans_name = _read(answers_path, "answers", id_col, label_col)
    missing = sorted(set(ans[id_col]) - set(sub[id_col]))
    extra = sorted(set(sub[id_col]) - set(ans[id_col]))
    problems = []
    if missing:
        problems.append(f"{len(missing)} id(s) of {ans_name} missing from {sub_name}: {few(missing)}")
    if extra:
        problems.append(f"{len(extra)} id(s) of {sub_name} not in {ans_name}: {few(extra)}")
    classes = sorted(set(ans[label_col]))
    unknown = sorted(set(sub[label_col]) - set(classes))
    if unknown:
        problems.append(f"{sub_name} predicts labels that are not classes of {ans_name}: {few(unknown)}")
    if problems:
        raise SubmissionError("cannot score: " + "; ".join(problems))

    merged = ans.merge(sub, on=id_col, suffixes=("_true", "_pred"), validate="one_to_one")
    y_true, y_pred = merged[f"{label_col}_true"], merged[f"{label_col}_pred"]
    report_kw = {"labels": classes, "zero_division": 0}
    per_class = pd.DataFrame(
        classification_report(y_true, y_pred, output_dict=True, **report_kw)  # type: ignore[arg-type]
    ).T.loc[classes]
    per_class["support"] = per_class["support"].astype(int)
    return ScoreResult(
        macro_f1=float(f1_score(y_true, y_pred, average="macro", **report_kw)),  # type: ignore[arg-type]
        accuracy=float(accuracy_score(y_true, y_pred)),
        report=str(classification_report(y_true, y_pred, digits=4, **report_kw)),  # type: ignore[arg-type]
        per_class=per_class,
        n=len(merged),
    )
