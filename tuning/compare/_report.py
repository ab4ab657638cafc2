"""The comparison report: summary and per-class tables, ``report.md`` and its MLflow run."""

from __future__ import annotations

import datetime as _dt
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from tuning.compare._evaluate import RunEvaluation
from tuning.compare._plots import FIGURES, plot_curves

__all__ = ["PER_CLASS_CSV", "REPORT_FILE", "SUMMARY_CSV", "log_to_mlflow", "per_class_long", "summary", "write_report"]

#: the files ``write_report`` produces in the output folder (besides the figures)
REPORT_FILE = "report.md"
PER_CLASS_CSV = "per_class.csv"
SUMMARY_CSV = "summary.csv"


def summary(runs: list[RunEvaluation]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run": r.label,
                "spec": r.spec,
                "model": r.model,
                "image_size": r.image_size,
                "params_total": r.params_total,
                "params_trainable": r.params_trainable,
                "epochs": r.epochs,
                "best_epoch": r.best_epoch,
                "train_time_s": r.train_time_s,
                "val_images": len(r.y_true),
                "accuracy": r.accuracy,
                "macro_f1": r.macro_f1,
            }
            for r in runs
        ]
    )


def per_class_long(runs: list[RunEvaluation]) -> pd.DataFrame:
    frames = [r.per_class.reset_index().assign(run=r.label) for r in runs]
    out = pd.concat(frames, ignore_index=True)
    return out[["run", "class", "precision", "recall", "f1", "support"]]


def _markdown(frame: pd.DataFrame) -> str:
    """A GitHub table, first column left-aligned, the others right-aligned (pandas'
    ``to_markdown`` needs tabulate, which we do not depend on)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "–" if math.isnan(v) else f"{v:.3f}"
        return str(v).replace("|", "\\|")

    cols = [cell(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "| --- | " + " | ".join(["---:"] * (len(cols) - 1)) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def _per_class_wide(runs: list[RunEvaluation]) -> pd.DataFrame:
    """class × (metric, run) as text: each metric's runs side by side, the best F1 of a class
    in bold, a last row of macro averages. A class one run does not have shows as –."""
    classes: list[str] = []
    for r in runs:
        classes += [c for c in r.class_names if c not in classes]

    def fmt(v: float, bold: bool = False) -> str:
        if math.isnan(v):
            return "–"
        return f"**{v:.3f}**" if bold else f"{v:.3f}"

    support = runs[0].per_class["support"].reindex(classes)
    table: dict[str, list[str]] = {
        "class": [*classes, "macro avg"],
        "support": [*("–" if pd.isna(v) else str(int(v)) for v in support), str(len(runs[0].y_true))],
    }
    for metric, title in (("precision", "precision"), ("recall", "recall"), ("f1", "F1")):
        values = pd.DataFrame({r.label: r.per_class[metric].reindex(classes) for r in runs})
        best = values.max(axis=1)
        for r in runs:
            col = values[r.label]
            # bold only a class's single best F1: ties (all zero, say) stay plain
            unique = values.eq(best, axis=0).sum(axis=1) == 1
            bold = [
                metric == "f1" and len(runs) > 1 and v == b and u
                for v, b, u in zip(col, best, unique, strict=True)
            ]
            # the macro average over the run's own classes: sklearn's average="macro"
            table[f"{title} {r.label}"] = [
                *(fmt(v, b) for v, b in zip(col, bold, strict=True)),
                fmt(float(r.per_class[metric].mean())),
            ]
    return pd.DataFrame(table)


def write_report(runs: list[RunEvaluation], out: Path) -> tuple[Path, dict[str, Path]]:
    """``report.md``, ``per_class.csv``, ``summary.csv`` and the PNGs into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    table = summary(runs)
    table.to_csv(out / SUMMARY_CSV, index=False)
    per_class_long(runs).to_csv(out / PER_CLASS_CSV, index=False)
    figures = plot_curves(runs, out)

    shown = pd.DataFrame(
        {
            "run": table["run"],
            "model": [f"{r.model} @ {r.image_size}px" for r in runs],
            "parameters": [f"{r.params_total:,}" for r in runs],
            "trainable (last phase)": [f"{r.params_trainable:,}" for r in runs],
            "epochs (best)": [f"{r.epochs} ({r.best_epoch})" for r in runs],
            "training time": [_duration(r.train_time_s) for r in runs],
            "accuracy": table["accuracy"],
            "macro-F1": table["macro_f1"],
        }
    )
    sources = "\n".join(f"- **{r.label}**: `{r.spec}` → `{r.source}`" for r in runs)
    notes = [f"- **{r.label}**: {n}" for r in runs for n in r.notes]
    n_val = ", ".join(sorted({str(len(r.y_true)) for r in runs}))
    text = "\n\n".join(
        [
            "# Run comparison",
            f"Generated {_dt.datetime.now():%Y-%m-%d %H:%M}. Every run's best weights are "
            f"evaluated on the validation split its own config makes of its data "
            f"({n_val} images).",
            "## Runs",
            _markdown(shown),
            sources,
            "## Per class (validation)",
            "Best F1 of each class in bold. Also in `per_class.csv` (one row per run and class).",
            _markdown(_per_class_wide(runs)),
            "## Curves",
            "Dotted vertical lines: where a run's fine-tuning phase begins.",
            f"![accuracy]({FIGURES['accuracy']})",
            f"![loss]({FIGURES['loss']})",
            f"![per-class F1]({FIGURES['per_class_f1']})",
            *(["## Notes", "\n".join(notes)] if notes else []),
        ]
    )
    report = out / REPORT_FILE
    report.write_text(text + "\n")
    return report, figures


def log_to_mlflow(out: Path, runs: list[RunEvaluation], uri: str, experiment: str) -> str:
    from tuning._mlflow import ensure_reachable, get_or_create_experiment, tracking

    uri = ensure_reachable(uri, hint="the report is written; log it later with --mlflow-uri")
    with tracking(uri) as client:
        exp_id = get_or_create_experiment(client, experiment, uri)
        run = client.create_run(
            exp_id,
            run_name="compare " + " vs ".join(r.label for r in runs),
            tags={"poketune.kind": "compare"},
        )
        rid = run.info.run_id
        for i, r in enumerate(runs):
            key = re.sub(r"[^\w\-. /]", "_", r.label)
            client.log_param(rid, f"run_{i}", r.spec)
            client.log_metric(rid, f"accuracy/{key}", r.accuracy)
            client.log_metric(rid, f"macro_f1/{key}", r.macro_f1)
        client.log_artifacts(rid, str(out))
        client.set_terminated(rid)
    return str(rid)


