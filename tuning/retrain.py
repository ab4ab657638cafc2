"""Retrain a sweep's best (or a chosen) trial on train+val and register it in MLflow.

The trial's exact config (:meth:`tuning.results.Sweep.trial_config`: the config Tune handed
the trial, rebuilt by the function the trial used) trains on every labelled image for the trial's best epoch count through Ray Train's
``TorchTrainer``, once per seed. The K seeds become ONE ``mlflow.pyfunc`` model
(:class:`tuning.predict.EnsembleModel`, probabilities averaged) registered as a new version
of ``poketune-<task>``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import torch

from training.checkpoint import (
    Checkpoint,
    StateDict,
    build_model_for,
    load_initial_weights,
    without_head,
)
from training.config import ConfigError, TrainConfig
from training.data import normalize_batch
from training.data.check import check_before_training
from training.engine import PreparedData, prepare_data
from training.ray_session import cpus_per_worker, node_cpus, torch_threads
from tuning.budget import BudgetError
from tuning.results import Sweep, is_missing
from tuning.storage import is_remote, sweep_uri
from tuning.validation import checkpoint_dir

__all__ = [
    "RetrainResult",
    "SourceTrial",
    "distinct_trials",
    "near_the_best",
    "retrain",
    "retrain_config",
    "select_trial",
]

#: "best": the trial's best epoch count (each image seen as often as in the trial; 25 % more
#: optimizer steps on train+val); "steps": as many optimizer steps as the trial's best epoch
#: (fewer epochs on the larger set); or a number
Epochs = Literal["best", "steps"] | int
_FAILED = ("errored",)

#: ``--from-trial-weights``: which of its trial's weights a member starts from. ``backbone``:
#: every weight but the head's, which starts from the member's own seeded initialisation, so
#: the trial's backbone takes the place of the config's pretrained one and the config's recipe
#: applies as written; ``all``: the head too, continuing the trial's model
TrialWeights = Literal["all", "backbone"]
TRIAL_WEIGHTS: tuple[TrialWeights, ...] = get_args(TrialWeights)


@dataclass
class SourceTrial:
    """The sweep trial a retrain copies."""

    sweep: str
    trial_id: str
    metric: str
    best_value: float
    best_epoch: int
    config: TrainConfig  # the config the trial trained with (Sweep.trial_config)
    checkpoint: Path | None = None  # the trial's latest checkpoint folder here (its best weights inside)


@dataclass
class Member:
    """One model of the registered ensemble: which trial, seed and epoch count made it."""

    trial_id: str
    seed: int
    epochs: int
    fold: int | None = None  # ``--no-refit`` of a --cv trial: which of its fold models
    #: ``--from-trial-weights``: the trial epoch whose weights it started from (else its config's
    #: initialisation, e.g. ImageNet)
    started_from_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """For MLflow's tags and metadata (``fold`` only where there is one)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class PresetComparison:
    """The task's preset trained once (``poketune train``'s recipe, its own epochs) on the
    sweep's train split, scored on the sweep's validation split: what tuning bought."""

    task: str
    metric: str
    preset_value: float  # its best epoch's validation score
    preset_best_epoch: int
    preset_epochs: int  # epochs it ran (its own early stopping)
    tuned_value: float  # the retrained source trial's score on the same split
    checkpoint: Path

    @property
    def gain(self) -> float:
        return self.tuned_value - self.preset_value


@dataclass
class RetrainResult:
    source: SourceTrial  # the best of ``sources``
    epochs: int  # the best source's epoch count
    seeds: list[int]
    checkpoints: list[Path]  # one inference checkpoint.pt per member (source × seed)
    run_dirs: list[str]  # the TorchTrainer runs under the sweep's storage
    histories: list[list[dict[str, Any]]]
    wall_time_s: float
    mlflow_uri: str | None = None
    mlflow_run_id: str | None = None
    registered_name: str | None = None
    version: int | None = None
    warnings: list[str] = field(default_factory=list)
    sources: list[SourceTrial] = field(default_factory=list)  # --top K: the K configs
    #: --top K --within D: the top-K configs left out for scoring more than D below the best
    left_out: list[SourceTrial] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)  # --set: on top of every member's config
    members: list[Member] = field(default_factory=list)
    preset: PresetComparison | None = None  # --vs-preset
    refit: bool = True  # False: the members are the trials' own best weights (--no-refit)
    time_budget_s: float | None = None  # --time-budget: the refit's training, all members
    #: --time-budget: per member, what one epoch was timed at and the epochs that fit
    budget_lines: list[str] = field(default_factory=list)
    #: --from-trial-weights: each member started from its trial's best weights, these of them
    from_trial_weights: TrialWeights | None = None

    @property
    def model_uri(self) -> str | None:
        if self.registered_name is None or self.version is None:
            return None
        return f"models:/{self.registered_name}/{self.version}"


# ---------------------------------------------------------------------------------- the trial
def _usable(frame: pd.DataFrame, col: str) -> pd.DataFrame:
    """Trials that finished with a score and a best epoch: the ones a retrain can copy."""
    return frame[~frame["status"].isin(_FAILED) & frame[col].notna() & frame["best_epoch"].notna()]


def _source(sweep: Sweep, row: pd.Series) -> SourceTrial:
    metric = sweep.space.metric
    return SourceTrial(
        sweep=sweep.name,
        trial_id=str(row["trial_id"]),
        metric=metric,
        best_value=float(row[f"best_{metric}"]),
        best_epoch=int(row["best_epoch"]),
        config=sweep.trial_config(str(row["trial_id"])),
        checkpoint=checkpoint_dir(row.to_dict()),
    )


def select_trial(sweep: Sweep, trial: str | None = None) -> SourceTrial:
    """The best finished trial of ``sweep`` (by the sweep's metric), or trial ``trial``."""
    name = sweep.name
    frame = sweep.trials()
    metric = sweep.space.metric
    col = f"best_{metric}"
    if frame.empty:
        raise ValueError(f"sweep {name!r} has no trials yet")
    usable = _usable(frame, col)
    if trial is not None:
        ids = [str(t) for t in frame["trial_id"]]
        if trial not in ids:
            raise ValueError(f"sweep {name!r} has no trial {trial!r}; trials: {', '.join(ids)}")
        row_frame = usable[usable["trial_id"].astype(str) == trial]
        if row_frame.empty:
            status = frame.loc[frame["trial_id"].astype(str) == trial, "status"].iloc[0]
            raise ValueError(
                f"trial {trial!r} of sweep {name!r} has no usable result (status {status}); "
                f"usable trials: {', '.join(usable['trial_id'].astype(str)) or 'none'}"
            )
        row = row_frame.iloc[0]
    else:
        if usable.empty:
            raise ValueError(
                f"sweep {name!r} has no trial with a {metric} result "
                f"(statuses: {', '.join(frame['status'].astype(str))})"
            )
        ascending = sweep.space.mode == "min"
        row = usable.sort_values(col, ascending=ascending, kind="stable").iloc[0]
    return _source(sweep, row)


def distinct_trials(sweep: Sweep, limit: int | None = None) -> list[pd.Series]:
    """The finished trials of ``sweep`` with distinct configs, best first (the searched values
    a trial really had; a config sampled twice counts once, at its better score)."""
    frame = sweep.trials()  # sorted best first
    usable = _usable(frame, f"best_{sweep.space.metric}")
    params = [p for p in sweep.space.params if p in usable.columns]
    seen: set[str] = set()
    picked: list[pd.Series] = []
    for _, row in usable.iterrows():
        key = json.dumps({p: row[p] for p in params if not is_missing(row[p])}, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            picked.append(row)
        if len(picked) == limit:
            break
    return picked


def select_trials(sweep: Sweep, top: int) -> list[SourceTrial]:
    """The ``top`` best finished trials of ``sweep`` with distinct configs."""
    if top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")
    picked = distinct_trials(sweep, top)
    if len(picked) < top:
        raise ConfigError(
            f"--top {top}: sweep {sweep.name!r} has only {len(picked)} finished trial(s) with distinct configs"
        )
    return [_source(sweep, row) for row in picked]


def near_the_best(sources: list[SourceTrial], within: float, mode: str) -> tuple[list[SourceTrial], list[SourceTrial]]:
    """``sources`` (best first) split into those whose score is within ``within`` of the
    best's and the rest; the best is always kept.

    An ensemble averages its members' probabilities with equal weight, so a member far below
    the best pulls the average toward a weaker model: on the task2 quality set, seed 1's
    three best trials scored val_f1 0.702, 0.413 and 0.308 and their average 0.597 test
    macro-F1, against 0.700 for an earlier sweep whose three were 0.711, 0.659 and 0.413.
    On seeds 3-5, which did not choose it, ``--within 0.1`` scored 0.574 mean test macro-F1
    against 0.532 for the same sweeps' top 3 (docs/benchmarks.md).
    """
    if within < 0:
        raise ConfigError(f"--within must be >= 0, got {within}")
    best = sources[0].best_value
    sign = 1.0 if mode == "max" else -1.0
    near = [sign * (best - s.best_value) <= within + 1e-12 for s in sources]
    return [s for s, ok in zip(sources, near, strict=True) if ok], [s for s, ok in zip(sources, near, strict=True) if not ok]


#: config keys a retrain sets itself: ``--set`` names the flag to use instead
_RETRAIN_KEYS = {"optim.epochs": "--epochs", "seed": "--seeds", "num_threads": "--workers"}


def check_overrides(overrides: dict[str, Any]) -> None:
    """``retrain --set``: not the keys the retrain decides (epochs, seed, threads) nor
    early stopping, which a refit without a validation split cannot do."""
    for key in overrides:
        if key in _RETRAIN_KEYS:
            raise ConfigError(f"--set {key}: retrain sets it itself; use {_RETRAIN_KEYS[key]}")
        if key.startswith("early_stop."):
            raise ConfigError(f"--set {key}: a retrain on train+val has no validation split to stop on")


def retrain_config(
    source: SourceTrial, *, epochs: int, seed: int, num_threads: int, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """The trial's config for training on everything, with ``overrides`` (``retrain --set``,
    e.g. a trial ranked at 96 px refitted at 160 px) on top.

    Early stopping is off (no validation set to watch). The monitor becomes val_loss because
    without validation data the engine steps a plateau scheduler on train_loss, and the
    scheduler's mode follows the monitor: "min" is the right direction for a loss.
    """
    check_overrides(overrides or {})
    return source.config.replace(
        **{
            **(overrides or {}),
            "optim.epochs": epochs,
            "early_stop.patience": 0,
            "early_stop.f1_window": 0,
            "early_stop.monitor": "val_loss",
            "seed": seed,
            "num_threads": num_threads,
        }
    )


def _epochs(source: SourceTrial, epochs: Epochs, train_share: float = 1.0) -> int:
    """The epochs a member trains; ``train_share`` = the trial's training images / the images
    the retrain trains on."""
    if epochs == "best":
        return source.best_epoch
    if epochs == "steps":
        return max(1, round(source.best_epoch * train_share))
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"--epochs must be 'best', 'steps' or a positive integer, got {epochs!r}")
    return epochs


#: seconds a member costs outside its epochs: a TorchTrainer run's start-up and final
#: checkpoint (8.7 s per run measured for task2, docs/benchmarks.md "Trial overhead"; a
#: Lite backbone's checkpoint is larger)
MEMBER_RESERVE_S = 15.0

#: seconds kept after the last member for what follows the training: the inference
#: checkpoints, MLflow's run and the registered version (a Lite0 ensemble's artifacts are
#: tens of MB)
AFTER_TRAINING_RESERVE_S = 20.0


def epochs_within(asked: int, epoch_s: float, left_s: float, members_left: int) -> int:
    """The epochs (at most ``asked``) a member can train when ``left_s`` seconds remain for
    ``members_left`` members including it, one epoch taking ``epoch_s``; 0: not one fits."""
    share = left_s / members_left - MEMBER_RESERVE_S
    return max(0, min(asked, int(share // epoch_s)))


# ---------------------------------------------------------------------------------- training
def _train_seed(
    cfg: TrainConfig,
    data: Any,
    *,
    storage_path: str,
    run_name: str,
    local_dir: Path,
    workers: int,
    use_gpu: bool,
    cpus_per_worker: float,
    deadline: float | None = None,
    init_weights: StateDict | None = None,
) -> tuple[Path, list[dict[str, Any]], str]:
    from training.ray_worker import run_torch_trainer

    result = run_torch_trainer(
        cfg,
        data,
        storage_path=storage_path,
        name=run_name,
        workers=workers,
        use_gpu=use_gpu,
        cpus_per_worker=cpus_per_worker,
        deadline=deadline,
        init_weights=init_weights,
    )
    if result.checkpoint is None:
        raise RuntimeError(f"retraining reported no checkpoint (see {result.path})")
    with result.checkpoint.as_directory() as d:
        ckpt = Checkpoint.load(d)
    path = ckpt.for_inference().save(local_dir)
    return path, list(ckpt.history), str(result.path)


@dataclass
class _Kept:
    path: Path
    history: list[dict[str, Any]]
    seed: int
    epochs: int


def _kept_weights(source: SourceTrial, out: Path) -> list[_Kept]:
    """The trial's best weights as inference checkpoints (``--no-refit``): one, or each fold
    model of a cross-validated trial (every one trained on the other folds' images)."""
    if source.checkpoint is None:
        raise ConfigError(f"trial {source.trial_id} of sweep {source.sweep!r} has no checkpoint to keep")
    ckpt = Checkpoint.load(source.checkpoint)
    members = ckpt.members()
    folders = [out] if len(members) == 1 else [out.with_name(f"{out.name}-fold{i}") for i in range(len(members))]
    return [
        _Kept(m.save(folder), list(m.history), m.config.seed, m.best_epoch)
        for m, folder in zip(members, folders, strict=True)
    ]


def _trial_weights(source: SourceTrial, cfg: TrainConfig, num_classes: int, which: TrialWeights) -> StateDict:
    """The trial's best weights for a member of ``cfg`` to start from (``--from-trial-weights``),
    ``which`` of them, checked here against the model ``cfg`` builds, so a ``--set`` that
    changes the architecture fails in the driver, in one line, before anything trains (with
    ``backbone``, a ``--set`` of the head alone fits). A cross-validated trial's are its first
    fold model's."""
    if source.checkpoint is None:
        raise ConfigError(f"--from-trial-weights: trial {source.trial_id} of sweep {source.sweep!r} has no checkpoint here")
    weights = Checkpoint.load(source.checkpoint).best_weights
    if which == "backbone":
        weights = without_head(weights)
    what = f"--from-trial-weights: trial {source.trial_id}'s checkpoint {source.checkpoint}"
    load_initial_weights(build_model_for(_from_scratch(cfg), num_classes), weights, source=what)
    return weights


def _from_scratch(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` building its model without initial weights: the trial's weights replace them (and a
    hub backbone's pretrained file need not be here to be overwritten)."""
    return cfg.replace(**{"model.pretrained": False, "model.weights_path": None})


def _unused_stamp(root: Path, stamp: str) -> str:
    """``stamp``, or ``stamp-2``... if a retrain already used it: Ray Train resumes a run that
    has the same name, so a second retrain within the same second must not reuse one."""
    candidate, n = stamp, 1
    while any(root.glob(f"{candidate}-seed*")):
        n += 1
        candidate = f"{stamp}-{n}"
    return candidate


def _cpus_per_worker(workers: int) -> float:
    """The cluster's CPUs shared by the workers, capped at the largest node (the trial's
    ``num_threads`` was the sweep's per-trial share, not this run's)."""
    return cpus_per_worker(0, workers, node_cpus())


# ---------------------------------------------------------------------------------- MLflow
def _log_and_register(
    result: RetrainResult,
    data: PreparedData,
    *,
    uri: str,
    registered_name: str,
    experiment: str,
    stamp: str,
) -> None:
    import mlflow

    from tuning._mlflow import Tags, get_or_create_experiment, log_model, tracking

    source = result.source
    prep = data.preprocessing
    cfg = Checkpoint.load(result.checkpoints[0]).config
    # the export's tag names, so a sweep's trial runs and its retrains are found the same way
    tags = {
        Tags.KIND: "retrain",
        Tags.SWEEP: source.sweep,
        Tags.TASK: cfg.task,
        Tags.DATA_HASH: data.source_hash,
        "source_trial_id": ",".join(dict.fromkeys(m.trial_id for m in result.members)) or source.trial_id,
        "seeds": ",".join(map(str, result.seeds)),
        # what the registered model is made of: trial, seed and epochs of every member
        "members": json.dumps([m.to_dict() for m in result.members]),
        # False: the members are the trials' own best weights, trained on the train split only
        "refit": str(result.refit).lower(),
    }
    if result.overrides:  # --set: the members' configs are not the trials' own
        tags["overrides"] = json.dumps(result.overrides, default=str)
    if result.left_out:  # --within: which of the top K were not averaged, and why
        tags["left_out"] = json.dumps({s.trial_id: s.best_value for s in result.left_out})
    if result.time_budget_s is not None:  # --time-budget: why the epochs are what they are
        tags["time_budget_s"] = f"{result.time_budget_s:g}"
    if result.from_trial_weights:  # the members started from the trials' weights (members: which epoch)
        tags["from_trial_weights"] = result.from_trial_weights
    with tracking(uri) as client:
        exp_id = get_or_create_experiment(client, experiment, uri)
        with mlflow.start_run(
            experiment_id=exp_id, run_name=f"retrain-{source.trial_id}-{stamp}", tags=tags
        ) as run:
            params = {k: json.dumps(v) if isinstance(v, list) else v for k, v in cfg.to_flat().items()}
            params.pop("seed")  # one per member: logged below
            mlflow.log_params(
                {
                    **params,
                    "retrain.seeds": json.dumps(result.seeds),
                    "retrain.epochs": result.epochs,
                    "retrain.train_images": len(data.y_train),
                    f"source.best_{source.metric}": source.best_value,
                    "source.best_epoch": source.best_epoch,
                }
            )
            for epoch in range(max(len(h) for h in result.histories)):
                losses = {
                    f"train_loss.{m.trial_id}.seed{m.seed}" if len(result.sources) > 1 else f"train_loss.seed{m.seed}":
                    h[epoch]["train_loss"]
                    for m, h in zip(result.members, result.histories, strict=True)
                    if len(h) > epoch
                }
                metrics = {"train_loss": float(np.mean(list(losses.values())))}
                if len(losses) > 1 or len(result.checkpoints) > 1:
                    metrics.update(losses)
                mlflow.log_metrics(metrics, step=epoch + 1)
            info = log_model(
                result.checkpoints,
                preprocessing=prep,
                class_names=list(data.class_names),
                example=normalize_batch(torch.as_tensor(data.x_train[:1]), prep).numpy(),
                registered_name=registered_name,
                metadata={"member_sources": [m.to_dict() for m in result.members]},
            )
            version = info.registered_model_version
            if version is None:
                raise RuntimeError(f"MLflow did not register {registered_name!r} (run {run.info.run_id})")
            for key, value in tags.items():
                client.set_model_version_tag(registered_name, str(version), key, value)
    result.mlflow_uri = uri
    result.mlflow_run_id = run.info.run_id
    result.registered_name = registered_name
    result.version = int(version)


def _train_preset(sweep: Sweep, source: SourceTrial, data_root: str, cache_dir: Any, out: Path) -> PresetComparison:
    """``poketune train --task TASK`` as a user would run it, on the sweep's data settings and
    seed, so its validation split is the one the sweep's trials were scored on."""
    from training.metrics import best_index, mode_of
    from training.run import run_training
    from training.tasks import preset_config

    shared = {k: v for k, v in source.config.to_flat().items() if k.startswith("data.")}
    cfg = preset_config(sweep.meta.task, {**shared, "seed": source.config.seed})
    outcome = run_training(cfg, data_root, out=out, cache_dir=cache_dir)
    metric = sweep.space.metric
    scored = [h for h in outcome.history if h.get(metric) is not None]
    if not scored:
        raise RuntimeError(f"the preset's run reported no {metric} (see {out})")
    best = best_index([float(h[metric]) for h in scored], mode_of(metric))
    return PresetComparison(
        task=sweep.meta.task,
        metric=metric,
        preset_value=float(scored[best][metric]),
        preset_best_epoch=int(scored[best]["epoch"]),
        preset_epochs=len(outcome.history),
        tuned_value=source.best_value,
        checkpoint=outcome.checkpoint_path,
    )


# ---------------------------------------------------------------------------------- retrain
def _fit_the_budget(
    cfg: TrainConfig, data: PreparedData, budget_s: float, started: float, members_left: int, workers: int
) -> tuple[int, str]:
    """How many epochs of ``cfg`` fit what is left of ``budget_s``, and the line that says why."""
    from training.epoch_time import time_an_epoch

    timed = time_an_epoch(cfg, data)
    # data-parallel workers split each epoch's images (no slower than one worker, roughly)
    epoch_s = timed.seconds / workers
    left = _left_to_train(budget_s, started)
    n = epochs_within(cfg.optim.epochs, epoch_s, left, members_left)
    share = left / members_left
    if n == 0:
        return 0, (
            f"{timed.describe()}; {share:.0f} s is this member's share of the {left:.0f} s left, "
            f"less {MEMBER_RESERVE_S:g} s for its start-up: not one epoch fits"
        )
    cut = f"{n} of the {cfg.optim.epochs} epochs asked fit" if n < cfg.optim.epochs else f"all {n} epochs asked fit"
    return n, f"{timed.describe()}; {cut} in {share:.0f} s"


def _left_to_train(budget_s: float, started: float) -> float:
    """Seconds the members still have: the budget from the call's start, less what follows them."""
    return budget_s - (time.monotonic() - started) - AFTER_TRAINING_RESERVE_S


def _deadline_of(budget_s: float, started: float, members_left: int) -> float:
    """The unix time this member's training ends by: its share of what is left (the
    workers check it, :mod:`training.deadline`; a timing that was low costs the plan's
    last epochs, not the budget)."""
    return time.time() + _left_to_train(budget_s, started) / members_left


def retrain(
    name: str,
    storage: str,
    *,
    mlflow_uri: str | None,
    trial: str | None = None,
    top: int = 1,
    within: float | None = None,
    overrides: dict[str, Any] | None = None,
    epochs: Epochs = "best",
    seeds: int = 1,
    workers: int = 1,
    use_gpu: bool = False,
    registered_name: str | None = None,
    experiment: str | None = None,
    data: str | None = None,
    address: str | None = None,
    verbose: bool = False,
    vs_preset: bool = False,
    refit: bool = True,
    time_budget_s: float | None = None,
    from_trial_weights: TrialWeights | None = None,
) -> RetrainResult:
    """Retrain sweep ``name``'s best trial (or ``trial``, or its ``top`` best distinct
    configs) on train+val, ``seeds`` times each. ``within`` leaves out of the ``top`` those
    whose score is more than that below the best's (:func:`near_the_best`). ``overrides``
    (``--set``) change the config every member trains with, e.g. ``data.image_size``.

    ``data`` overrides the dataset folder recorded by the sweep (a sweep run elsewhere).
    With ``mlflow_uri`` the run is logged (experiment ``experiment``, default
    ``poketune-<task>`` like ``poketune export``) and the seeds are registered as one
    ensemble version of ``registered_name`` (default ``poketune-<task>``); without it only
    the local checkpoints are written. ``vs_preset`` also trains the task's preset once on the
    sweep's own train/validation split and records both scores (:class:`PresetComparison`).

    ``refit=False`` trains nothing: each member is the source trial's own best weights, as
    the sweep left them (trained on the train split, the epoch its validation score peaked).
    An ensemble of the top trials that way costs no training time, so a budget can go to the
    sweep; on the task2 quality set it scored above the refitted best trial
    (``docs/benchmarks.md``).

    ``time_budget_s`` (``--time-budget``) bounds the refit, every member together, counted
    from the start of the call, with :data:`AFTER_TRAINING_RESERVE_S` kept for logging and
    registering: before each member trains, one epoch of its config is timed on a few
    batches of the real data (:func:`training.epoch_time.time_an_epoch`) and its epochs are
    cut to what fits in its share of the time left, so its schedule (cosine, one-cycle) is
    sized to the epochs it will run. The timing plans; the share's deadline, checked by the
    workers after every epoch, holds: a member whose epochs run slower than timed ends
    after the last epoch that fits, and says so. If not one epoch of the first member fits
    it is an error before anything trains; a later member that does not fit is left out
    with a warning, and the members already trained are kept.

    ``from_trial_weights`` (``--from-trial-weights``): each member starts from its trial's best weights
    (:data:`TrialWeights`: ``all`` of them or the ``backbone``'s, with a fresh head) instead of
    its config's initialisation, and trains on train+val from there with a fresh optimizer and
    schedule. The sweep's training is then not thrown away: a sweep ranked at a
    small image size (``--set data.image_size``) hands the refit a model that only has to
    adapt to the larger size (progressive resizing). On the task3 quality set it scored far
    above the refit from ImageNet weights within the same budget (``docs/benchmarks.md``).
    """
    from training.ray_session import init_ray
    from tuning._mlflow import ensure_reachable, experiment_name, registered_model_name

    t0 = _dt.datetime.now()
    started = time.monotonic()
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if from_trial_weights is not None and from_trial_weights not in TRIAL_WEIGHTS:
        raise ConfigError(f"--from-trial-weights: {from_trial_weights!r} is not one of {', '.join(TRIAL_WEIGHTS)}")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if mlflow_uri is not None:
        # before any training: finding out after half an hour of GPU time is too late
        mlflow_uri = ensure_reachable(mlflow_uri, hint="retrain without --mlflow-uri to skip MLflow")

    if not refit and (
        seeds != 1 or epochs != "best" or workers != 1 or use_gpu or overrides or time_budget_s or from_trial_weights
    ):
        raise ConfigError(
            "--no-refit keeps the trials' own weights: --seeds, --epochs, --workers, --gpu, --set, "
            "--time-budget and --from-trial-weights do not apply"
        )
    overrides = dict(overrides or {})
    check_overrides(overrides)
    sweep = Sweep.open(name, storage)
    if trial is not None and top != 1:
        raise ConfigError("--trial and --top are exclusive: one names a trial, the other the K best")
    if within is not None and top == 1:
        raise ConfigError("--within chooses among the --top K trials: give --top K as well")
    sources = [select_trial(sweep, trial)] if top == 1 else select_trials(sweep, top)
    left_out: list[SourceTrial] = []
    if within is not None:
        sources, left_out = near_the_best(sources, within, sweep.space.mode)
    source = sources[0]
    data_root = data or sweep.meta.data
    # validated here, before any data is read: a typo'd key fails in the driver, in one line
    base = source.config.replace(**overrides)
    cache_dir = sweep.meta.options.get("cache_dir")
    check_before_training(data_root, base.data, cache_dir=cache_dir)
    prepared, _ = prepare_data(data_root, base, cache_dir=cache_dir, train_on_all=refit)
    train_share = 1.0
    if epochs == "steps":  # the trials' own split (a cache hit): how many images they trained on
        split, _ = prepare_data(data_root, base, cache_dir=cache_dir)
        train_share = len(split.y_train) / len(prepared.y_train)
    n_epochs = _epochs(source, epochs, train_share)
    warnings = []
    if sweep.meta.data_hash and prepared.source_hash != sweep.meta.data_hash:
        warnings.append(
            f"the data under {data_root} changed since sweep {name!r} ran "
            f"(hash {prepared.source_hash} != {sweep.meta.data_hash})"
        )
    retrain_root = f"{sweep_uri(storage, name)}/retrain"
    local_root = (
        Path(tempfile.gettempdir()) / "poketune-retrain" / name
        if is_remote(retrain_root)
        else Path(retrain_root)
    )
    stamp = _unused_stamp(local_root, f"{t0:%Y%m%d-%H%M%S}")
    seed_list = [base.seed + k for k in range(seeds)]
    checkpoints: list[Path] = []
    histories: list[list[dict[str, Any]]] = []
    run_dirs: list[str] = []
    members: list[Member] = []
    budget_lines: list[str] = []
    if not refit:  # the trials' own best weights: nothing to train, no Ray
        for src in sources:
            kept = _kept_weights(src, local_root / f"{stamp}-{src.trial_id}-norefit")
            for fold, one in enumerate(kept):
                checkpoints.append(one.path)
                histories.append(one.history)
                run_dirs.append(str(src.checkpoint))
                members.append(Member(src.trial_id, one.seed, one.epochs, fold if len(kept) > 1 else None))
    else:
        init_ray(address, verbose=verbose)
        import ray

        data_ref = ray.put(prepared)
        cpus = _cpus_per_worker(workers)
        # every data.* key is shared by a sweep's trials (the loader refuses searching them),
        # so one decoded set serves every member
        planned = [(src, seed) for src in sources for seed in seed_list]
        warm: dict[str, StateDict] = {}
        for i, (src, seed) in enumerate(planned):
            src_epochs = _epochs(src, epochs, train_share)
            cfg = retrain_config(src, epochs=src_epochs, seed=seed, num_threads=torch_threads(cpus), overrides=overrides)
            if from_trial_weights:
                cfg = _from_scratch(cfg)
                if src.trial_id not in warm:
                    warm[src.trial_id] = _trial_weights(src, cfg, prepared.num_classes, from_trial_weights)
            if time_budget_s is not None:
                fitted, why = _fit_the_budget(cfg, prepared, time_budget_s, started, len(planned) - i, workers)
                budget_lines.append(f"trial {src.trial_id} seed {seed}: {why}")
                if fitted == 0:
                    if not members:
                        raise BudgetError(f"--time-budget {time_budget_s:g}s: {why}; give more time or fewer members")
                    warnings.append(f"trial {src.trial_id} seed {seed} left out by --time-budget: {why}")
                    continue
                src_epochs = fitted
                cfg = cfg.replace(**{"optim.epochs": src_epochs})
            run_name = f"{stamp}-seed{seed}" if len(sources) == 1 else f"{stamp}-{src.trial_id}-seed{seed}"
            deadline = None if time_budget_s is None else _deadline_of(time_budget_s, started, len(planned) - i)
            path, history, run_dir = _train_seed(
                cfg,
                data_ref,
                storage_path=retrain_root,
                run_name=run_name,
                local_dir=local_root / run_name,
                workers=workers,
                use_gpu=use_gpu,
                cpus_per_worker=cpus,
                deadline=deadline,
                init_weights=warm.get(src.trial_id),
            )
            if len(history) < src_epochs:  # only a deadline ends a refit early (no validation)
                budget_lines.append(
                    f"trial {src.trial_id} seed {seed}: the deadline ended it after {len(history)} of "
                    f"the {src_epochs} epochs planned (its epochs took longer than timed)"
                )
            members.append(Member(src.trial_id, seed, len(history), started_from_epoch=src.best_epoch if from_trial_weights else None))
            checkpoints.append(path)
            histories.append(history)
            run_dirs.append(run_dir)
    out = RetrainResult(
        source=source,
        epochs=members[0].epochs if refit and members else n_epochs,  # after --time-budget's cut
        seeds=sorted({m.seed for m in members}),  # --time-budget may have left some out
        checkpoints=checkpoints,
        run_dirs=run_dirs,
        histories=histories,
        wall_time_s=0.0,
        warnings=warnings,
        sources=sources,
        left_out=left_out,
        overrides=overrides,
        members=members,
        refit=refit,
        time_budget_s=time_budget_s,
        budget_lines=budget_lines,
        from_trial_weights=from_trial_weights,
    )
    if vs_preset:
        out.preset = _train_preset(sweep, source, data_root, cache_dir, local_root / f"{stamp}-preset")
    if mlflow_uri is not None:
        _log_and_register(
            out,
            prepared,
            uri=mlflow_uri,
            registered_name=registered_name or registered_model_name(base.task),
            experiment=experiment or experiment_name(base.task),
            stamp=stamp,
        )
    out.wall_time_s = (_dt.datetime.now() - t0).total_seconds()
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return out
