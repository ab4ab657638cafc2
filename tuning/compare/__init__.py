"""Compare trained runs side by side: per-class report, accuracy/loss curves, sizes, times.

A run is named by a *spec*:

* ``sweep:NAME`` — the best trial of a sweep under ``storage`` (``sweep:NAME/TRIAL_ID`` for
  another trial); its data folder comes from the sweep's metadata;
* ``runs:/RUN_ID`` — an MLflow run holding ``checkpoint.pt`` (what ``poketune export`` logs;
  ``runs:/RUN_ID/some/path`` names the artifact);
* a path — a ``checkpoint.pt`` file or a folder holding one (``poketune train``/``retrain``
  output, a Tune trial checkpoint).

``LABEL=SPEC`` names the run in the report (default: derived from the spec). Each run's best
weights are evaluated on the validation split its own config makes of its data
(``prepare_data``: same seed and ``data.val_fraction`` as in training), so runs trained with
the same seed on the same data are compared on the same images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from training.errors import PoketuneError
from tuning.compare._evaluate import LabelledRun, RunEvaluation, evaluate_run
from tuning.compare._plots import FIGURES
from tuning.compare._report import (
    PER_CLASS_CSV,
    REPORT_FILE,
    SUMMARY_CSV,
    log_to_mlflow,
    per_class_long,
    summary,
    write_report,
)
from tuning.resolve import resolve

__all__ = [
    "FIGURES",
    "MLFLOW_EXPERIMENT",
    "PER_CLASS_CSV",
    "REPORT_FILE",
    "SUMMARY_CSV",
    "ComparisonResult",
    "LabelledRun",
    "RunEvaluation",
    "compare_runs",
    "evaluate_run",
    "resolve_runs",
    "write_report",
]

MLFLOW_EXPERIMENT = "poketune-compare"
_LABEL = re.compile(r"^(?P<label>[\w.+-]+)=(?P<spec>.+)$")


@dataclass
class ComparisonResult:
    runs: list[RunEvaluation]
    summary: pd.DataFrame  # one row per run
    per_class: pd.DataFrame  # one row per (run, class)
    report: Path
    figures: dict[str, Path]
    mlflow_run_id: str | None = None


def resolve_runs(spec: str, *, storage: str, mlflow_uri: str | None = None) -> list[LabelledRun]:
    """The checkpoints ``[LABEL=]SPEC`` names (an ensemble gives one run per member)."""
    label = None
    m = _LABEL.match(spec)
    if m and not Path(spec).exists():
        label, spec = m["label"], m["spec"]
    found = resolve(spec, storage=storage, mlflow_uri=mlflow_uri)
    runs = []
    for i, r in enumerate(found):
        name = label or r.label
        if label and len(found) > 1:
            name = f"{label}[{i}]"
        runs.append(LabelledRun(r.checkpoint, r.source, name, r.data_dir, spec=spec))
    return runs


def compare_runs(
    specs: list[str],
    out: Path,
    *,
    storage: str,
    data: str | None = None,
    mlflow_uri: str | None = None,
    mlflow_experiment: str = MLFLOW_EXPERIMENT,
    cache_dir: str | Path | None = None,
) -> ComparisonResult:
    """Evaluate every run in ``specs`` and write the comparison into ``out``.

    ``data`` is the data folder for every run (it wins over a sweep's recorded folder);
    runs without one (a checkpoint path, an MLflow run outside a sweep) need it. With
    ``mlflow_uri`` the output folder is also logged as the artifacts of a new MLflow run
    (experiment ``mlflow_experiment``), and ``runs:/`` specs are read from there.
    """
    if not specs:
        raise PoketuneError("compare needs at least one run")
    out = Path(out)
    resolved = [r for s in specs for r in resolve_runs(s, storage=storage, mlflow_uri=mlflow_uri)]
    seen: dict[str, int] = {}
    for r in resolved:  # labels are column names: keep them distinct
        seen[r.label] = seen.get(r.label, 0) + 1
        if seen[r.label] > 1:
            r.label = f"{r.label} ({seen[r.label]})"
    evaluations = []
    for r in resolved:
        data_dir = data or r.data_dir
        if not data_dir:
            raise PoketuneError(f"run {r.spec!r}: no data folder is recorded for it; pass --data DIR")
        if not data and not Path(data_dir).is_dir():
            raise PoketuneError(
                f"run {r.spec!r}: its data folder {data_dir} (recorded by the sweep) is not on "
                "this machine; pass --data DIR"
            )
        evaluations.append(evaluate_run(r, data_dir, cache_dir=cache_dir))
    report, figures = write_report(evaluations, out)
    run_id = log_to_mlflow(out, evaluations, mlflow_uri, mlflow_experiment) if mlflow_uri else None
    return ComparisonResult(
        runs=evaluations,
        summary=summary(evaluations),
        per_class=per_class_long(evaluations),
        report=report,
        figures=figures,
        mlflow_run_id=run_id,
    )
