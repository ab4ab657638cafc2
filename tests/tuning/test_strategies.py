"""Search strategies by name: every sampler and scheduler runs a tiny sweep end to end, from the
command line or the space; names and options are checked where they are written."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from asha_check import make_colour_data
from optuna import samplers
from ray.tune import schedulers

from tuning import results
from tuning.cli import main
from tuning.space import SpaceError, load_points, load_space, parse_space
from tuning.strategies import SAMPLERS, SCHEDULERS
from tuning.sweep import SweepOptions, _sampler, _scheduler, run_sweep

SPACE = """
task: task2
asha: {max_epochs: 2, grace_period: 1, reduction_factor: 2}
fixed: {data.image_size: 16, model.channels: 4, model.stages: 2}
params:
  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
  model.dropout: {uniform: [0.0, 0.5]}
  loss.imbalance: {choice: [none, focal]}
"""
#: the object each named strategy builds
OWNERS = {
    "tpe": samplers.TPESampler, "random": samplers.RandomSampler, "cmaes": samplers.CmaEsSampler,
    "qmc": samplers.QMCSampler, "gp": samplers.GPSampler, "nsga2": samplers.NSGAIISampler, "asha": schedulers.ASHAScheduler,
    "median": schedulers.MedianStoppingRule,
    "fifo": schedulers.FIFOScheduler, "pbt": schedulers.PopulationBasedTraining,
}  # fmt: skip


def test_every_declared_option_is_a_keyword_of_what_it_configures() -> None:
    for registry in (SAMPLERS, SCHEDULERS):
        assert set(registry.names()) <= set(OWNERS)
        for name in registry.names():
            params = inspect.signature(OWNERS[name]).parameters
            strategy = registry.get(name)
            assert [o for o in strategy.options if o not in params and o not in strategy.own] == [], name


def _space(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(extra + SPACE)
    return path


def test_names_and_options_are_checked_at_load_with_file_and_line(tmp_path: Path) -> None:
    path = _space(tmp_path, "search: cmaz\n")
    valid = ", ".join(SAMPLERS.names())
    with pytest.raises(SpaceError, match=rf"^{re.escape(f'{path}:1: search: unknown search algorithm')} 'cmaz'; valid: {valid}$"):
        load_space(path)
    path = _space(tmp_path, "scheduler: {name: median, grace: 2}\n")
    with pytest.raises(SpaceError, match=r":1: scheduler.grace: scheduler 'median' has no option 'grace'; its options: grace_period"):
        load_space(path)
    space = load_space(_space(tmp_path, "search: {name: tpe, multivariate: true}\nscheduler: {name: median, min_samples_required: 2}\n"))
    assert (space.search, space.search_options) == ("tpe", {"multivariate": True})
    sched = _scheduler(SweepOptions(space="", data=""), space)
    assert isinstance(sched, schedulers.MedianStoppingRule) and sched._min_samples_required == 2
    # the command line wins over the space, without the space's options (they were for another)
    assert isinstance(_scheduler(SweepOptions(space="", data="", scheduler="fifo"), space), schedulers.FIFOScheduler)
    assert isinstance(_sampler(SweepOptions(space="", data="", search="qmc"), space), samplers.QMCSampler)


def test_asha_can_judge_a_rung_by_the_best_epoch_so_far(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from tuning._tune_asha import PoketuneASHA

    path = _space(tmp_path, "scheduler: {name: asha, prune_on: sometimes}\n")
    with pytest.raises(SpaceError, match=r":1: scheduler.prune_on: scheduler 'asha': prune_on 'sometimes'; valid: last, best$"):
        load_space(path)
    space = load_space(_space(tmp_path, "scheduler: {name: asha, prune_on: best}\n"))
    built = _scheduler(SweepOptions(space="", data=""), space)
    assert isinstance(built, PoketuneASHA) and built.best_so_far and not built.spared

    def decisions(scheduler: schedulers.ASHAScheduler) -> list[str]:
        # a: 0.30 then 0.45 at the rung (epoch 2); b: 0.60 then a dip to 0.20 at the rung
        a, b = SimpleNamespace(trial_id="a"), SimpleNamespace(trial_id="b")
        for t in (a, b):
            scheduler.on_trial_add(None, t)
        out = []
        for trial, epoch, f1 in ((a, 1, 0.30), (a, 2, 0.45), (b, 1, 0.60), (b, 2, 0.20)):
            out.append(scheduler.on_trial_result(None, trial, {"epoch": epoch, "val_f1": f1}))
        return out

    kw = {"time_attr": "epoch", "metric": "val_f1", "mode": "max", "max_t": 8, "grace_period": 2, "reduction_factor": 2}
    # Tune's ASHA stops b on its dip (0.20 below the rung's median); judged by its best so
    # far (0.60) b goes on
    assert decisions(schedulers.ASHAScheduler(**kw))[-1] == "STOP"
    assert decisions(PoketuneASHA(best_so_far=True, **kw)) == ["CONTINUE"] * 4


def test_asha_can_spare_the_spaces_enqueued_configs_at_its_rungs(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from tuning._tune_asha import PoketuneASHA

    path = _space(tmp_path, "scheduler: {name: asha, spare: all}\n")
    with pytest.raises(SpaceError, match=r":1: scheduler.spare: scheduler 'asha': spare 'all'; valid: none, enqueued$"):
        load_space(path)
    space = load_space(_space(tmp_path, "scheduler: {name: asha, spare: enqueued}\nenqueue: {optim.lr: 2.0e-3, model.dropout: 0.1}\n"))
    built = _scheduler(SweepOptions(space="", data=""), space)
    assert isinstance(built, PoketuneASHA) and not built.best_so_far
    assert built.spared == space.enqueue  # Optuna's terms, like the preset point the ledger finds

    # the preset trial leads at the rung (epoch 2); a stranger and the enqueued config come in
    # below it with the same score: the stranger stops, the enqueued config goes on to the
    # top rung (epoch 4) and ends there like any trial
    base = space.base_config()
    leader = SimpleNamespace(trial_id="p", config={**base, "optim.lr": 1.0e-3, "model.dropout": 0.3})
    stranger = SimpleNamespace(trial_id="s", config={**base, "optim.lr": 2.0e-3, "model.dropout": 0.2})
    known = SimpleNamespace(trial_id="k", config={**base, "optim.lr": 2.0e-3 * (1 + 1e-12), "model.dropout": 0.1})
    kw = {"time_attr": "epoch", "metric": "val_f1", "mode": "max", "max_t": 4, "grace_period": 2, "reduction_factor": 2}
    for spared, known_at_the_rung in (([], "STOP"), (built.spared, "CONTINUE")):
        scheduler = PoketuneASHA(spared=spared, **kw)
        for t in (leader, stranger, known):
            scheduler.on_trial_add(None, t)
        assert scheduler.on_trial_result(None, leader, {"epoch": 2, "val_f1": 0.6}) == "CONTINUE"
        assert scheduler.on_trial_result(None, stranger, {"epoch": 2, "val_f1": 0.2}) == "STOP"
        assert scheduler.on_trial_result(None, known, {"epoch": 2, "val_f1": 0.2}) == known_at_the_rung
    assert scheduler.on_trial_result(None, known, {"epoch": 4, "val_f1": 0.7}) == "STOP"  # max_t


def test_a_trial_evaluates_a_point_by_label_and_to_rounding() -> None:
    from tuning.space import evaluates

    # the point holds Optuna's labels; Tune's trial config may hold the decoded choice
    point = {"model.hidden": "[256,128]", "optim.lr": 2.0e-3, "loss.imbalance": "focal"}
    config = {"model.hidden": [256, 128], "optim.lr": 2.0e-3 * (1 + 1e-12), "loss.imbalance": "focal", "seed": 0}
    assert evaluates(config, point)
    assert evaluates({**config, "model.hidden": "[256,128]"}, point)
    assert not evaluates({**config, "model.hidden": [256]}, point)
    assert not evaluates({**config, "optim.lr": 2.1e-3}, point)
    assert not evaluates({**config, "loss.imbalance": "none"}, point)
    assert not evaluates({k: v for k, v in config.items() if k != "optim.lr"}, point)


def test_an_unknown_name_on_the_command_line_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["tune", str(_space(tmp_path)), "--data", str(tmp_path), "--samples", "2", "--scheduler", "hyperband"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--scheduler: invalid choice: 'hyperband'" in err and "asha" in err


@pytest.mark.parametrize(
    ("search", "scheduler"), [("cmaes", "asha"), ("qmc", "median"), ("gp", "asha"), ("random", "fifo")]
)
def test_each_sampler_and_scheduler_runs_a_sweep(
    tmp_path: Path, ray_session: None, search: str, scheduler: str
) -> None:
    data = make_colour_data(tmp_path / "colours", per_class=8)
    storage = str(tmp_path / "runs")
    opts = SweepOptions(space=str(_space(tmp_path)), data=str(data), samples=4, name="s", storage=storage,
                        max_concurrent=2, search=search, scheduler=scheduler)  # fmt: skip
    result = run_sweep(opts)
    assert isinstance(_sampler(SweepOptions(space="", data="", search=search), load_space(_space(tmp_path))), OWNERS[search])
    sweep = results.Sweep.open("s", storage)
    frame = sweep.trials()
    assert len(frame) == 4 and result.best_trial_id in set(frame["trial_id"])
    assert sweep.meta.options["search"] == search and sweep.meta.options["scheduler"] == scheduler
    assert set(frame["status"]) <= {"completed", "stopped_asha"}
    if scheduler == "fifo":  # nothing stops a trial early
        assert (frame["epochs"] == 2).all()
    # Optuna heard every trial's result
    assert sum(t.state.name == "COMPLETE" for t in sweep.study().trials) == 4


def test_warm_start_gives_the_searcher_the_earlier_trials(tmp_path: Path, ray_session: None) -> None:
    data = make_colour_data(tmp_path / "colours", per_class=8)
    storage = str(tmp_path / "runs")
    run_sweep(SweepOptions(space=str(_space(tmp_path)), data=str(data), samples=3, name="first", storage=storage))
    first = results.Sweep.open("first", storage).study()
    done = [t for t in first.trials if t.state.name == "COMPLETE"]
    assert len(done) == 3
    # the new space drops model.dropout, narrows optim.lr, adds optim.weight_decay
    narrow = min(t.params["optim.lr"] for t in done)
    second_space = tmp_path / "second.yaml"
    second_space.write_text(
        SPACE.replace("  model.dropout: {uniform: [0.0, 0.5]}\n", "  optim.weight_decay: {choice: [0.0, 1.0e-4]}\n")
        .replace("loguniform: [1.0e-4, 1.0e-2]", f"loguniform: [1.0e-4, {narrow}]")
    )
    result = run_sweep(SweepOptions(space=str(second_space), data=str(data), samples=2, name="second",
                                    storage=storage, warm_start=["first"]))  # fmt: skip
    assert result.warm_start == [
        "warm start: 3 finished trials of sweep 'first'; dropped model.dropout (3 trials), "
        f"optim.lr ({sum(t.params['optim.lr'] > narrow for t in done)} trials)"
    ]
    study = results.Sweep.open("second", storage).study()
    warm = study.trials[1:4]  # after the preset, enqueued when the searcher started
    assert all(t.state.name == "COMPLETE" for t in warm)
    # the earlier trials, with their values and the parameters this space searches
    assert sorted(t.value for t in warm) == pytest.approx(sorted(t.value for t in done))
    assert all("model.dropout" not in t.params for t in warm)
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 3 + 2

    with pytest.raises(results.SweepNotFoundError, match="nope"):
        run_sweep(SweepOptions(space=str(second_space), data=str(data), samples=1, name="third",
                               storage=storage, warm_start=["nope"]))  # fmt: skip


ENQUEUE = """
- optim.lr: 3.0e-3
  loss.imbalance: focal
- optim: {lr: 1.0e-4}
  model.dropout: 0.4
"""


def test_enqueued_configs_are_checked_with_file_and_line(tmp_path: Path) -> None:
    space = load_space(_space(tmp_path))
    preset, _ = space.preset_point()
    good = tmp_path / "good.yaml"
    good.write_text(ENQUEUE)
    first, second = load_points(good, space)
    # what the file says, and the preset's value for what it leaves out
    assert first == {**preset, "optim.lr": 3.0e-3, "loss.imbalance": "focal"}
    assert second == {**preset, "optim.lr": 1.0e-4, "model.dropout": 0.4}
    bad = tmp_path / "bad.yaml"
    for text, line, message in [
        ("optim.lr: 3.0e-3\nmodel.stages: 3\n", 2, "model.stages: not a searched parameter of this space; it searches optim.lr, model.dropout, loss.imbalance"),
        ("- optim.lr: 1.0\n", 1, "[0].optim.lr: 1.0 is outside the searched range [0.0001, 0.01]"),
        ("loss.imbalance: sampler\n", 1, "loss.imbalance: 'sampler' is not one of the choices ['none', 'focal']"),
        ("[]\n", None, "a config to enqueue is a mapping"),
    ]:
        bad.write_text(text)
        where = f"{bad}:{line}: " if line else f"{bad}: "
        with pytest.raises(SpaceError, match="^" + re.escape(where + message)):
            load_points(bad, space)


def test_a_space_enqueues_its_own_configs_checked_with_file_and_line(tmp_path: Path) -> None:
    path = _space(tmp_path, "enqueue:\n  - {optim.lr: 2.0e-3, model.dropout: 0.1}\n")
    space = load_space(path)
    preset, _ = space.preset_point()
    assert space.enqueue == [{**preset, "optim.lr": 2.0e-3, "model.dropout": 0.1}]
    # stored with a sweep and read back (resume, export): the same points
    assert parse_space(space.to_dict()).enqueue == space.enqueue
    for extra, line, message in [
        ("enqueue:\n  - {model.stages: 3}\n", 2, "enqueue[0].model.stages: not a searched parameter of this space"),
        ("enqueue:\n  - optim.lr: 2.0e-3\n  - loss.imbalance: sampler\n", 3, "enqueue[1].loss.imbalance: 'sampler' is not one of the choices"),
        ("enqueue: []\n", 1, "enqueue: a config to enqueue is a mapping"),
    ]:
        path = _space(tmp_path, extra)
        with pytest.raises(SpaceError, match="^" + re.escape(f"{path}:{line}: {message}")):
            load_space(path)


def test_enqueued_configs_run_first_then_the_preset(tmp_path: Path, ray_session: None) -> None:
    data = make_colour_data(tmp_path / "colours", per_class=8)
    storage = str(tmp_path / "runs")
    configs = tmp_path / "enqueue.yaml"
    configs.write_text(ENQUEUE)
    # the space's own known-good config comes after the preset
    space_path = _space(tmp_path, "enqueue: {optim.lr: 2.0e-3, model.dropout: 0.1}\n")
    space = load_space(space_path)
    preset, _ = space.preset_point()
    run_sweep(SweepOptions(space=str(space_path), data=str(data), samples=5, name="q", storage=storage,
                           max_concurrent=1, enqueue=str(configs)))  # fmt: skip
    sweep = results.Sweep.open("q", storage)
    study = sweep.study()
    asked = [t.params for t in sorted(study.trials, key=lambda t: t.number)]
    assert asked[0] == {**preset, "optim.lr": 3.0e-3, "loss.imbalance": "focal"}
    assert asked[1] == {**preset, "optim.lr": 1.0e-4, "model.dropout": 0.4}
    assert asked[2] == preset
    assert asked[3] == {**preset, "optim.lr": 2.0e-3, "model.dropout": 0.1}
    # the trials ran them in that order, and the preset trial is still recognised as such
    frame = sweep.trials().sort_values("order")
    assert frame["optim.lr"].tolist()[:4] == pytest.approx([3.0e-3, 1.0e-4, preset["optim.lr"], 2.0e-3])
    assert frame["preset"].tolist()[:4] == [False, False, True, False]
    configs.write_text("optim.lr: 5\n")
    with pytest.raises(SpaceError, match=re.escape("enqueue.yaml:1: optim.lr: 5 is outside")):
        run_sweep(SweepOptions(space=str(_space(tmp_path)), data=str(data), samples=1, name="q2", storage=storage,
                               enqueue=str(configs)))  # fmt: skip
    assert not (Path(storage) / "q2").exists()  # refused before anything was written


PBT_SPACE = """
task: task2
asha: {max_epochs: 6, grace_period: 1, reduction_factor: 2}
scheduler: {name: pbt, perturbation_interval: 1, quantile_fraction: 0.5, resample_probability: 0.0, population: 2, synch: true}
fixed: {data.image_size: 16, model.channels: 4, optim.scheduler: none}
params:
  optim.lr: {loguniform: [1.0e-3, 3.0e-2]}
  model.stages: {int: [2, 3]}
  loss.imbalance: {choice: [none, focal]}
  loss.focal_gamma:
    uniform: [0.5, 3.0]
    when: {loss.imbalance: [focal]}
"""


def test_pbt_exploits_continue_from_the_copied_epoch_with_the_mutated_rate(tmp_path: Path, ray_session: None) -> None:
    import json

    space = tmp_path / "pbt.yaml"
    space.write_text(PBT_SPACE)
    data = make_colour_data(tmp_path / "colours", per_class=8)
    storage = str(tmp_path / "runs")
    run_sweep(SweepOptions(space=str(space), data=str(data), samples=9, name="pbt", storage=storage,
                           max_concurrent=2, seed=1))  # fmt: skip
    sweep = results.Sweep.open("pbt", storage)
    frame = sweep.trials()
    assert len(frame) == 2  # the space's population, not --samples
    hist = sweep.history()
    hops = hist[hist["exploited_from"].notna()]
    assert len(hops) >= 1, "no exploit in 6 epochs of a 2-trial population"
    # every epoch a trial reported is in its history: from epoch 1, one after another, and
    # after each exploit from the copied epoch on, up to the last epoch Tune recorded for it
    # (Ray's result loggers copied the storage's stale result file over the newer local one
    # at each restart, and PBT restarts trials at every exploit and every synch pause)
    for trial in sweep.analysis.trials:
        rows = hist[hist["trial_id"] == str(trial.trial_id)].reset_index(drop=True)
        expected = [1]
        for i in range(1, len(rows)):
            hop = rows.loc[i, "exploited_from"]
            expected.append(int(rows.loc[i, "exploited_epoch"]) + 1 if isinstance(hop, str) else expected[-1] + 1)
        assert rows["epoch"].tolist() == expected, (trial.trial_id, rows[["epoch", "exploited_from"]])
        assert int(rows["epoch"].iloc[-1]) == int(trial.last_result["epoch"])
    # Ray's own record of every exploit (pbt_global.txt): [target tag, clone tag, target
    # iteration, clone iteration, clone config, new config]
    for trial_id, group in hops.groupby("trial_id"):
        # (each trial's pbt_policy file is overwritten by its clone's at every exploit, so the
        # global log is the complete one)
        assert (sweep.path / f"pbt_policy_{trial_id}.txt").is_file()
        policy = [json.loads(line) for line in (sweep.path / "pbt_global.txt").read_text().splitlines()]
        mine = group.sort_values("epoch")
        last = mine.iloc[-1]
        # the first epoch after taking the other trial's state continues from its epoch
        assert int(last["epoch"]) == int(last["exploited_epoch"]) + 1
        assert last["exploited_from"] != trial_id and last["exploited_from"] in set(frame["trial_id"])
        # the exploit Ray recorded with this rate as its new config (a later one, at the last
        # epoch, may have no epoch left to report)
        mine_in_policy = [e for e in policy if e[5]["optim.lr"] == pytest.approx(last["lr"])]
        assert mine_in_policy, (last["lr"], [e[5]["optim.lr"] for e in policy])
        clone_cfg, new_cfg = mine_in_policy[-1][4], mine_in_policy[-1][5]
        # the mutated rate is the one in the optimizer (the restored state had the copied one)
        assert last["lr"] == pytest.approx(new_cfg["optim.lr"]) and last["lr"] != pytest.approx(clone_cfg["optim.lr"])
        assert new_cfg["optim.lr"] / clone_cfg["optim.lr"] == pytest.approx(1.2) or new_cfg["optim.lr"] / clone_cfg[
            "optim.lr"
        ] == pytest.approx(0.8)
        # not mutable: the model's shape is the copied trial's, so its weights load
        assert new_cfg["model.stages"] == clone_cfg["model.stages"]
        row = frame.set_index("trial_id").loc[trial_id]
        assert f"epoch {int(last['epoch'])} ← {last['exploited_from']}@{int(last['exploited_epoch'])}" in row["lineage"]
    # checkpoints kept (PBT_KEEP; Ray may hold one more that a pending exploit refers to)
    for trial_dir in frame["trial_dir"]:
        assert 1 <= len(list(Path(trial_dir).glob("checkpoint_*"))) <= 5


def test_pbt_refuses_what_it_cannot_combine(tmp_path: Path) -> None:
    from training.config import ConfigError
    from tuning.strategies import StrategyError, pbt_mutations

    space = tmp_path / "pbt.yaml"
    space.write_text(PBT_SPACE)
    with pytest.raises(ConfigError, match="cannot be combined with --search"):
        run_sweep(SweepOptions(space=str(space), data=str(tmp_path), samples=2, search="tpe"))
    with pytest.raises(ConfigError, match="cannot be combined with --workers-per-trial"):
        run_sweep(SweepOptions(space=str(space), data=str(tmp_path), samples=2, workers_per_trial=2))
    with pytest.raises(StrategyError, match=r"pbt cannot mutate 'model\.stages'"):
        pbt_mutations(load_space(space), ["model.stages"])
    assert set(pbt_mutations(load_space(space))) == {"optim.lr", "loss.focal_gamma"}


TWO_OBJECTIVES = """
task: task2
objectives: [{metric: val_f1, mode: max}, {metric: latency_ms, mode: min}]
asha: {max_epochs: 2, grace_period: 1, reduction_factor: 2}
scheduler: fifo
fixed: {data.image_size: 16, model.stages: 2}
params:
  model.channels: {choice: [4, 8, 32]}
  optim.lr: {loguniform: [1.0e-3, 3.0e-2]}
"""


def test_two_objectives_give_the_pareto_front_of_finished_trials(
    tmp_path: Path, ray_session: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from training.checkpoint import build_model_for
    from tuning.retrain import retrain

    space = tmp_path / "two.yaml"
    space.write_text(TWO_OBJECTIVES)
    data = make_colour_data(tmp_path / "colours", per_class=8)
    storage = str(tmp_path / "runs")
    run_sweep(SweepOptions(space=str(space), data=str(data), samples=6, name="mo", storage=storage,
                           max_concurrent=2, seed=3))  # fmt: skip
    sweep = results.Sweep.open("mo", storage)
    frame = sweep.trials()
    assert len(frame) == 6 and frame["latency_ms"].gt(0).all()
    # every trial's cost is its model's: the parameter count of the model its config builds
    for row in frame.itertuples():
        model = build_model_for(sweep.trial_config(str(row.trial_id)), 3)
        assert row.params == sum(p.numel() for p in model.parameters())
    # Optuna searched both objectives, with the values the trials reported
    study = sweep.study()
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    by_number = {t.number: t for t in study.trials if t.state.name == "COMPLETE"}
    assert sorted(t.values[1] for t in by_number.values()) == pytest.approx(sorted(frame["latency_ms"]))
    # the front: exactly the finished trials no other finished trial beats on both
    done = frame[frame["epochs"] == 2]
    points = list(zip(done["trial_id"], done["best_val_f1"], done["latency_ms"], strict=True))
    brute = {
        t for t, f1, lat in points
        if not any(f2 >= f1 and l2 <= lat and (f2 > f1 or l2 < lat) for u, f2, l2 in points if u != t)
    }  # fmt: skip
    front = sweep.pareto()
    assert set(front["trial_id"]) == brute and len(brute) >= 1
    capsys.readouterr()  # the sweep's own output
    assert main(["results", "mo", "--storage", storage, "--pareto", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {r["trial_id"] for r in listed} == brute and all(r["driver_latency_ms"] > 0 for r in listed)
    # any point of the front can be registered
    point = str(front.iloc[-1]["trial_id"])
    res = retrain("mo", storage, mlflow_uri=f"sqlite:///{tmp_path}/mlflow.db", trial=point, refit=False)
    assert res.model_uri and [m.trial_id for m in res.members] == [point]
    # the report draws the front, and Optuna's plots of the first objective
    from tuning.report import build_report

    report = build_report(sweep, tmp_path / "report", pngs=False)
    assert not {"pareto", "slice", "parallel-coordinates"} & set(report.not_drawn), report.not_drawn


def test_objectives_are_checked_at_load(tmp_path: Path) -> None:
    for text, message in [
        (TWO_OBJECTIVES.replace("{metric: val_f1, mode: max}, ", ""), "a list of at least two"),
        (TWO_OBJECTIVES.replace("metric: val_f1", "metric: latency_ms"), "the first objective is what ASHA prunes on"),
        (TWO_OBJECTIVES.replace("latency_ms, mode: min", "latency_ms, mode: max"), "latency_ms is minimized"),
        ("metric: val_f1\n" + TWO_OBJECTIVES, "give either metric:/mode: or objectives:"),
    ]:
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(SpaceError, match=re.escape(message)):
            load_space(path)
