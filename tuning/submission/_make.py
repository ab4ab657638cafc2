"""``make_submission``: model → predictions for every test image → validated CSV."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.config import DataConfig
from training.data import DataError, to_nchw
from tuning.predict import Predictor, load_predictor
from tuning.submission._frame import build_submission, validate_submission, write_submission

__all__ = ["SAMPLE_SUBMISSION", "SubmissionResult", "make_submission"]

SAMPLE_SUBMISSION = "sample_submission.csv"


@dataclass
class SubmissionResult:
    path: Path
    rows: int
    columns: list[str]
    class_counts: dict[str, int]
    sources: list[str]
    preprocessing: dict[str, Any]
    tta: bool
    crop_fallbacks: int = 0
    template: str | None = None  # the sample submission whose shape was followed
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)


def _read_template(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"sample submission {path} cannot be parsed: {exc}") from None


def make_submission(
    model: str | Predictor,
    data_dir: str | Path,
    out: str | Path,
    *,
    tta: bool = False,
    mlflow_uri: str | None = None,
    where: DataConfig | None = None,
    cache_dir: str | Path | None = None,
) -> SubmissionResult:
    """Predict every image of ``data_dir``'s test split and write ``out``.

    ``model`` is anything :func:`tuning.predict.load_predictor` resolves (or a loaded
    :class:`Predictor`). Images are decoded with the model's stored preprocessing; ``where``
    only says where the files are (layout, id/label columns; default: the stored config's).
    The CSV has ``sample_submission.csv``'s columns and row order when it exists, else
    ``id,label`` sorted by id; it is validated before it is written.
    """
    if isinstance(model, Predictor):
        predictor = model
    else:
        if model.strip().startswith(("models:/", "runs:/")):
            from tuning._mlflow import default_tracking_uri, ensure_reachable

            # a quick check: MLflow's own client retries a dead server for minutes
            mlflow_uri = ensure_reachable(mlflow_uri or default_tracking_uri())
        predictor = load_predictor(model, mlflow_uri)
    data_cfg = predictor.data_config(where)
    images = predictor.load_test(data_dir, where, cache_dir=cache_dir)
    probs = predictor.predict_proba(to_nchw(images.images), tta=tta)
    names = predictor.class_names
    labels = [names[i] for i in probs.argmax(axis=1)]

    sample = Path(data_dir).expanduser() / SAMPLE_SUBMISSION
    template = _read_template(sample) if sample.is_file() else None
    frame = build_submission(
        images.ids, labels, template=template, id_col=data_cfg.id_col, label_col=data_cfg.label_col
    )
    validate_submission(
        frame,
        expected_ids=images.ids,
        class_names=names,
        id_col=data_cfg.id_col,
        label_col=data_cfg.label_col,
    )
    path = write_submission(frame, out)
    counts = pd.Series(labels).value_counts()
    return SubmissionResult(
        path=path,
        rows=len(frame),
        columns=list(frame.columns),
        class_counts={n: int(counts.get(n, 0)) for n in names},
        sources=list(predictor.sources),
        preprocessing=predictor.preprocessing.to_dict(),
        tta=tta,
        crop_fallbacks=images.report.crop_fallbacks,
        template=str(sample) if template is not None else None,
        probabilities=probs,
    )
