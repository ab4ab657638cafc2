"""A sweep's results as pandas DataFrames — while it runs, after it ends, or copied from a
cluster's storage.

``load(name, storage)`` gives one row per trial; ``load_history(name, storage)`` one row per
trial epoch; ``load_study`` the Optuna study the searcher built (for parameter importance).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.errors import PoketuneError
from tuning.budget import Ledger
from tuning.space import SearchSpace, load_space
from tuning.storage import SWEEP_META, SWEEP_SPACE, local_copy, sweep_uri

__all__ = [
    "Sweep",
    "SweepNotFoundError",
    "filter_frame",
    "load",
    "load_history",
    "load_study",
    "open_sweep",
    "param_importance",
]

#: trial statuses in the results frame
STATUSES = ("completed", "stopped_asha", "stopped_budget", "early_stopped", "errored", "running", "pending")


class SweepNotFoundError(PoketuneError, FileNotFoundError):
    pass


@dataclass
class Sweep:
    name: str
    path: Path  # local folder (a synced copy for remote storage)
    meta: dict[str, Any]
    space: SearchSpace

    @property
    def max_epochs(self) -> int:
        return int(self.meta["max_epochs"])


def open_sweep(name: str, storage: str) -> Sweep:
    """Locate a sweep by name under ``storage`` (a folder or a URI)."""
    try:
        path = local_copy(sweep_uri(storage, name))
    except (FileNotFoundError, OSError) as exc:
        raise SweepNotFoundError(f"no sweep named {name!r} under {storage} ({exc})") from None
    meta_file = path / SWEEP_META
    if not meta_file.is_file():
        root = path.parent
        known = sorted(p.name for p in root.glob("*") if (p / SWEEP_META).is_file()) if root.is_dir() else []
        raise SweepNotFoundError(
            f"no sweep named {name!r} under {storage}; sweeps there: {', '.join(known) or 'none'}"
        )
    meta = json.loads(meta_file.read_text())
    return Sweep(name=name, path=path, meta=meta, space=load_space(path / SWEEP_SPACE))


def _read_results(trial_dir: Path) -> list[dict[str, Any]]:
    f = trial_dir / "result.json"
    if not f.is_file():
        return []
    rows = []
    for line in f.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written right now
                break
    return rows


def _trial_states(sweep: Sweep) -> dict[str, dict[str, Any]]:
    """trial_id → {status, error} from Tune's experiment state (newest file wins)."""
    states: dict[str, dict[str, Any]] = {}
    files = sorted(sweep.path.glob("experiment_state-*.json"))
    if not files:
        return states
    try:
        data = json.loads(files[-1].read_text())
    except json.JSONDecodeError:
        return states
    for item in data.get("trial_data", []):
        try:
            info = json.loads(item[0]) if isinstance(item, list) else item
        except (TypeError, json.JSONDecodeError):
            continue
        tid = info.get("trial_id")
        if tid:
            states[tid] = {"status": info.get("status"), "error": info.get("error_filename")}
    return states


def _latest_checkpoint(trial_dir: Path, last: dict[str, Any]) -> str | None:
    if last.get("checkpoint_path"):
        return str(last["checkpoint_path"])
    ckpts = sorted(trial_dir.glob("checkpoint_*"))
    return str(ckpts[-1]) if ckpts else None


def _status(tune_status: str | None, rows: list[dict[str, Any]], max_epochs: int, errored: bool) -> str:
    if errored or tune_status == "ERROR":
        return "errored"
    if tune_status in ("RUNNING", "PENDING", "PAUSED") or (tune_status is None and rows):
        return "running" if rows else "pending"
    if not rows:
        return "pending"
    last = rows[-1]
    if last.get("early_stopped"):
        return "early_stopped"
    if _epoch(last) >= max_epochs:
        return "completed"
    return "stopped_asha"


def _epoch(row: dict[str, Any]) -> int:
    """fit's own epoch count; Tune's training_iteration restarts when a TorchTrainer-driven
    trial is retried (its run resumes from the checkpoint, Tune's counter does not)."""
    return int(row.get("epoch", row.get("training_iteration", 0)))


def _trial_dirs(sweep: Sweep) -> list[Path]:
    return sorted(p for p in sweep.path.iterdir() if p.is_dir() and (p / "params.json").is_file())


def load(name: str, storage: str) -> pd.DataFrame:
    """One row per trial: id, status, stop epoch, parameters, best/last metric, epochs, time."""
    sweep = open_sweep(name, storage)
    states = _trial_states(sweep)
    ledger = Ledger.read(str(sweep.path))
    metric = sweep.space.metric
    maximize = sweep.space.mode == "max"
    rows = []
    for d in _trial_dirs(sweep):
        params = json.loads((d / "params.json").read_text())
        results = _read_results(d)
        tid = results[-1].get("trial_id") if results else d.name
        state = states.get(str(tid), {})
        errored = (d / "error.txt").is_file() and state.get("status") != "TERMINATED"
        status = _status(state.get("status"), results, sweep.max_epochs, errored)
        if status == "stopped_asha" and str(tid) in ledger.budget_stopped:
            status = "stopped_budget"  # the deadline, not ASHA, ended it
        scored = [r for r in results if r.get(metric) is not None]
        values = [r[metric] for r in scored]
        best = (max if maximize else min)(values) if values else np.nan
        best_at = int(np.argmax(values) if maximize else np.argmin(values)) if values else None
        row: dict[str, Any] = {
            "trial_id": tid,
            "status": status,
            "stop_epoch": _epoch(results[-1]) if status in ("stopped_asha", "stopped_budget") else pd.NA,
            "preset": str(tid) == ledger.preset_trial,
            f"best_{metric}": best,
            f"last_{metric}": values[-1] if values else np.nan,
            "best_epoch": _epoch(scored[best_at]) if best_at is not None else None,
            "epochs": _epoch(results[-1]) if results else 0,
            "time_s": float(results[-1].get("time_total_s", 0.0)) if results else 0.0,
        }
        row.update(sweep.space.active_values(params))
        row["checkpoint"] = _latest_checkpoint(d, results[-1] if results else {})
        row["error"] = (d / "error.txt").read_text().strip().splitlines()[-1] if errored else None
        row["trial_dir"] = str(d)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["stop_epoch"] = frame["stop_epoch"].astype("Int64")
    tail = ["error", "checkpoint", "trial_dir"]
    params = [p for p in sweep.space.params if p in frame.columns]
    front = [c for c in frame.columns if c not in tail and c not in params]
    frame = frame[front + params + tail]
    return frame.sort_values(f"best_{metric}", ascending=not maximize, na_position="last").reset_index(
        drop=True
    )


def load_history(name: str, storage: str) -> pd.DataFrame:
    """One row per (trial, epoch) with every reported metric."""
    sweep = open_sweep(name, storage)
    frames = []
    for d in _trial_dirs(sweep):
        results = _read_results(d)
        if not results:
            continue
        df = pd.DataFrame(results)
        if "trial_id" not in df:
            df.insert(0, "trial_id", d.name)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["trial_id", "epoch"])
    keep = [
        "trial_id", "epoch", "training_iteration", "train_loss", "val_loss", "val_f1", "val_acc",
        "lr", "epoch_time_s", "train_images_per_s", "phase", "early_stopped", "features", "feature_extract_s",
        "time_total_s", "timestamp", "node_id",
    ]
    out = pd.concat(frames, ignore_index=True)
    return out[[c for c in keep if c in out.columns]]


def filter_frame(
    frame: pd.DataFrame, *, where: str | None = None, sort: str | None = None,
    top: int | None = None, ascending: bool = False,
) -> pd.DataFrame:
    """``where`` is a pandas ``query`` expression; dotted parameter names need backticks."""
    out = frame
    if where:
        try:
            out = out.query(where)
        except Exception as exc:  # pandas raises many types for a bad expression
            raise ValueError(f"--where {where!r}: {exc}; columns: {', '.join(frame.columns)}") from None
    if sort:
        if sort not in out.columns:
            raise ValueError(f"--sort {sort!r}: no such column; columns: {', '.join(frame.columns)}")
        out = out.sort_values(sort, ascending=ascending, na_position="last")
    if top:
        out = out.head(top)
    return out.reset_index(drop=True)


def load_study(name: str, storage: str) -> Any:
    """The Optuna study Tune's OptunaSearch built, restored from the sweep's searcher state."""
    from ray.tune.search.optuna import OptunaSearch

    sweep = open_sweep(name, storage)
    searcher = OptunaSearch()
    searcher.restore_from_dir(str(sweep.path))
    return searcher._ot_study  # Ray keeps the study private; importance needs the real one


def param_importance(name: str, storage: str) -> pd.DataFrame:
    import optuna

    study = load_study(name, storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 2:
        raise ValueError(f"sweep {name!r}: parameter importance needs >= 2 finished trials, has {len(done)}")
    imp = optuna.importance.get_param_importances(study)
    return pd.DataFrame({"param": list(imp), "importance": list(imp.values())})
