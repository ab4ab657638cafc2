"""A Ray Tune sweep: Optuna TPE proposes, ASHA prunes, ``training.engine.fit`` trains.

The dataset is decoded once here, in the driver, and shared with every trial through one
``ray.put``. Single-worker trials run ``fit`` inside the trial process (no TorchTrainer start-up
per trial); ``workers_per_trial > 1`` trials drive a data-parallel ``TorchTrainer`` whose
reports reach Tune through ``TuneReportCallback``. Both run the same ``fit``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray
from optuna.samplers import BaseSampler
from ray import tune
from ray.tune.schedulers import TrialScheduler

from training.config import ConfigError, TrainConfig
from training.cv import CVData, prepare_cv_data
from training.data.check import check_before_training
from training.engine import PreparedData, prepare_data
from training.features import RayFeatureStore
from training.models import check_pretrained_offline
from training.ray_session import default_storage, init_ray, torch_threads
from tuning._progress import ProgressPrinter
from tuning._tune_budget import BudgetStopper, DeadlineOptunaSearch, LedgerCallback
from tuning._tune_logs import result_loggers
from tuning.budget import Ledger, start_ledger
from tuning.results import STUDY_FILE, STUDY_NAME, Sweep, SweepMeta
from tuning.space import SearchSpace, load_points, load_space
from tuning.space._load import SHARED_REASON
from tuning.storage import (
    DATA_CHECK,
    SWEEP_META,
    SWEEP_SPACE,
    is_remote,
    read_text,
    resolve_storage,
    sweep_uri,
    write_text,
)
from tuning.strategies import SAMPLERS, SCHEDULERS

__all__ = [
    "SweepOptions",
    "SweepResult",
    "default_storage",
    "init_ray",
    "run_sweep",
]

log = logging.getLogger("poketune")
# ``default_storage`` and ``init_ray`` live in training.ray_session (train and retrain use
# them too); they stay importable from here


@dataclass
class SweepOptions:
    space: str
    data: str
    samples: int | None = None  # None: as many as the time budget allows
    name: str | None = None
    storage: str = field(default_factory=default_storage)
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1
    time_budget_s: float | None = None
    seed: int = 0
    resume: bool = False
    verbose: bool = False
    address: str | None = None
    max_failures: int = 2
    cache_dir: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    search: str | None = None  # a tuning.strategies.SAMPLERS name; None: the space's, else tpe
    scheduler: str | None = None  # a SCHEDULERS name; None: the space's, else asha
    #: earlier sweeps (same task, same storage) whose finished trials the searcher starts from
    warm_start: list[str] = field(default_factory=list)
    #: a YAML file of configs to evaluate first, before the preset (tuning/space/_points.py)
    enqueue: str | None = None
    #: rewrite the HTML report as trials finish, and write it (with PNGs) when the sweep ends
    report: bool = False
    report_dir: str | None = None  # None: tuning.report.default_report_dir
    #: K-fold cross-validated trials (``--cv K``); None: the space's ``cv:``, else one split
    cv: int | None = None


@dataclass
class SweepResult:
    """The best trial by the space's own ``metric`` and ``mode`` (``val_f1``/max by default)."""

    name: str
    path: str
    metric: str
    mode: str
    best_trial_id: str | None
    best_config: dict[str, Any]
    #: the best trial's best ``metric`` over its epochs (None when no trial reported it)
    best_metric: float | None
    best_checkpoint: str | None
    wall_time_s: float
    trials: int = 0  # trials started, the preset's included
    budget_s: float | None = None
    budget_stopped: list[str] = field(default_factory=list)
    preset_trial_id: str | None = None
    preset_metric: float | None = None  # the preset trial's best metric, same validation split
    warm_start: list[str] = field(default_factory=list)  # what --warm-start gave the searcher
    report: Any = None  # the tuning.report.Report written at the end (with opts.report)


def _check_shared_keys(space: SearchSpace) -> None:
    """No ``data.*`` key and no ``seed`` may be searched: the driver decodes, splits and
    normalises the data once and seeds every trial with one value.

    ``load_space`` already refuses them (with the file and line); this guards spaces built
    in code.
    """
    for key in space.params:
        if key.startswith("data.") or key == "seed":
            raise ConfigError(
                f"{space.path or '<search space>'}: params.{key} cannot be searched: "
                f"{SHARED_REASON}; fix it under `fixed:` instead"
            )


class _Sampler:
    """OptunaSearch's define-by-run function: the space's params plus sweep-level constants."""

    def __init__(self, space: SearchSpace, constants: dict[str, Any]) -> None:
        self.space = space
        self.constants = constants

    def __call__(self, trial: Any) -> dict[str, Any]:
        return {**self.space.define_by_run(trial), **self.constants}


def _trial_config(space: SearchSpace, config: dict[str, Any]) -> TrainConfig:
    # Tune's config is the whole flat config: sampled values, fixed ones and sweep constants
    return space.trial_config(config)


def _single_worker_trial(
    config: dict[str, Any], *, space: SearchSpace, data: Any, features: Any = None
) -> None:
    from training.cv import CVData, fit_cv
    from training.engine import fit
    from training.ray_worker import RayReporter

    cfg = _trial_config(space, config)
    shared = ray.get(data[0])
    # the trial's id: a checkpoint of another trial's (PBT's exploit) is recorded as lineage;
    # a cost objective: the model's cost (its architecture's, so measured before training)
    # goes with every epoch, so the searcher sees it whenever the trial ends
    reporter = RayReporter(
        tune.report, tune.get_checkpoint, trial_id=tune.get_context().get_trial_id(),
        extra=_trial_cost(cfg, shared) if space.cost_objectives else {},
    )  # fmt: skip
    if isinstance(shared, CVData):  # --cv K: K folds in lockstep, reported as their mean
        fit_cv(cfg, shared, reporter, features=features)
    else:
        fit(cfg, shared, reporter, features=features)


def _trial_cost(cfg: TrainConfig, shared: Any) -> dict[str, float]:
    """The trial's model cost by :data:`training.cost.LATENCY_PROTOCOL`."""
    from training.checkpoint import build_model_for
    from training.cost import measure_cost

    data = shared.data if hasattr(shared, "folds") else shared
    model = build_model_for(cfg.replace(**{"model.pretrained": False, "model.weights_path": None}), data.num_classes)
    return measure_cost(model, tuple(data.x_train.shape[1:]), eval_batch=cfg.eval_batch_size).metrics()


def _torch_trainer_trial(
    config: dict[str, Any],
    *,
    space: SearchSpace,
    data: Any,
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    storage: str,
    sweep_name: str,
) -> None:
    from ray.tune.integration.ray_train import TuneReportCallback

    from training.ray_worker import run_torch_trainer

    cfg = _trial_config(space, config)
    trial_id = tune.get_context().get_trial_id()
    # a stable run name per trial: a retried trial's TorchTrainer resumes that run's checkpoint
    run_torch_trainer(
        cfg,
        data[0],
        storage_path=f"{storage.rstrip('/')}/{sweep_name}/train_runs",
        name=trial_id,
        workers=workers,
        use_gpu=gpus_per_worker > 0,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker or None,
        max_failures=0,
        callbacks=[TuneReportCallback()],
        echo=False,
    )


def _concurrency(opts: SweepOptions, per_trial_cpu: float, per_trial_gpu: float) -> int | None:
    if opts.max_concurrent:
        return opts.max_concurrent
    if opts.address:
        # an autoscaling cluster may have no workers yet: let pending trials make it grow
        return None
    return _default_concurrency(per_trial_cpu, per_trial_gpu)


def _check_fits(opts: SweepOptions, per_trial_cpu: float, per_trial_gpu: float) -> None:
    """On a fixed-size (local) Ray, a trial bigger than the whole machine would wait forever."""
    if opts.address:
        return  # an autoscaler may add the nodes
    res = ray.cluster_resources()
    have_cpu, have_gpu = res.get("CPU", 0.0), res.get("GPU", 0.0)
    if per_trial_cpu > have_cpu + 1e-9 or per_trial_gpu > have_gpu + 1e-9:
        raise ConfigError(
            f"one trial needs {per_trial_cpu:g} CPU / {per_trial_gpu:g} GPU "
            f"(--workers-per-trial {opts.workers_per_trial} × --cpus-per-trial "
            f"{opts.cpus_per_trial:g} / --gpus-per-trial {opts.gpus_per_trial:g}) but this Ray "
            f"has {have_cpu:g} CPU / {have_gpu:g} GPU; lower them (fractions are fine)"
        )


def _default_concurrency(per_trial_cpu: float, per_trial_gpu: float) -> int:
    res = ray.cluster_resources()
    limits = [int(res.get("CPU", 1) // per_trial_cpu)] if per_trial_cpu > 0 else []
    if per_trial_gpu > 0:
        limits.append(int(res.get("GPU", 0) // per_trial_gpu))
    return max(1, min(limits) if limits else 1)


def _check_weights(space: SearchSpace, base: TrainConfig) -> None:
    """Every backbone the space can pick, with pretrained weights available offline."""

    def options(key: str, fixed: Any) -> list[Any]:
        param = space.params.get(key)
        return [param.decode(v) for v in param.args] if param is not None and param.is_choice else [fixed]

    for name in options("model.name", base.model.name):
        for pretrained in options("model.pretrained", base.model.pretrained):
            model = dataclasses.replace(base.model, name=name, pretrained=bool(pretrained))
            check_pretrained_offline(model, task=base.task)


def run_sweep(opts: SweepOptions) -> SweepResult:
    """Run (or, with ``opts.resume``, continue) a sweep and return its best trial."""
    t0 = _dt.datetime.now()
    _check_counts(opts)
    space = load_space(opts.space)
    _check_shared_keys(space)
    # unknown names fail here, in one line, before any decoding or Ray
    earlier = _earlier_sweeps(opts.warm_start, space, opts.storage)
    if opts.enqueue and opts.resume:
        raise ConfigError("--enqueue starts a sweep with given configs; a resumed sweep already has its first trials")
    enqueued = load_points(opts.enqueue, space) if opts.enqueue else []
    SAMPLERS.get(_strategy(opts.search, space.search, {}, "tpe")[0])
    pbt = not SCHEDULERS.get(_strategy(opts.scheduler, space.scheduler, {}, "asha")[0]).searcher
    if pbt:
        _check_pbt(opts, space)
        if space.enqueue:  # the space is shared with ASHA sweeps: say so, do not refuse
            log.warning("%s: its enqueue: configs are not evaluated under PBT (it samples its population)", opts.space)
    if space.cost_objectives and opts.workers_per_trial > 1:
        raise ConfigError(
            f"{opts.space}: cost objectives ({', '.join(space.cost_objectives)}) are measured by "
            "single-worker trials; use --workers-per-trial 1"
        )
    name = opts.name or f"{Path(opts.space).stem}-{t0:%Y%m%d-%H%M%S}"
    storage = resolve_storage(opts.storage)
    for key in opts.overrides:
        if key in space.params or key == "optim.epochs":
            raise ConfigError(
                f"--set {key}: searched by {opts.space} (or set by its asha.max_epochs); "
                f"fix it in the space instead"
            )
    base_cfg = space.trial_config(dict(opts.overrides))
    _check_weights(space, base_cfg)  # before decoding and Ray: one line, not N trial failures
    cv = _folds(opts, space, sweep_uri(storage, name))
    data_check = check_before_training(opts.data, base_cfg.data, cache_dir=opts.cache_dir)
    shared: PreparedData | CVData
    if cv:
        shared, report = prepare_cv_data(opts.data, base_cfg, cv, cache_dir=opts.cache_dir)
        data = shared.data
        log.info(
            "data: %d images in %d folds (%d validate in each), %d classes (%s)",
            len(data.y_train), cv, len(shared.folds[0][1]), data.num_classes,
            "cache hit" if report.from_cache else f"decoded {report.decoded}",
        )  # fmt: skip
    else:
        shared, report = prepare_data(opts.data, base_cfg, cache_dir=opts.cache_dir)
        data = shared
        log.info(
            "data: %d train / %d val images, %d classes (%s)",
            len(data.y_train),
            len(data.y_val),
            data.num_classes,
            "cache hit" if report.from_cache else f"decoded {report.decoded}",
        )
    init_ray(opts.address, verbose=opts.verbose)
    data_ref = [ray.put(shared)]  # wrapped in a list so Tune passes the ref, not a copy per trial
    # frozen-backbone features, computed by the first trial that needs them and shared with
    # the others through the object store (training/features.py)
    features = RayFeatureStore.start(f"poketune-features-{name}-{os.getpid()}")

    workers = max(1, opts.workers_per_trial)
    constants: dict[str, Any] = {
        **opts.overrides,
        "seed": opts.seed,
        # threads follow the CPUs reserved per worker: no oversubscription when trials share a node
        "num_threads": torch_threads(opts.cpus_per_trial),
    }
    if pbt:
        # PBT copies the checkpoint a trial last reported: one per epoch, or a trial would
        # take an older state than the score it was ranked by
        constants["checkpoint_every_s"] = 0
    if workers == 1:
        trainable: Any = tune.with_resources(
            functools.partial(_single_worker_trial, space=space, data=data_ref, features=features),
            {"CPU": opts.cpus_per_trial, "GPU": opts.gpus_per_trial},
        )
        per_cpu, per_gpu = opts.cpus_per_trial, opts.gpus_per_trial
    else:
        # the trial only drives the TorchTrainer: it must hold (almost) no CPU itself or, on
        # a small node, it and its own workers wait on each other forever
        trainable = tune.with_resources(
            functools.partial(
                _torch_trainer_trial,
                space=space,
                data=data_ref,
                workers=workers,
                cpus_per_worker=opts.cpus_per_trial,
                gpus_per_worker=opts.gpus_per_trial,
                storage=storage,
                sweep_name=name,
            ),
            {"CPU": 0.01},
        )
        per_cpu, per_gpu = opts.cpus_per_trial * workers + 0.01, opts.gpus_per_trial * workers
    _check_fits(opts, per_cpu, per_gpu)
    for key in constants:
        if key in space.params:
            raise ConfigError(f"{space.path}: params.{key} is set by the sweep itself")

    path = sweep_uri(storage, name)
    progress = ProgressPrinter(space=space, samples=opts.samples, max_epochs=space.max_epochs)
    if opts.resume:
        if not tune.Tuner.can_restore(path):
            raise FileNotFoundError(f"no sweep to resume at {path}")
        ledger = Ledger.read(path)
        budget = opts.time_budget_s or ledger.budget_s
        ledger.budget_s, ledger.deadline = budget, time.time() + budget if budget else None
        ledger.finished = None  # running again
        start_ledger(path, ledger)
        if is_remote(path):  # the restored searcher writes on in the driver's local journal
            _journal_file(path).parent.mkdir(parents=True, exist_ok=True)
            _journal_file(path).write_text(read_text(f"{path}/{STUDY_FILE}"))
        tuner = tune.Tuner.restore(
            path, trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        if tune.Tuner.can_restore(path):
            raise FileExistsError(
                f"a sweep named {name!r} already exists at {path}; pass --resume to continue "
                f"it or choose another --name"
            )
        write_text(f"{path}/{SWEEP_SPACE}", Path(opts.space).read_text())
        journal = _journal_file(path)
        SweepMeta(
            name=name,
            space_file=str(Path(opts.space).resolve()),
            data=str(Path(opts.data).resolve()),
            data_hash=data.source_hash,
            class_names=list(data.class_names),
            task=space.task,
            metric=space.metric,
            mode=space.mode,
            max_epochs=space.max_epochs,
            created=t0.isoformat(timespec="seconds"),
            options={k: v for k, v in asdict(opts).items() if k != "overrides"},
            overrides=dict(opts.overrides),
            constants=constants,
            cv=cv,
        ).write(path)
        if data_check is not None:  # export attaches it to the sweep's MLflow run
            write_text(f"{path}/{DATA_CHECK}", json.dumps(data_check.to_json(), indent=2))
        # the preset first: the search starts from a known-good point, and the sweep's end
        # can say what tuning bought over it on the same validation split (PBT samples its
        # population itself: no preset trial)
        point = {} if pbt else space.preset_point()[0]
        start_ledger(path, Ledger(
            budget_s=opts.time_budget_s,
            deadline=time.time() + opts.time_budget_s if opts.time_budget_s else None,
            started=time.time(),
            preset_point=point,
        ))
        searcher: DeadlineOptunaSearch | None = None
        param_space: dict[str, Any] | None = None
        warm_lines: list[str] = []
        if pbt:  # Ray refuses a searcher beside PBT: Tune samples the space itself
            param_space = {**space.base_config(), **{k: p.tune_domain() for k, p in space.params.items()}, **constants}
        else:
            searcher = DeadlineOptunaSearch(
                space=_Sampler(space, constants),
                # several objectives: Optuna searches their Pareto front (ASHA still prunes
                # on the first, TuneConfig's metric)
                metric=[m for m, _ in space.objectives] if space.objectives else space.metric,
                mode=[m for _, m in space.objectives] if space.objectives else space.mode,
                sampler=_sampler(opts, space),
                # the user's configs, the preset, then the space's own known-good points
                points_to_evaluate=[*enqueued, point, *space.enqueue],
                sweep_uri=path,
                journal=journal,
                study_name=STUDY_NAME,
                upload_journal=is_remote(path),
            )
            warm_lines = _warm_start(searcher, space, earlier)
        for line in warm_lines:
            log.info(line)
        scheduler = _scheduler(opts, space)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=space.metric,
                mode=space.mode,
                search_alg=searcher,
                scheduler=scheduler,
                # -1: until the searcher stops proposing (the budget's deadline); PBT: its
                # population
                num_samples=_population(opts, space) if pbt else opts.samples or -1,
                max_concurrent_trials=_concurrency(opts, per_cpu, per_gpu),
                trial_dirname_creator=_trial_dirname,
                # a fresh process per trial costs seconds, so single-worker trials reuse
                # theirs. A TorchTrainer trial's thread outlives Tune's 2 s reset wait while
                # its workers shut down; Tune then fails the reuse and the sweep hangs
                # (measured by bench/trial_overhead.py), and ~30 s of TorchTrainer start-up
                # dwarfs what reuse would save anyway.
                reuse_actors=workers == 1,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                # PBT: a bottom trial copies a top trial's checkpoint of a few epochs ago, which
                # one kept checkpoint would already have deleted (Ray warns below 3)
                checkpoint_config=tune.CheckpointConfig(num_to_keep=PBT_KEEP if pbt else 1),
                failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                callbacks=[progress, LedgerCallback(path), *_report_callback(opts, name, storage),
                           *result_loggers()],
                stop=BudgetStopper(path),
                verbose=1 if opts.verbose else 0,
            ),
        )
    try:
        grid = tuner.fit()
    finally:
        features.stop()
    wall = (_dt.datetime.now() - t0).total_seconds()
    ledger = Ledger.read(path)
    ledger.finished = time.time()
    ledger.write(path)
    final_report = _final_report(opts, name, storage)
    out = SweepResult(
        name, path, space.metric, space.mode, None, {}, None, None, wall,
        trials=len(grid), budget_s=ledger.budget_s, budget_stopped=list(ledger.budget_stopped),
        preset_trial_id=ledger.preset_trial,
        warm_start=[] if opts.resume else warm_lines, report=final_report,
    )
    for result in (grid[i] for i in range(len(grid))):
        if ledger.preset_trial and (result.metrics or {}).get("trial_id") == ledger.preset_trial:
            out.preset_metric = _best_metric(result, space)
    try:
        best = grid.get_best_result(metric=space.metric, mode=space.mode, scope="all")
    except RuntimeError:  # no trial reported the metric
        return out
    metrics, config = best.metrics or {}, best.config or {}
    out.best_trial_id = metrics.get("trial_id")
    out.best_config = space.active_values(config)
    out.best_metric = _best_metric(best, space)
    out.best_checkpoint = best.checkpoint.path if best.checkpoint else metrics.get("checkpoint_path")
    return out


def _report_callback(opts: SweepOptions, name: str, storage: str) -> list[tune.Callback]:
    if not opts.report:
        return []
    from tuning.report._live import ReportCallback

    return [ReportCallback(name, storage, opts.report_dir)]


def _final_report(opts: SweepOptions, name: str, storage: str) -> Any:
    """The sweep's report as it ended, PNGs included (``--report``); a failure is a warning:
    the sweep's results are already safe on disk."""
    if not opts.report:
        return None
    from tuning.report import build_report

    try:
        return build_report(Sweep.open(name, storage), Path(opts.report_dir) if opts.report_dir else None)
    except Exception as exc:  # the sweep is done and recorded; only its page is missing
        log.warning("the sweep's report was not written: %s: %s", type(exc).__name__, exc)
        return None


#: checkpoints kept per trial under PBT (see run_sweep)
PBT_KEEP = 4
#: PBT's population without ``--samples`` or ``population:``
PBT_POPULATION = 4


def _check_pbt(opts: SweepOptions, space: SearchSpace) -> None:
    """What population-based training cannot be combined with, in one line each."""
    clash = [
        (opts.search or space.search, "--search / search: (Ray refuses a searcher beside PopulationBasedTraining)"),
        (opts.enqueue, "--enqueue (given configs are Optuna's first asks; PBT samples its population)"),
        (opts.warm_start, "--warm-start (earlier trials reach Optuna's searcher, which PBT does not use)"),
        (opts.workers_per_trial > 1, "--workers-per-trial > 1 (a TorchTrainer trial resumes its own run, not the checkpoint PBT hands it)"),
    ]  # fmt: skip
    for given, what in clash:
        if given:
            raise ConfigError(f"--scheduler pbt cannot be combined with {what}")


def _population(opts: SweepOptions, space: SearchSpace) -> int:
    options = _strategy(opts.scheduler, space.scheduler, space.scheduler_options, "asha")[1]
    return int(options.get("population") or opts.samples or PBT_POPULATION)


def _folds(opts: SweepOptions, space: SearchSpace, path: str) -> int | None:
    """The sweep's fold count: ``--cv``, else the space's ``cv:``; a resumed sweep keeps the
    one it started with (its trials' checkpoints hold that many folds)."""
    cv = opts.cv if opts.cv is not None else space.cv
    if opts.resume:
        try:
            recorded = json.loads(read_text(f"{path}/{SWEEP_META}")).get("cv")
        except (OSError, ValueError):
            recorded = cv  # run_sweep says there is no sweep to resume, below
        if opts.cv is not None and opts.cv != recorded:
            raise ConfigError(f"--cv {opts.cv}: sweep {path} was started with --cv {recorded}")
        cv = recorded
    if cv is not None and cv < 2:
        raise ConfigError(f"--cv must be >= 2 folds, got {cv}")
    if cv and opts.workers_per_trial > 1:
        raise ConfigError(
            f"--cv {cv} with --workers-per-trial {opts.workers_per_trial}: a cross-validated trial "
            "trains its folds in one process; use --workers-per-trial 1"
        )
    return cv


def _check_counts(opts: SweepOptions) -> None:
    """A sweep needs a trial count, a time budget, or both; and resources that can run."""
    if opts.samples is None and opts.time_budget_s is None and not opts.resume:
        raise ConfigError("give --samples N, --time-budget DURATION (e.g. 20m), or both")
    if opts.samples is not None and opts.samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {opts.samples}")
    if opts.time_budget_s is not None and opts.time_budget_s <= 0:
        raise ConfigError(f"--time-budget must be more than 0 seconds, got {opts.time_budget_s}")
    if opts.workers_per_trial > 1 and 0 < opts.gpus_per_trial < 1:
        # Ray would pack the trial's ranks onto one GPU (every GPU node type in cluster.yaml
        # has one), and NCCL refuses two ranks on a device ("Duplicate GPU detected")
        raise ConfigError(
            f"--workers-per-trial {opts.workers_per_trial} with --gpus-per-trial "
            f"{opts.gpus_per_trial}: data-parallel ranks need a whole GPU each (use "
            "--gpus-per-trial 1, or one worker per trial to share GPUs)"
        )


def _best_metric(best: Any, space: SearchSpace) -> float | None:
    """The best value of ``space.metric`` over the epochs ``best`` (a Tune Result) reported."""
    df = best.metrics_dataframe
    if df is None or space.metric not in df:
        return None
    col = df[space.metric]
    return float(col.max() if space.mode == "max" else col.min())


def _earlier_sweeps(names: list[str], space: SearchSpace, storage: str) -> list[Sweep]:
    """The ``--warm-start`` sweeps, opened once (one sync each), of this space's task and metric."""
    out = []
    for name in names:
        earlier = Sweep.open(name, storage)
        if earlier.meta.task != space.task or earlier.space.metric != space.metric or earlier.space.objectives != space.objectives:
            raise ConfigError(
                f"--warm-start {name}: a {earlier.meta.task} sweep on {earlier.space.metric}; this "
                f"space is {space.task} on {space.metric}"
            )
        out.append(earlier)
    return out


def _warm_start(searcher: DeadlineOptunaSearch, space: SearchSpace, earlier: list[Sweep]) -> list[str]:
    """Add the finished trials of the ``earlier`` sweeps to the new study, as Optuna trials with
    their values: the searcher models them before it proposes anything. A parameter this space
    does not search, or a value outside its range, is dropped from that trial (a missing
    parameter is what Optuna sees for an inactive conditional); one line per sweep says what
    was kept."""
    import optuna

    lines: list[str] = []
    if not earlier:
        return lines
    study = optuna.load_study(study_name=STUDY_NAME, storage=searcher.journal_storage)
    for sweep in earlier:
        kept: list[optuna.trial.FrozenTrial] = []
        dropped: dict[str, int] = {}
        for t in sweep.study().get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            params, dists = {}, {}
            for key, value in t.params.items():
                dist = t.distributions[key]
                mine = space.params.get(key)
                if mine is None or not _fits(mine, value):
                    dropped[key] = dropped.get(key, 0) + 1
                    continue
                params[key], dists[key] = value, dist
            if params:
                kept.append(optuna.trial.create_trial(params=params, distributions=dists, values=t.values))
        study.add_trials(kept)
        note = f"warm start: {len(kept)} finished trials of sweep {sweep.name!r}"
        if dropped:
            note += "; dropped " + ", ".join(f"{k} ({n} trials)" for k, n in sorted(dropped.items()))
        lines.append(note)
    return lines


def _fits(param: Any, value: Any) -> bool:
    """Whether an earlier trial's (Optuna-stored) value is one this space's parameter can take."""
    if param.is_choice:
        return value in param.labels()
    low, high = param.args
    try:
        return bool(low <= value <= high)
    except TypeError:
        return False


def _strategy(flag: str | None, in_space: str | None, options: dict[str, Any], default: str) -> tuple[str, dict[str, Any]]:
    """The command line's choice, else the space's (with the space's options), else the default."""
    if flag is not None and flag != in_space:
        return flag, {}
    return in_space or default, options


def _sampler(opts: SweepOptions, space: SearchSpace) -> BaseSampler:
    name, options = _strategy(opts.search, space.search, space.search_options, "tpe")
    return SAMPLERS.get(name).build(opts.seed, opts.samples, **options)  # type: ignore[no-any-return]


def _scheduler(opts: SweepOptions, space: SearchSpace) -> TrialScheduler:
    name, options = _strategy(opts.scheduler, space.scheduler, space.scheduler_options, "asha")
    return SCHEDULERS.get(name).build(space, **options)  # type: ignore[no-any-return]


def _journal_file(path: str) -> Path:
    """Where the searcher writes its Optuna journal: in the sweep folder; for remote storage
    in a local file of the driver's (uploaded next to Tune's searcher state each time Tune
    saves it), apart from the copies ``Sweep.open`` syncs, so a reader never overwrites it."""
    if not is_remote(path):
        return Path(path) / STUDY_FILE
    key = hashlib.sha1(path.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "poketune-journal" / key / STUDY_FILE


def _trial_dirname(trial: Any) -> str:
    return str(trial.trial_id)


def remove_sweep(storage: str, name: str) -> None:
    """Delete a local sweep folder (tests and benchmarks)."""
    shutil.rmtree(os.path.join(resolve_storage(storage), name), ignore_errors=True)

