"""A real (tiny) Tune sweep: Optuna TPE + ASHA, results frames, the CLI, TorchTrainer trials."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from asha_check import FROZEN_LR, LEARNING_LR, asha_replay, make_colour_data, trial_order
from shard_spy import assert_two_disjoint_shards, read_shards, spy_pickled_by_value, spy_trial

from training.checkpoint import load_checkpoint
from training.config import ConfigError
from tuning import results
from tuning.cli import main
from tuning.sweep import SweepOptions, run_sweep

# an lr that learns the colours in one epoch and one that cannot learn: ASHA must stop a
# trial (the reasoning is in tests/asha_check.py)
SPACE = """
task: task2
asha: {max_epochs: 4, grace_period: 1, reduction_factor: 2}
fixed:
  data.image_size: 32
  model.channels: 8
params:
  optim.lr: {choice: LR_CHOICES}
  model.stages: {int: [2, 3]}
  loss.imbalance: {choice: [none, focal]}
  loss.focal_gamma:
    uniform: [0.5, 3.0]
    when: {loss.imbalance: [focal]}
""".replace("LR_CHOICES", f"[{FROZEN_LR}, {LEARNING_LR}]")
SAMPLES = 8
SEED = 0  # its first proposals: a learner, then frozen trials


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, ray_session: None) -> tuple[str, str]:
    tmp = tmp_path_factory.mktemp("sweep")
    data = make_colour_data(tmp / "colours")
    space = tmp / "tiny.yaml"
    space.write_text(SPACE)
    storage = str(tmp / "runs")
    result = run_sweep(
        SweepOptions(space=str(space), data=str(data), samples=SAMPLES, name="tiny", storage=storage,
                     seed=SEED, max_concurrent=1)
    )
    assert result.best_trial_id is not None
    # the best trial by the space's own metric (val_f1 here), under that name
    assert (result.metric, result.mode) == ("val_f1", "max")
    assert result.best_metric == pytest.approx(results.Sweep.open("tiny", storage).trials()["best_val_f1"].max())
    return "tiny", storage


def test_every_trial_ran_and_asha_stopped_some_early(sweep: tuple[str, str]) -> None:
    frame = results.Sweep.open(*sweep).trials()
    assert len(frame) == SAMPLES
    assert set(frame["status"]) <= {"completed", "stopped_asha"}
    stopped = frame[frame["status"] == "stopped_asha"]
    assert len(stopped) >= 1, frame[["trial_id", "status", "epochs"]]
    assert (stopped["stop_epoch"] < 4).all()
    # exactly the trials ASHA's rule stops, replayed on the recorded values in run order
    hist = results.Sweep.open(*sweep).history()
    order = trial_order(Path(sweep[1]) / sweep[0])
    replay = asha_replay(hist, order, max_epochs=4, grace=1, rf=2)
    assert any(replay.values()), f"seed {SEED} no longer runs a frozen trial after a learner: {order}"
    expected = {t: "stopped_asha" if e else "completed" for t, e in replay.items()}
    assert dict(zip(frame["trial_id"], frame["status"], strict=True)) == expected
    assert dict(zip(stopped["trial_id"], stopped["stop_epoch"], strict=True)) == {
        t: e for t, e in replay.items() if e
    }
    # and why: every learner beat every frozen trial at epoch 1
    first = hist[hist["epoch"] == 1].set_index("trial_id")["val_f1"]
    lr = frame.set_index("trial_id")["optim.lr"]
    assert first[lr == LEARNING_LR].min() > first[lr == FROZEN_LR].max()
    assert (stopped["epochs"] == stopped["stop_epoch"]).all()
    assert (frame.loc[frame["status"] == "completed", "epochs"] == 4).all()
    # sorted best first, one column per searched parameter
    assert frame["best_val_f1"].is_monotonic_decreasing
    assert {"optim.lr", "model.stages", "loss.imbalance", "loss.focal_gamma"} <= set(frame.columns)


def test_conditional_param_only_when_condition_holds(sweep: tuple[str, str]) -> None:
    frame = results.Sweep.open(*sweep).trials()
    focal = frame["loss.imbalance"] == "focal"
    assert frame.loc[focal, "loss.focal_gamma"].notna().all()
    assert frame.loc[~focal, "loss.focal_gamma"].isna().all()
    study = results.Sweep.open(*sweep).study()  # what Optuna itself received
    assert len(study.trials) == SAMPLES
    for t in study.trials:
        assert ("loss.focal_gamma" in t.params) == (t.params["loss.imbalance"] == "focal")


def test_history_has_every_epoch_of_every_trial(sweep: tuple[str, str]) -> None:
    frame = results.Sweep.open(*sweep).trials()
    hist = results.Sweep.open(*sweep).history()
    counts = hist.groupby("trial_id").size()
    for _, row in frame.iterrows():
        assert counts[row["trial_id"]] == row["epochs"]
    assert {"train_loss", "val_loss", "val_f1", "val_acc", "lr", "epoch_time_s"} <= set(hist.columns)


def test_best_trial_checkpoint_holds_its_config(sweep: tuple[str, str]) -> None:
    from training.checkpoint import load_checkpoint

    best = results.Sweep.open(*sweep).trials().iloc[0]
    ckpt = load_checkpoint(best["checkpoint"])
    assert ckpt.config.optim.lr == pytest.approx(best["optim.lr"])
    assert ckpt.epoch == best["epochs"]


def test_results_queries_and_formats(sweep: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name, storage = sweep
    frame = results.Sweep.open(name, storage).trials()
    top = results.filter_frame(frame, where="status == 'completed'", sort="optim.lr", top=2)
    assert len(top) <= 2 and (top["status"] == "completed").all()
    assert top["optim.lr"].is_monotonic_decreasing
    with pytest.raises(ValueError, match="no such column"):
        results.filter_frame(frame, sort="nope")

    assert main(["results", name, "--storage", storage, "--format", "csv", "--top", "3", "--sort", "+optim.lr"]) == 0
    csv = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert len(csv) == 3 and csv["optim.lr"].is_monotonic_increasing

    out = tmp_path / "r.parquet"
    assert main(["results", name, "--storage", storage, "--format", "parquet", "--out", str(out)]) == 0
    assert len(pd.read_parquet(out)) == SAMPLES

    assert main(["results", name, "--storage", storage, "--history", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {"trial_id", "epoch", "val_f1"} <= set(rows[0])

    assert main(["results", name, "--storage", storage, "--importance"]) == 0
    assert "optim.lr" in capsys.readouterr().out

    assert main(["results", name, "--storage", storage, "--where", "best_val_f1 >"]) == 2
    assert "--where" in capsys.readouterr().err


def test_unknown_sweep_name_lists_known_ones(sweep: tuple[str, str]) -> None:
    with pytest.raises(results.SweepNotFoundError, match="tiny"):
        results.Sweep.open("nope", sweep[1]).trials()


def _copy_sweep(sweep: tuple[str, str], to: Path) -> Path:
    import shutil

    name, storage = sweep
    return Path(shutil.copytree(Path(storage) / name, to / name, symlinks=True))


def test_a_corrupt_experiment_state_is_an_error_naming_the_file(sweep: tuple[str, str], tmp_path: Path) -> None:
    copy = _copy_sweep(sweep, tmp_path)
    newest = sorted(copy.glob("experiment_state-*.json"))[-1]
    newest.write_text(newest.read_text()[: len(newest.read_text()) // 2])  # cut mid-file
    with pytest.raises(results.SweepStateError, match=newest.name):
        results.Sweep.open(sweep[0], str(tmp_path)).trials()
    for f in copy.glob("experiment_state-*.json"):
        f.unlink()
    with pytest.raises(results.SweepStateError, match="no Tune experiment state"):
        results.Sweep.open(sweep[0], str(tmp_path)).history()


def test_the_record_comes_from_tune_and_optuna_not_from_their_files(sweep: tuple[str, str], tmp_path: Path) -> None:
    """Tune's per-trial params.json is not what the record reads: deleting every one changes
    nothing; the study is Optuna's own, loaded from its journal storage."""
    copy = _copy_sweep(sweep, tmp_path)
    before = results.Sweep.open(*sweep).trials().drop(columns=["checkpoint", "trial_dir"])
    for f in copy.glob("*/params.json"):
        f.unlink()
    moved = results.Sweep.open(sweep[0], str(tmp_path))
    after = moved.trials()
    pd.testing.assert_frame_equal(before, after.drop(columns=["checkpoint", "trial_dir"]))
    # the moved copy's checkpoints, not the paths Tune recorded in the original folder
    assert all(str(c).startswith(str(copy)) for c in after["checkpoint"].dropna())
    # the sweep's constants were written once, and every trial's config carries them
    assert moved.meta.constants["seed"] == SEED and "num_threads" in moved.meta.constants
    for tid in after["trial_id"]:
        assert moved.trial_config(tid).seed == SEED
    with pytest.raises(results.SweepStateError, match="no trial 'nope'"):
        moved.trial_config("nope")
    # Optuna's trial numbers follow Tune's creation order, and their values are the trials'
    study = moved.study()
    by_order = after.sort_values("order")
    assert [t.number for t in study.trials] == list(range(len(by_order)))
    for t, (_, row) in zip(study.trials, by_order.iterrows(), strict=True):
        assert t.params["optim.lr"] == pytest.approx(row["optim.lr"])
    (copy / results.STUDY_FILE).unlink()
    with pytest.raises(results.SweepStateError, match=results.STUDY_FILE):
        moved.study()
    assert moved.best_trial()["trial_id"] == before["trial_id"].iloc[0]


def test_existing_name_without_resume_is_refused(sweep: tuple[str, str], task2_data: Path, tmp_path: Path) -> None:
    space = tmp_path / "s.yaml"
    space.write_text(SPACE)
    with pytest.raises(FileExistsError, match="--resume"):
        run_sweep(SweepOptions(space=str(space), data=str(task2_data), samples=1, name=sweep[0], storage=sweep[1]))


def test_trial_bigger_than_the_machine_is_refused(tmp_path: Path, task2_data: Path, ray_session: None) -> None:
    space = tmp_path / "s.yaml"
    space.write_text(SPACE)
    with pytest.raises(ConfigError, match="workers-per-trial 2"):
        run_sweep(SweepOptions(space=str(space), data=str(task2_data), samples=1, storage=str(tmp_path),
                               workers_per_trial=2, cpus_per_trial=1))


def test_decode_params_cannot_be_searched(tmp_path: Path, task2_data: Path) -> None:
    space = tmp_path / "bad.yaml"
    space.write_text(SPACE.replace("model.stages: {int: [2, 3]}", "data.image_size: {choice: [32, 64]}").replace("  data.image_size: 32\n", ""))
    with pytest.raises(ConfigError, match="shares"):
        run_sweep(SweepOptions(space=str(space), data=str(task2_data), samples=1, storage=str(tmp_path)))


# two trials, one after the other: a reused TorchTrainer trial actor used to hang the sweep
@pytest.mark.timeout(300)
def test_torch_trainer_trials_with_two_workers(
    task2_data: Path, tmp_path: Path, ray_session: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tuning.sweep
    from training.engine import prepare_data

    space = tmp_path / "one.yaml"
    space.write_text(
        "task: task2\nasha: {max_epochs: 2, grace_period: 2, reduction_factor: 2}\n"
        "fixed: {data.image_size: 32, model.channels: 8, model.stages: 2}\n"
        "params:\n  optim.lr: {loguniform: [1.0e-3, 1.0e-2]}\n"
    )
    storage = str(tmp_path / "runs")
    spy = tmp_path / "shards"  # what each TorchTrainer worker of each trial trained on
    monkeypatch.setattr(tuning.sweep, "_torch_trainer_trial", spy_trial(str(spy)))
    with spy_pickled_by_value():
        result = run_sweep(
            SweepOptions(
                space=str(space), data=str(task2_data), samples=2, name="ddp", storage=storage,
                workers_per_trial=2, cpus_per_trial=0.5, max_concurrent=1,
            )
        )
    frame = results.Sweep.open("ddp", storage).trials()
    assert frame["status"].tolist() == ["completed"] * 2 and frame["epochs"].tolist() == [2, 2]
    # the trial's checkpoint lives in the TorchTrainer run of that trial
    assert "train_runs" in str(frame["checkpoint"][0])
    assert result.best_checkpoint and Path(result.best_checkpoint, "checkpoint.pt").is_file()
    hist = results.Sweep.open("ddp", storage).history()
    assert hist["val_f1"].notna().all()
    # each trial's two workers: world size 2, disjoint halves of the training set every epoch
    ckpt = load_checkpoint(frame["checkpoint"][0])
    data, _ = prepare_data(task2_data, ckpt.config)
    assert sorted(p.name for p in spy.iterdir()) == sorted(frame["trial_id"])
    for tid in frame["trial_id"]:
        assert_two_disjoint_shards(read_shards(spy / tid), len(data.y_train), epochs=2)
