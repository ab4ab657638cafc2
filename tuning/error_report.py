"""``poketune errors NAME``: what the sweep's best model gets wrong, and which images are
probably labelled wrong.

Built on the best trial's predictions for its validation split (through
:mod:`tuning.validation`, the one evaluation path): per-class precision/recall/F1, the
confusion matrix, the most-confused class pairs with example images, and the images most
likely mislabelled (cleanlab's ``find_label_issues`` on the predicted probabilities), as
contact sheets and CSVs a person can go through.

Only held-out images are judged: a model's predictions on the images it trained on say
little about their labels. A ``--cv`` sweep's best trial holds out-of-fold predictions, so
every training image is judged (each by the fold model that did not train on it); otherwise
the best trial's validation split is, and the report says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from tuning.results import Sweep
    from tuning.validation import TrialEvaluation, ValidationData

__all__ = ["ErrorReport", "build_error_report"]

log = logging.getLogger("poketune")

#: confused class pairs listed, and example images shown per pair
PAIRS, PER_PAIR = 6, 4


@dataclass
class ErrorReport:
    folder: Path
    #: what the predictions are (which trial, which images)
    source: str
    per_class: pd.DataFrame
    #: true, predicted, images, share of the true class; most confused first
    confused: pd.DataFrame
    #: id, given, predicted, p_given, p_predicted, label_quality, confident_learning; most likely first
    suspects: pd.DataFrame
    files: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"error report: {self.folder}", f"  from {self.source}"]
        worst = self.per_class.sort_values("f1").head(3)
        lines.append("  weakest classes: " + ", ".join(f"{c} (F1 {r.f1:.2f})" for c, r in worst.iterrows()))
        for r in self.confused.head(3).itertuples():
            lines.append(f"  confused: {r.true} → {r.predicted} ({r.images} images, {r.share:.0%} of {r.true})")
        flagged = int(self.suspects["confident_learning"].sum()) if len(self.suspects) else 0
        lines.append(
            f"  disputed labels: {len(self.suspects)} images, {flagged} also flagged by cleanlab's "
            f"confident learning (label_issues.csv, label_issues.png)"
        )
        for r in self.suspects.head(5).itertuples():
            lines.append(f"    {r.id}: labelled {r.given} (p {r.p_given:.2f}), looks like {r.predicted} (p {r.p_predicted:.2f})")
        return "\n".join(lines)


def _confused_pairs(cm: np.ndarray, names: list[str]) -> pd.DataFrame:
    rows = [
        {"true": names[i], "predicted": names[j], "images": int(cm[i, j]), "share": cm[i, j] / max(cm[i].sum(), 1)}
        for i in range(len(names)) for j in range(len(names)) if i != j and cm[i, j] > 0
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["true", "predicted", "images", "share"])
    return frame.sort_values(["images", "share"], ascending=False, kind="stable").reset_index(drop=True)


def _suspects(te: TrialEvaluation) -> pd.DataFrame:
    """The validation images whose label the model disputes, most likely mislabelled first.

    Ranked by cleanlab's label-quality score (self-confidence: the predicted probability of
    the given label). ``confident_learning`` marks the ones cleanlab's ``find_label_issues``
    also flags: its per-class thresholds are averages over the split, and on a small split a
    planted error whose probabilities sit just under them is missed, so the list is every
    image the model disagrees with, not only those.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    ev, names = te.eval, te.eval.class_names
    labels, probs = ev.result.y_true.astype(int), ev.result.probs.astype(float)
    probs = probs / probs.sum(axis=1, keepdims=True)
    pred = probs.argmax(axis=1)
    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    flagged = find_label_issues(labels, probs) if len(np.unique(labels)) > 1 else np.zeros(len(labels), bool)
    disputed = np.flatnonzero((pred != labels) | flagged)
    ranked = disputed[np.argsort(quality[disputed], kind="stable")]
    ids = te.data.val_ids or tuple(str(i) for i in range(len(labels)))
    return pd.DataFrame(
        {
            "id": [ids[i] for i in ranked],
            "given": [names[labels[i]] for i in ranked],
            "predicted": [names[pred[i]] for i in ranked],
            "p_given": [float(probs[i, labels[i]]) for i in ranked],
            "p_predicted": [float(probs[i, pred[i]]) for i in ranked],
            "label_quality": [float(quality[i]) for i in ranked],
            "confident_learning": [bool(flagged[i]) for i in ranked],
            "index": [int(i) for i in ranked],
        }
    )


def _image(x: np.ndarray) -> np.ndarray:
    """A C×H×W uint8 image as H×W×3 for display; transparency over mid-grey."""
    img = x.transpose(1, 2, 0).astype(float)
    if img.shape[2] == 4:
        alpha = img[:, :, 3:] / 255.0
        img = img[:, :, :3] * alpha + 128.0 * (1 - alpha)
    elif img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return img.clip(0, 255).astype(np.uint8)


def _contact_sheet(images: list[np.ndarray], captions: list[str], out: Path, title: str, cols: int = 6) -> None:
    from matplotlib.figure import Figure

    n = max(len(images), 1)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(2.2 * cols, 2.5 * rows + 0.6), layout="constrained")
    fig.suptitle(title)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, img, cap in zip(axes, images, captions, strict=False):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(cap, fontsize=7)
    fig.savefig(out, dpi=90)


def build_error_report(
    sweep: Sweep, out: Path | None = None, *, top: int = 24, val: ValidationData | None = None
) -> ErrorReport:
    """Write the error report of ``sweep``'s best trial into ``out`` (default: next to the
    sweep's report) and return it; ``val``: the sweep's validation splits, if already built."""
    from tuning.report import default_report_dir
    from tuning.results import SweepStateError
    from tuning.validation import ValidationData, confusion_png, evaluate_trial

    out = out or default_report_dir(sweep, "errors")
    out.mkdir(parents=True, exist_ok=True)
    best = sweep.best_trial()
    te, why = evaluate_trial(best.to_dict(), val or ValidationData.of(sweep))
    if te is None:
        raise SweepStateError(f"sweep {sweep.name!r}: no error report: {why}")
    ev, names, x = te.eval, te.eval.class_names, te.data.x_val
    if te.out_of_fold:
        source = (
            f"{te.title}: all {len(te.data.y_val)} training images, each predicted by the fold "
            "model that did not train on it"
        )
    else:
        source = (
            f"{te.title} on its {len(te.data.y_val)} validation images (no --cv: the other "
            f"{len(te.data.y_train)} training images are not judged)"
        )
    per_class = ev.per_class()
    confused = _confused_pairs(ev.confusion(), names)
    suspects = _suspects(te)
    files = [out / "per_class.csv", out / "confusion_matrix.png", out / "confused_pairs.csv",
             out / "confused_pairs.png", out / "label_issues.csv", out / "label_issues.png"]  # fmt: skip
    per_class.to_csv(files[0])
    confusion_png(ev, files[1], te.title)
    confused.to_csv(files[2], index=False)
    y_true, y_pred = ev.result.y_true, ev.result.y_pred
    shown, captions = [], []
    for r in confused.head(PAIRS).itertuples():
        i, j = names.index(str(r.true)), names.index(str(r.predicted))
        for k in np.flatnonzero((y_true == i) & (y_pred == j))[:PER_PAIR]:
            shown.append(_image(x[k]))
            captions.append(f"{te.data.val_ids[k] if te.data.val_ids else k}\n{r.true} → {r.predicted}")
    _contact_sheet(shown, captions, files[3], "most confused pairs (true → predicted)")
    suspects.drop(columns=["index"]).to_csv(files[4], index=False)
    head = suspects.head(top)
    _contact_sheet(
        [_image(x[i]) for i in head["index"]],
        [f"{r.id}\nlabel {r.given} ({r.p_given:.2f})\nlooks {r.predicted} ({r.p_predicted:.2f})" for r in head.itertuples()],
        files[5],
        f"disputed labels, least likely first ({len(suspects)} of {len(y_true)} held-out images)",
    )
    if te.out_of_fold:  # every image's held-out probabilities: what a stacker trains on
        oof = pd.DataFrame(ev.result.probs, columns=[f"p_{n}" for n in names])
        oof.insert(0, "predicted", [names[k] for k in y_pred])
        oof.insert(0, "label", [names[k] for k in y_true])
        oof.insert(0, "id", list(te.data.val_ids))
        files.append(out / "out_of_fold.csv")
        oof.to_csv(files[-1], index=False)
    return ErrorReport(out, source, per_class, confused, suspects.drop(columns=["index"]), files)
