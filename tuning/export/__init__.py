"""Export a sweep to MLflow: one parent run per sweep, one nested run per trial.

Every trial run gets the trial's full flat config as params, its per-epoch metrics (step =
epoch) and tags (trial_id, status, asha_stop_epoch, sweep, task, data_hash). The top-K
trials (or all) also get their checkpoint's best model as an MLflow PyTorch model, a
validation confusion matrix, learning curves, the classification report and the raw
``checkpoint/checkpoint.pt``.

Re-exporting is idempotent and incremental: the parent run is found by a hash of the
sweep's storage and name, trial runs by their ``trial_id`` tag under it. Runs are updated
in place, never recreated (run ids stay valid for anything that points at them): params
are only added, metric epochs beyond the ``poketune.epochs_logged`` tag are appended, and a
model is logged again only if the trial trained further since it was last logged.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from training.checkpoint import Checkpoint, CheckpointError
from tuning import results
from tuning._mlflow import (
    PARENT_TAG,
    MlflowUnreachableError,
    Tags,
    ensure_reachable,
    experiment_name,
    get_or_create_experiment,
    runs_url,
    tracking,
)
from tuning.export._model import CHECKPOINT_ARTIFACT, log_trial_model
from tuning.export._runs import (
    find_sweep_run,
    find_trial_runs,
    log_batch,
    missing_params,
    sweep_key,
)
from tuning.storage import DATA_CHECK, SWEEP_META, SWEEP_SPACE, resolve_storage
from tuning.validation import ValidationData, checkpoint_dir

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

__all__ = [
    "CHECKPOINT_ARTIFACT",
    "ExportSummary",
    "export_sweep",
    "find_sweep_run",
    "find_trial_runs",
]

log = logging.getLogger("poketune")

#: where the sweep's HTML report and PNGs, and its error report, go in its parent run
REPORT_ARTIFACTS = "report"
ERRORS_ARTIFACTS = "errors"

#: per-epoch metrics copied to each trial run, when the trial reported them
EPOCH_METRICS = ("train_loss", "val_loss", "val_f1", "val_acc", "lr", "epoch_time_s", "train_images_per_s")

#: tuning.results status → MLflow run status
RUN_STATUS = {
    "completed": "FINISHED",
    "stopped_asha": "FINISHED",
    "stopped_budget": "FINISHED",  # the sweep's deadline ended it; every epoch it ran is kept
    "early_stopped": "FINISHED",
    "errored": "FAILED",
    "running": "RUNNING",
    "pending": "SCHEDULED",
}


@dataclass
class ExportSummary:
    tracking_uri: str
    experiment_id: str
    experiment_name: str
    parent_run_id: str
    trial_runs: dict[str, str] = field(default_factory=dict)  # trial_id → run id
    created: int = 0  # trial runs made by this export
    updated: int = 0  # trial runs an earlier export made
    models_logged: list[str] = field(default_factory=list)  # trial ids
    models_unchanged: list[str] = field(default_factory=list)  # already logged, not retrained since
    warnings: list[str] = field(default_factory=list)
    report_artifacts: list[str] = field(default_factory=list)  # the report's files on the parent run

    @property
    def url(self) -> str | None:
        if not self.tracking_uri.startswith(("http://", "https://")):
            return None
        return runs_url(self.tracking_uri, self.experiment_id, self.parent_run_id)

    def __str__(self) -> str:
        lines = [
            f"exported to {self.tracking_uri}, experiment {self.experiment_name!r} ({self.experiment_id})",
            f"  parent run {self.parent_run_id}" + (f"  {self.url}" if self.url else ""),
            f"  trial runs: {self.created} created, {self.updated} updated",
            f"  models: {len(self.models_logged)} logged"
            + (f" ({', '.join(self.models_logged)})" if self.models_logged else "")
            + (f", {len(self.models_unchanged)} unchanged" if self.models_unchanged else ""),
        ]
        if self.report_artifacts:
            lines.append(f"  report: {len(self.report_artifacts)} files under the parent run's {REPORT_ARTIFACTS}/")
        if self.url is None:  # a local store: say where its UI will show the runs
            lines.append(
                f"  MLflow UI: mlflow ui --backend-store-uri {self.tracking_uri}, then open "
                f"{runs_url('http://127.0.0.1:5000', self.experiment_id)}"
            )
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _later_hint(name: str, storage: str, path: Path, uri: str) -> str:
    return (
        f"the sweep's results are still in {path} — export them later with: {_again(name, storage, uri)}"
    )


def _trial_history(history: pd.DataFrame, trial_id: str) -> pd.DataFrame:
    """One row per epoch (the last report wins if a restored trial repeated one), with
    ``step`` = the epoch number."""
    if history.empty or "trial_id" not in history:
        return pd.DataFrame(columns=["step"])
    rows = history[history["trial_id"] == trial_id].copy()
    epoch_col = "epoch" if "epoch" in rows and rows["epoch"].notna().all() else "training_iteration"
    rows["step"] = rows[epoch_col].astype(int)
    return rows.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def _epoch_metrics(hist: pd.DataFrame, after: int) -> list[tuple[str, float, int, int]]:
    now = _now_ms()
    out = []
    for row in hist[hist["step"] > after].to_dict("records"):
        ts = row.get("timestamp")
        ts_ms = int(float(ts) * 1000) if isinstance(ts, int | float) and math.isfinite(ts) else now
        for key in EPOCH_METRICS:
            value = row.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out.append((key, float(value), ts_ms, int(row["step"])))
    return out


def _changed_metrics(run: Run | None, values: dict[str, float]) -> list[tuple[str, float, int, int]]:
    """Summary metrics whose latest logged value differs (so re-exports add no history)."""
    logged = run.data.metrics if run is not None else {}
    now = _now_ms()
    return [
        (k, v, now, 0) for k, v in values.items()
        if math.isfinite(v) and (k not in logged or not math.isclose(logged[k], v, rel_tol=1e-12))
    ]


def _start_ms(created: str | None) -> int | None:
    if not created:
        return None
    try:
        return int(pd.Timestamp(created).timestamp() * 1000)
    except ValueError:
        return None


def _sweep_params(sweep: results.Sweep) -> dict[str, Any]:
    meta, space = sweep.meta, sweep.space
    opts = meta.options
    params: dict[str, Any] = {
        "space_file": meta.space_file,
        "data": meta.data,
        "task": space.task,
        "metric": space.metric,
        "mode": space.mode,
        "max_epochs": space.max_epochs,
        "grace_period": space.grace_period,
        "reduction_factor": space.reduction_factor,
        "searched_params": ",".join(space.params),
    }
    for key in ("samples", "seed", "cpus_per_trial", "gpus_per_trial", "workers_per_trial", "time_budget_s"):
        if key in opts:
            params[key] = opts[key]
    params.update({f"fixed.{k}": v for k, v in space.fixed.items()})
    params.update({f"override.{k}": v for k, v in meta.overrides.items()})
    return params


def _log_parent(
    client: MlflowClient,
    experiment_id: str,
    sweep: results.Sweep,
    storage: str,
    frame: pd.DataFrame,
    history: pd.DataFrame,
    summary_warnings: list[str],
) -> str:
    existing = find_sweep_run(client, experiment_id, sweep.name, storage)
    tags = {
        Tags.SWEEP: sweep.name,
        Tags.STORAGE: resolve_storage(storage),
        Tags.SWEEP_KEY: sweep_key(sweep.name, storage),
        Tags.KIND: "sweep",
        Tags.TASK: sweep.space.task,
        Tags.DATA_HASH: sweep.meta.data_hash,
    }
    if existing is None:
        run = client.create_run(experiment_id, start_time=_start_ms(sweep.meta.created), tags=tags, run_name=sweep.name)
        run_id = run.info.run_id
    else:
        run_id = existing.info.run_id
    metric = sweep.space.metric
    best_col = f"best_{metric}"
    summary: dict[str, float] = {"trials": float(len(frame))}
    if not frame.empty:
        for status, count in frame["status"].value_counts().items():
            summary[f"trials_{status}"] = float(count)
        if frame[best_col].notna().any():
            summary[best_col] = float(frame[best_col].iloc[0])  # load() sorts best first
            tags["best_trial_id"] = str(frame["trial_id"].iloc[0])
    new_params, conflicts = missing_params(existing.data.params if existing else {}, _sweep_params(sweep))
    summary_warnings += [f"parent run: param {c} not updated" for c in conflicts]
    log_batch(client, run_id, params=new_params, metrics=_changed_metrics(existing, summary), tags=tags)
    with tempfile.TemporaryDirectory(prefix="poketune-export-") as tmp:
        folder = Path(tmp)
        for name in (SWEEP_SPACE, SWEEP_META, DATA_CHECK):
            if (sweep.path / name).is_file():
                (folder / name).write_bytes((sweep.path / name).read_bytes())
        frame.to_csv(folder / "results.csv", index=False)
        history.to_csv(folder / "history.csv", index=False)
        client.log_artifacts(run_id, str(folder))
    return str(run_id)


def _log_trial(
    client: MlflowClient,
    experiment_id: str,
    parent_id: str,
    existing: Run | None,
    row: dict[str, Any],
    hist: pd.DataFrame,
    sweep: results.Sweep,
    summary_warnings: list[str],
) -> str:
    tid = str(row["trial_id"])
    config = sweep.trial_config(tid).to_flat()
    searched = [k for k in sweep.space.params if k in row and not results.is_missing(row[k])]
    # the full flat config; the searched values are in it under the same dotted keys
    params = {**config, **{k: row[k] for k in searched}}
    tags = {
        PARENT_TAG: parent_id,
        Tags.KIND: "trial",
        Tags.TRIAL_ID: tid,
        Tags.STATUS: str(row["status"]),
        Tags.SWEEP: sweep.name,
        Tags.TASK: sweep.space.task,
        Tags.DATA_HASH: sweep.meta.data_hash,
        Tags.SEARCHED: ",".join(searched),
    }
    if not results.is_missing(row.get("stop_epoch")):
        tags[Tags.ASHA_STOP_EPOCH] = str(int(row["stop_epoch"]))
    if row.get("best_epoch") is not None and not results.is_missing(row.get("best_epoch")):
        tags["best_epoch"] = str(int(row["best_epoch"]))
    if isinstance(row.get("error"), str):
        tags["error"] = row["error"][:5000]
    if existing is None:
        run_id = client.create_run(experiment_id, tags={PARENT_TAG: parent_id, Tags.TRIAL_ID: tid}, run_name=tid).info.run_id
        logged_params: dict[str, str] = {}
        done = 0
    else:
        run_id = existing.info.run_id
        logged_params = existing.data.params
        done = int(existing.data.tags.get(Tags.EPOCHS_LOGGED, "0") or 0)
    new_params, conflicts = missing_params(logged_params, params)
    summary_warnings += [f"trial {tid}: param {c} not logged" for c in conflicts]
    metrics = _epoch_metrics(hist, done)
    best_col = f"best_{sweep.space.metric}"
    metrics += _changed_metrics(existing, {best_col: float(row[best_col])} if not results.is_missing(row.get(best_col)) else {})
    tags[Tags.EPOCHS_LOGGED] = str(max(done, int(hist["step"].max()) if len(hist) else 0))
    log_batch(client, run_id, params=new_params, metrics=metrics, tags=tags)
    return str(run_id)


def _log_report(
    client: MlflowClient, run_id: str, sweep: results.Sweep, val: ValidationData, summary_warnings: list[str]
) -> list[str]:
    """The sweep's report (HTML and PNGs) and its error report (``poketune errors``) on its
    parent run, so the MLflow UI shows them."""
    from tuning.error_report import build_error_report
    from tuning.report import build_report

    with tempfile.TemporaryDirectory(prefix="poketune-report-") as tmp:
        page = build_report(sweep, Path(tmp), val=val)
        if page.png_note:
            summary_warnings.append(page.png_note)
        client.log_artifacts(run_id, tmp, artifact_path=REPORT_ARTIFACTS)
        logged = sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*") if p.is_file())
    with tempfile.TemporaryDirectory(prefix="poketune-errors-") as tmp:
        try:
            build_error_report(sweep, Path(tmp), val=val)
        except results.SweepStateError as exc:  # no scored trial with a checkpoint yet
            summary_warnings.append(f"no error report: {exc}")
        else:
            client.log_artifacts(run_id, tmp, artifact_path=ERRORS_ARTIFACTS)
    return logged


#: MLflow's client retries a failed request 7 times, backing off for ~4 minutes in all (made
#: for rate-limited hosted servers). An export is safe to run again (it continues in place),
#: so a server that went away is reported within seconds instead; settings in the
#: environment win
_EXPORT_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


@contextmanager
def _quick_retries() -> Iterator[None]:
    added = {k: v for k, v in _EXPORT_RETRIES.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _gone_mid_export(uri: str, name: str, storage: str, done: ExportSummary) -> MlflowUnreachableError | None:
    """The error to raise when the tracking server stopped answering mid-export (``None``
    when it still answers: the failure was something else, raised as it is)."""
    try:
        ensure_reachable(uri, timeout_s=2.0)
    except MlflowUnreachableError as exc:
        return MlflowUnreachableError(
            f"{exc} mid-export of sweep {name} ({len(done.trial_runs)} trial runs and "
            f"{len(done.models_logged)} models written); what was written stays, and running "
            f"`{_again(name, storage, uri)}` again once the server is back continues in place, "
            "without duplicate runs or models"
        )
    return None


def _again(name: str, storage: str, uri: str) -> str:
    return f"poketune export {name} --storage {resolve_storage(storage)} --mlflow-uri {uri}"


def _set_status(client: MlflowClient, run_id: str, status: str) -> None:
    if status in ("FINISHED", "FAILED", "KILLED"):
        client.set_terminated(run_id, status)
    else:
        client.update_run(run_id, status=status)


def export_sweep(
    name: str,
    storage: str,
    mlflow_uri: str,
    *,
    experiment: str | None = None,
    top: int | None = 3,
    all_trials: bool = False,
    report: bool = True,
) -> ExportSummary:
    """Export sweep ``name`` under ``storage`` to the MLflow tracking store at ``mlflow_uri``.

    Every trial gets a nested run with params, metric history and tags; the ``top`` best
    trials by the sweep's metric (every trial with ``all_trials`` or ``top=None``; none with
    ``top=0``) also get their model and evaluation artifacts; the parent run gets the sweep's
    HTML report and its PNGs (``report``). Experiment: ``experiment`` or
    ``poketune-<task>``. Raises :class:`tuning._mlflow.MlflowUnreachableError` before doing
    anything if the store is down, :class:`tuning.results.SweepNotFoundError` for an
    unknown sweep.
    """
    if top is not None and top < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    sweep = results.Sweep.open(name, storage)
    uri = ensure_reachable(mlflow_uri, hint=_later_hint(name, storage, sweep.path, mlflow_uri))
    frame = sweep.trials()
    history = sweep.history()
    exp_name = experiment or experiment_name(sweep.space.task)
    val = ValidationData.of(sweep)
    out = ExportSummary(tracking_uri=uri, experiment_id="", experiment_name=exp_name, parent_run_id="")
    try:
        with _quick_retries():
            _export(out, uri, sweep, storage, frame, history, val, top=top, all_trials=all_trials, report=report)
    except Exception as exc:
        gone = _gone_mid_export(uri, name, storage, out) if uri.startswith(("http://", "https://")) else None
        if gone is None:
            raise
        raise gone from exc
    out.warnings += val.warnings
    log.info("exported sweep %s: parent run %s, %d trial runs, %d models", name, out.parent_run_id,
             len(out.trial_runs), len(out.models_logged))
    return out


def _export(
    out: ExportSummary,
    uri: str,
    sweep: results.Sweep,
    storage: str,
    frame: pd.DataFrame,
    history: pd.DataFrame,
    val: ValidationData,
    *,
    top: int | None,
    all_trials: bool,
    report: bool,
) -> None:
    """export_sweep's writes; ``out`` records them as they happen (an error keeps what it says)."""
    metric, maximize = sweep.space.metric, sweep.space.mode == "max"
    with tracking(uri) as client:
        exp_id = get_or_create_experiment(client, out.experiment_name, uri)
        out.experiment_id = exp_id
        out.parent_run_id = _log_parent(client, exp_id, sweep, storage, frame, history, out.warnings)
        existing = find_trial_runs(client, exp_id, out.parent_run_id)
        rows = frame.to_dict("records")
        hists: dict[str, pd.DataFrame] = {}
        for row in rows:
            tid = str(row["trial_id"])
            hists[tid] = _trial_history(history, tid)
            run = existing.get(tid)
            out.trial_runs[tid] = _log_trial(client, exp_id, out.parent_run_id, run, row, hists[tid], sweep, out.warnings)
            if run is None:
                out.created += 1
            else:
                out.updated += 1
        best_col = f"best_{metric}"
        ranked = [r for r in rows if not results.is_missing(r.get(best_col))]  # load() sorted them best first
        chosen = ranked if all_trials or top is None else ranked[:top]
        for row in chosen:
            tid = str(row["trial_id"])
            run_id = out.trial_runs[tid]
            ckpt = checkpoint_dir(row)
            if ckpt is None:
                out.warnings.append(f"trial {tid}: no checkpoint found in {row.get('trial_dir')}; no model logged")
                continue
            prior = existing.get(tid)
            if prior is not None and prior.data.tags.get(Tags.MODEL_EPOCHS) == str(row["epochs"]):
                out.models_unchanged.append(tid)
                continue
            try:
                state = Checkpoint.load(ckpt)
            except CheckpointError as exc:  # one bad file must not stop the rest
                out.warnings.append(f"trial {tid}: cannot read {ckpt} ({exc}); no model logged")
                continue
            log.info("exporting the model of trial %s (%s %.4f)", tid, metric, row[best_col])
            log_trial_model(client, exp_id, run_id, ckpt, state, hists[tid], metric, maximize, val)
            client.set_tag(run_id, Tags.MODEL_EPOCHS, str(row["epochs"]))
            client.set_tag(run_id, Tags.CHECKPOINT_ARTIFACT, CHECKPOINT_ARTIFACT)
            out.models_logged.append(tid)
        if report:
            out.report_artifacts = _log_report(client, out.parent_run_id, sweep, val, out.warnings)
        # statuses last: logging a model through the fluent API ends its run as FINISHED
        for row in rows:
            _set_status(client, out.trial_runs[str(row["trial_id"])], RUN_STATUS[str(row["status"])])
        unfinished = any(RUN_STATUS[str(s)] in ("RUNNING", "SCHEDULED") for s in frame.get("status", []))
        _set_status(client, out.parent_run_id, "RUNNING" if unfinished else "FINISHED")
