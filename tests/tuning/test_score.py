"""Scoring a submission against known labels."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from tuning.cli import main
from tuning.submission import SubmissionError, score_submission

ANSWERS = {"id": ["a", "b", "c", "d", "e", "f", "g"], "label": ["Fire", "Fire", "Water", "Water", "Grass", "Grass", "Grass"]}
# row order differs from the answers on purpose: scoring matches by id
PREDICTED = {"id": ["g", "f", "e", "d", "c", "b", "a"], "label": ["Grass", "Water", "Grass", "Water", "Fire", "Fire", "Fire"]}


def _write(path: Path, columns: dict[str, list[str]]) -> Path:
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return _write(tmp_path / "sub.csv", PREDICTED), _write(tmp_path / "answers.csv", ANSWERS)


def test_scores_match_sklearn_on_a_hand_made_submission(files: tuple[Path, Path]) -> None:
    res = score_submission(*files)
    truth = dict(zip(ANSWERS["id"], ANSWERS["label"], strict=True))
    pred = dict(zip(PREDICTED["id"], PREDICTED["label"], strict=True))
    y_true = [truth[i] for i in ANSWERS["id"]]
    y_pred = [pred[i] for i in ANSWERS["id"]]
    assert res.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert res.accuracy == pytest.approx(accuracy_score(y_true, y_pred)) == pytest.approx(5 / 7)
    assert res.n == 7
    assert list(res.per_class.index) == ["Fire", "Grass", "Water"]
    # Fire: 2 right of 2, plus c wrongly → precision 2/3, recall 1
    assert res.per_class.loc["Fire", "precision"] == pytest.approx(2 / 3)
    assert res.per_class.loc["Fire", "recall"] == pytest.approx(1.0)
    assert res.per_class["support"].tolist() == [2, 3, 2]
    assert "Grass" in res.report and "macro avg" in res.report


def test_a_perfect_submission_scores_one(tmp_path: Path) -> None:
    res = score_submission(_write(tmp_path / "s.csv", ANSWERS), _write(tmp_path / "a.csv", ANSWERS))
    assert res.macro_f1 == res.accuracy == 1.0


@pytest.mark.parametrize(
    ("sub", "message"),
    [
        ({"id": ANSWERS["id"][:-2], "label": ANSWERS["label"][:-2]}, r"2 id\(s\) of .*answers.csv missing from .*sub.csv: 'f', 'g'"),
        ({"id": [*ANSWERS["id"], "zz"], "label": [*ANSWERS["label"], "Fire"]}, r"not in .*answers.csv: 'zz'"),
        ({"id": [*ANSWERS["id"], "a"], "label": [*ANSWERS["label"], "Fire"]}, r"more than once: 'a'"),
        ({"id": ANSWERS["id"], "label": ["Ice", *ANSWERS["label"][1:]]}, r"not classes of .*: 'Ice'"),
        ({"id": ANSWERS["id"], "label": ["", *ANSWERS["label"][1:]]}, r"empty 'label' for ids 'a'"),
        ({"image": ANSWERS["id"], "label": ANSWERS["label"]}, r"no id column 'id'"),
    ],
)
def test_bad_submissions_are_named(tmp_path: Path, sub: dict[str, list[str]], message: str) -> None:
    with pytest.raises(SubmissionError, match=message):
        score_submission(_write(tmp_path / "sub.csv", sub), _write(tmp_path / "answers.csv", ANSWERS))


def test_many_missing_ids_are_summarised(tmp_path: Path) -> None:
    ids = [f"i{n:02d}" for n in range(30)]
    answers = _write(tmp_path / "answers.csv", {"id": ids, "label": ["A"] * 30})
    sub = _write(tmp_path / "sub.csv", {"id": ids[:2], "label": ["A"] * 2})
    with pytest.raises(SubmissionError, match=r"28 id\(s\).*'i02', 'i03', 'i04', 'i05', 'i06' \(and 23 more\)"):
        score_submission(sub, answers)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError, match=r"submission file not found: .*nope\.csv"):
        score_submission(tmp_path / "nope.csv", _write(tmp_path / "answers.csv", ANSWERS))


def test_cli_prints_the_report_and_scores(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", str(files[0]), "--answers", str(files[1])]) == 0
    out = capsys.readouterr().out
    assert "macro avg" in out and f"accuracy {5 / 7:.4f}" in out
    _write(files[0], {"id": ["a"], "label": ["Fire"]})
    assert main(["score", str(files[0]), "--answers", str(files[1])]) == 2
    assert "missing from" in capsys.readouterr().err


def test_custom_columns(tmp_path: Path) -> None:
    sub = _write(tmp_path / "sub.csv", {"img": ANSWERS["id"], "type": ANSWERS["label"]})
    answers = _write(tmp_path / "answers.csv", {"img": ANSWERS["id"], "type": ANSWERS["label"]})
    assert score_submission(sub, answers, id_col="img", label_col="type").macro_f1 == 1.0
