"""A sweep's record: what it was (its metadata and space), what its trials did, and what its
searcher learned — read through Ray Tune's and Optuna's own APIs.

``Sweep.open(name, storage)`` locates the sweep (one sync when the storage is remote), then:

* ``.meta`` — the :class:`SweepMeta` the sweep wrote once when it started;
* ``.trials()`` — one row per trial (status, best/last metric, best epoch, parameters, …),
  best first, from Tune's :class:`~ray.tune.ExperimentAnalysis`;
* ``.history()`` — one row per trial epoch;
* ``.best_trial()`` — the best row with a score;
* ``.trial_config(id)`` — the :class:`TrainConfig` the trial trained with, rebuilt from the
  config Tune handed it by the same function the trial used;
* ``.study()`` — the Optuna study, loaded from the journal storage the searcher wrote.

A missing or unreadable Tune experiment state is a :class:`SweepStateError` naming the file:
statuses are never guessed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.config import TrainConfig
from training.errors import PoketuneError
from training.metrics import COST_METRICS
from tuning.budget import Ledger
from tuning.space import SearchSpace, load_space
from tuning.storage import (
    SWEEP_META,
    SWEEP_SPACE,
    is_remote,
    local_copy,
    resolve_storage,
    sweep_uri,
    write_text,
)

__all__ = [
    "STATUSES",
    "STUDY_FILE",
    "STUDY_NAME",
    "Sweep",
    "SweepMeta",
    "SweepNotFoundError",
    "SweepStateError",
    "filter_frame",
    "is_missing",
    "optuna_storage",
    "param_importance",
    "state_saved_at",
]

#: trial statuses in the results frame
STATUSES = ("completed", "stopped_asha", "stopped_budget", "early_stopped", "errored", "running", "pending")
#: the Optuna journal the sweep's searcher writes (Optuna's own file storage), in the sweep folder
STUDY_FILE = "optuna_study.journal"
STUDY_NAME = "poketune"
#: what ``history()`` keeps of each reported row, in this order
HISTORY_COLUMNS = (
    "trial_id", "epoch", "training_iteration", "train_loss", "val_loss", "val_f1", "val_acc",
    "lr", "epoch_time_s", "train_images_per_s", "phase", "early_stopped", "features",
    "feature_extract_s", "time_total_s", "timestamp", "node_id", "exploited_from", "exploited_epoch",
    "latency_ms", "latency_batch_ms", "params", "flops_per_image",
)  # fmt: skip


class SweepNotFoundError(PoketuneError, FileNotFoundError):
    pass


class SweepStateError(PoketuneError, ValueError):
    """Tune's record of a sweep is missing or unreadable (the message names the file)."""


# ---------------------------------------------------------------------------------- metadata
@dataclass(frozen=True)
class SweepMeta:
    """What a sweep was, written once into its folder when it starts (``poketune_sweep.json``)."""

    name: str
    space_file: str
    data: str
    data_hash: str
    class_names: list[str]
    task: str
    metric: str
    mode: str
    max_epochs: int
    created: str
    #: the sweep's command-line options (samples, budget, resources, seed, cache_dir, …)
    options: dict[str, Any] = field(default_factory=dict)
    #: ``--set`` values: part of every trial's config
    overrides: dict[str, Any] = field(default_factory=dict)
    #: the sweep-level values every trial's config carries next to the sampled ones
    #: (``seed``, ``num_threads`` and the overrides)
    constants: dict[str, Any] = field(default_factory=dict)
    #: the Optuna study's name in :data:`STUDY_FILE`
    study_name: str = STUDY_NAME
    #: ``--cv K``: each trial trained K folds and reported their mean; None: one split
    cv: int | None = None

    def write(self, uri: str) -> None:
        """Write to the sweep folder ``uri`` (a path or a storage URI)."""
        write_text(f"{uri}/{SWEEP_META}", json.dumps(dataclasses.asdict(self), indent=2, default=str))

    @classmethod
    def read(cls, file: Path) -> SweepMeta:
        try:
            doc = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SweepStateError(f"{file}: unreadable sweep metadata ({exc})") from None
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in doc.items() if k in known})
        except TypeError as exc:  # a key this version needs is not there
            raise SweepStateError(f"{file}: not a poketune sweep's metadata ({exc})") from None


#: what a ``--cv`` trial reports besides the means: ``val_f1_std``, ``val_f1_fold0`` …, and
#: ``val_f1_oof`` (one macro-F1 over the pooled out-of-fold predictions)
_CV_COLUMN = re.compile(r"^(train|val)_\w+?_(std|fold\d+|oof)$")


def is_missing(value: Any) -> bool:
    """Whether a cell of :meth:`Sweep.trials` holds no value (None, NaN, NA). A list-valued
    parameter (``model.hidden_sizes``) is a value: ``pd.isna`` on it is an array."""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def state_saved_at(sweep_uri: str) -> float:
    """When Tune last wrote the sweep's experiment state (0: not yet), local or remote."""
    import pyarrow.fs as pafs

    uri = sweep_uri if is_remote(sweep_uri) else resolve_storage(sweep_uri)
    fs, path = pafs.FileSystem.from_uri(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError:
        return 0.0
    stamps = [i.mtime.timestamp() for i in infos
              if i.base_name.startswith("experiment_state-") and i.mtime is not None]
    return max(stamps, default=0.0)


def optuna_storage(file: str | Path) -> Any:
    """Optuna's journal file storage at ``file``: the searcher writes the study there as it
    asks and tells, and :meth:`Sweep.study` loads it back with ``optuna.load_study``."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(file)))


# ---------------------------------------------------------------------------------- the record
@dataclass
class Sweep:
    name: str
    path: Path  # local folder (a synced copy for remote storage)
    meta: SweepMeta
    space: SearchSpace
    storage: str

    @classmethod
    def open(cls, name: str, storage: str) -> Sweep:
        """Locate sweep ``name`` under ``storage`` (a folder or a URI); remote storage is
        synced once, here."""
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
        meta = SweepMeta.read(meta_file)
        return cls(name=name, path=path, meta=meta, space=load_space(path / SWEEP_SPACE), storage=storage)

    @property
    def max_epochs(self) -> int:
        return self.meta.max_epochs

    @functools.cached_property
    def ledger(self) -> Ledger:
        """The budget's record: which trial was the preset, which the deadline stopped."""
        return Ledger.read(str(self.path))

    @functools.cached_property
    def analysis(self) -> Any:
        """Tune's :class:`~ray.tune.ExperimentAnalysis` of this sweep (read once)."""
        from ray.tune import ExperimentAnalysis

        states = sorted(self.path.glob("experiment_state-*.json"))
        if not states:
            raise SweepStateError(
                f"{self.path}: no Tune experiment state (experiment_state-*.json): the sweep "
                f"has not started a trial yet, or its folder is incomplete"
            )
        try:
            return ExperimentAnalysis(
                str(self.path.resolve()), default_metric=self.space.metric, default_mode=self.space.mode
            )
        except Exception as exc:  # Tune raises whatever its decoder does on a damaged file
            raise SweepStateError(
                f"{states[-1]}: unreadable Tune experiment state ({type(exc).__name__}: {exc}); "
                f"the sweep's trial statuses cannot be known without it"
            ) from None

    def _trials_by_id(self) -> dict[str, Any]:
        return {str(t.trial_id): t for t in self.analysis.trials}

    def _frame_of(self, trial_id: str) -> pd.DataFrame:
        df = self.analysis.trial_dataframes.get(trial_id)
        return df if df is not None else pd.DataFrame()

    # -------------------------------------------------------------- trials
    def trials(self) -> pd.DataFrame:
        """One row per trial: id, status, stop epoch, the preset flag, best/last metric, best
        epoch, epochs, time, the searched parameters, error, checkpoint and folder; best first.
        ``order`` is the order Tune created the trials (with one at a time, the order they ran)."""
        metric, maximize = self.space.metric, self.space.mode == "max"
        ledger = self.ledger
        rows = []
        for order, trial in enumerate(self.analysis.trials):
            tid = str(trial.trial_id)
            df = self._frame_of(tid)
            epochs = _epochs(df)
            status = _status(str(trial.status), epochs, self.max_epochs, _early_stopped(df), ledger.finished is not None)
            if status == "stopped_asha" and tid in ledger.budget_stopped:
                status = "stopped_budget"  # the deadline, not ASHA, ended it
            scored = df[df[metric].notna()] if metric in df else df.iloc[0:0]
            values = scored[metric].to_numpy(dtype=float) if len(scored) else np.array([])
            best_at = (int(np.argmax(values)) if maximize else int(np.argmin(values))) if len(values) else None
            error = trial.get_error() if str(trial.status) == "ERROR" else None
            checkpoint = trial.checkpoint
            row: dict[str, Any] = {
                "trial_id": tid,
                "order": order,
                "status": status,
                "stop_epoch": int(epochs[-1]) if status in ("stopped_asha", "stopped_budget") else pd.NA,
                "preset": tid == ledger.preset_trial,
                f"best_{metric}": float(values[best_at]) if best_at is not None else np.nan,
                f"last_{metric}": float(values[-1]) if len(values) else np.nan,
                "best_epoch": int(_epochs(scored)[best_at]) if best_at is not None else None,
                "epochs": int(epochs[-1]) if len(epochs) else 0,
                "time_s": float(df["time_total_s"].iloc[-1]) if "time_total_s" in df and len(df) else 0.0,
            }
            for col in COST_METRICS:  # a cost objective's: the same every epoch
                if col in df and len(df):
                    row[col] = float(df[col].iloc[-1])
            if "exploited_from" in df:  # PBT: whose checkpoints this trial went on from
                row["lineage"] = _lineage(df)
            if best_at is not None:  # a --cv trial's spread and folds, at its best epoch
                row.update({c: float(scored[c].iloc[best_at]) for c in scored.columns if _CV_COLUMN.match(c)})
            row.update(self.space.active_values(trial.config or {}))
            row["error"] = _last_line(error) if error else None
            row["checkpoint"] = _checkpoint_here(trial, checkpoint) or _reported_checkpoint(df)
            row["trial_dir"] = str(trial.path)
            rows.append(row)
        frame = pd.DataFrame(rows)
        if frame.empty:
            return frame
        frame["stop_epoch"] = frame["stop_epoch"].astype("Int64")
        tail = ["error", "checkpoint", "trial_dir"]
        params = [p for p in self.space.params if p in frame.columns]
        front = [c for c in frame.columns if c not in tail and c not in params]
        frame = frame[front + params + tail]
        return frame.sort_values(f"best_{metric}", ascending=not maximize, na_position="last", kind="stable").reset_index(
            drop=True
        )

    def best_trial(self) -> pd.Series:
        """The best trial with a score (a :meth:`trials` row)."""
        frame = self.trials()
        col = f"best_{self.space.metric}"
        scored = frame[frame[col].notna()] if not frame.empty else frame
        if scored.empty:
            raise SweepStateError(f"sweep {self.name!r} has no trial with a {self.space.metric} result yet")
        return scored.iloc[0]

    def pareto(self, *, remeasure: bool = False) -> pd.DataFrame:
        """The trials no other trial beats on every objective (``objectives:``), among those
        that finished all ``max_epochs`` (a pruned trial's early score is not comparable);
        best first by the first objective. The first objective is the trial's best value
        (the weights its checkpoint keeps), the costs are its model's. ``remeasure``: time
        each front trial's model again here (``driver_latency_ms``), by the same protocol,
        on a machine where no trial is training now."""
        objectives = self.space.objectives
        if not objectives:
            raise SweepStateError(
                f"sweep {self.name!r} has one objective ({self.space.metric}); a Pareto front needs "
                "`objectives:` in its space"
            )
        frame = self.trials()
        if frame.empty:
            return frame
        done = frame[(frame["status"] == "completed") & (frame["epochs"] >= self.max_epochs)]
        cols = [f"best_{m}" if i == 0 else m for i, (m, _) in enumerate(objectives)]
        done = done.dropna(subset=[c for c in cols if c in done])
        if any(c not in done for c in cols):
            return done.iloc[0:0]
        signs = np.array([-1.0 if mode == "max" else 1.0 for _, mode in objectives])
        values = done[cols].to_numpy(dtype=float) * signs  # every objective as "lower is better"
        front = [
            i for i in range(len(values))
            if not ((values <= values[i]).all(axis=1) & (values < values[i]).any(axis=1)).any()
        ]  # fmt: skip
        out = done.iloc[front].reset_index(drop=True)
        if remeasure and "latency_ms" in cols and len(out):
            out["driver_latency_ms"] = [self._remeasure(str(t)) for t in out["trial_id"]]
        return out

    def _remeasure(self, trial_id: str) -> float:
        from training.checkpoint import build_model_for
        from training.cost import measure_cost

        cfg = self.trial_config(trial_id)
        cfg = cfg.replace(**{"model.pretrained": False, "model.weights_path": None})
        model = build_model_for(cfg, len(self.meta.class_names))
        shape = (cfg.in_channels, cfg.data.image_size, cfg.data.image_size)
        return measure_cost(model, shape, eval_batch=cfg.eval_batch_size).latency_ms

    def history(self) -> pd.DataFrame:
        """One row per (trial, epoch) with every reported metric, trials in creation order."""
        frames = []
        for trial in self.analysis.trials:
            df = self._frame_of(str(trial.trial_id))
            if df.empty:
                continue
            if "trial_id" not in df:
                df = df.assign(trial_id=str(trial.trial_id))
            frames.append(df[[c for c in df.columns if c in HISTORY_COLUMNS or _CV_COLUMN.match(c)]])
        if not frames:
            return pd.DataFrame(columns=["trial_id", "epoch"])
        return pd.concat(frames, ignore_index=True)

    def trial_config(self, trial_id: str) -> TrainConfig:
        """The config trial ``trial_id`` trained with: Tune's record of the config it handed
        the trial (sampled values and the sweep's constants), through the space's
        :meth:`~tuning.space.SearchSpace.trial_config` — the function the trial itself called."""
        trials = self._trials_by_id()
        if str(trial_id) not in trials:
            raise SweepStateError(
                f"sweep {self.name!r} has no trial {trial_id!r}; trials: {', '.join(trials) or 'none'}"
            )
        return self.space.trial_config(dict(trials[str(trial_id)].config or {}))

    # -------------------------------------------------------------- the searcher
    def study(self) -> Any:
        """The Optuna study the sweep's searcher built, from its journal storage."""
        import optuna

        file = self.path / STUDY_FILE
        if not file.is_file():
            raise SweepStateError(f"{file}: no Optuna journal (a sweep started before poketune recorded one?)")
        return optuna.load_study(study_name=self.meta.study_name, storage=optuna_storage(file))


def _lineage(df: pd.DataFrame) -> str:
    """``"epoch 3 ← a1b2c3d4@2; …"``: before epoch 3 the trial took trial a1b2c3d4's state
    after its epoch 2 (PBT's exploit), in order; empty when it never did."""
    hops = df[df["exploited_from"].notna()]
    return "; ".join(
        f"epoch {int(r['epoch'])} ← {r['exploited_from']}@{int(r['exploited_epoch'])}" for _, r in hops.iterrows()
    )


def _epochs(df: pd.DataFrame) -> np.ndarray:
    """fit's own epoch count; Tune's training_iteration restarts when a TorchTrainer-driven
    trial is retried (its run resumes from the checkpoint, Tune's counter does not)."""
    for col in ("epoch", "training_iteration"):
        if col in df:
            return df[col].fillna(0).to_numpy(dtype=int)
    return np.zeros(len(df), dtype=int)


def _early_stopped(df: pd.DataFrame) -> bool:
    return bool("early_stopped" in df and len(df) and df["early_stopped"].fillna(False).iloc[-1])


def _status(tune_status: str, epochs: np.ndarray, max_epochs: int, early_stopped: bool, finished: bool) -> str:
    if tune_status == "ERROR":
        return "errored"
    # a sweep that ended with a trial paused: the scheduler (HyperBand) left it there
    if tune_status in ("RUNNING", "PENDING") or (tune_status == "PAUSED" and not finished):
        return "running" if len(epochs) else "pending"
    if not len(epochs):
        return "pending"
    if early_stopped:
        return "early_stopped"
    if epochs[-1] >= max_epochs:
        return "completed"
    return "stopped_asha"


def _checkpoint_here(trial: Any, checkpoint: Any) -> str | None:
    """The trial's latest checkpoint in this copy of the sweep (Tune records the path it was
    written to: on the cluster's storage, or before the folder was moved), else as recorded."""
    if checkpoint is None:
        return None
    here = Path(trial.path) / Path(checkpoint.path).name
    return str(here) if here.exists() else str(checkpoint.path)


def _reported_checkpoint(df: pd.DataFrame) -> str | None:
    """A data-parallel trial keeps its checkpoints in its TorchTrainer run, not as Tune
    checkpoints: Ray's ``TuneReportCallback`` reports the path with each result."""
    if "checkpoint_path" not in df:
        return None
    paths = df["checkpoint_path"].dropna()
    return str(paths.iloc[-1]) if len(paths) else None


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else text.strip()


# ---------------------------------------------------------------------------------- frames
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


def param_importance(sweep: Sweep) -> pd.DataFrame:
    """Optuna's parameter importances over the sweep's finished trials."""
    import optuna

    study = sweep.study()
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 2:
        raise ValueError(f"sweep {sweep.name!r}: parameter importance needs >= 2 finished trials, has {len(done)}")
    imp = optuna.importance.get_param_importances(study)
    return pd.DataFrame({"param": list(imp), "importance": list(imp.values())})
