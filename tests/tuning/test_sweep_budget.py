"""Budget-first sweeps (a deadline, no trial count), the preset evaluated first, and cached
frozen-backbone features shared by a sweep's trials."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from training.tasks import preset_config
from tuning import results
from tuning.budget import LEDGER, BudgetError, parse_duration
from tuning.cli import main

BUDGET_S = 14.0
SPACE = """
task: task2
asha: {max_epochs: 400, grace_period: 400, reduction_factor: 2}   # ASHA never stops a trial
fixed:
  data.image_size: 32
  model.channels: 8
params:
  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
  model.stages: {int: [2, 4]}
  model.pooling: {choice: [avg]}   # the preset's max is not offered: left to the sampler
"""


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90.0), ("20m", 1200.0), ("1.5h", 5400.0), ("45", 45.0), (" 2M ", 120.0)]
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "20x", "-5m", "0s", "m", "1e3"])
def test_bad_durations_are_named(text: str) -> None:
    with pytest.raises(BudgetError, match="time budget"):
        parse_duration(text)


def test_cli_refuses_a_sweep_without_samples_or_budget(
    task2_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = tmp_path / "s.yaml"
    space.write_text(SPACE)
    assert main(["tune", str(space), "--data", str(task2_data), "--storage", str(tmp_path / "runs")]) == 2
    assert "--samples N, --time-budget" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: exit 2 and the flag named
        main(["tune", str(space), "--data", str(task2_data), "--time-budget", "soon"])
    assert "--time-budget: time budget 'soon'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def budget_sweep(
    tmp_path_factory: pytest.TempPathFactory, task2_data: Path, ray_session: None
) -> tuple[str, str, str]:
    tmp = tmp_path_factory.mktemp("budget")
    space = tmp / "budget.yaml"
    space.write_text(SPACE)
    storage = str(tmp / "runs")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([
            "tune", str(space), "--data", str(task2_data), "--time-budget", f"{BUDGET_S:.0f}s",
            "--name", "budget", "--storage", storage, "--max-concurrent", "2",
        ])
    assert code == 0, out.getvalue()
    return "budget", storage, out.getvalue()


def test_a_budget_sweep_stops_within_one_epoch_of_its_deadline(budget_sweep: tuple[str, str, str]) -> None:
    name, storage, printed = budget_sweep
    ledger = json.loads((Path(storage) / name / LEDGER).read_text())
    assert ledger["budget_s"] == BUDGET_S and ledger["deadline"] == pytest.approx(ledger["started"] + BUDGET_S)
    frame = results.Sweep.open(name, storage).trials()
    history = results.Sweep.open(name, storage).history()
    assert len(frame) >= 2  # trials kept coming: no --samples
    # nothing runs 400 epochs in 14 s, and ASHA stops nothing before 400: the deadline
    # stopped every trial
    assert set(frame["status"]) == {"stopped_budget"}, frame[["trial_id", "status", "epochs"]]
    assert set(ledger["budget_stopped"]) == set(frame.loc[frame["status"] == "stopped_budget", "trial_id"])
    deadline = ledger["deadline"]
    for tid, rows in history.groupby("trial_id"):
        # each trial stopped at its first report after the deadline, and every epoch it
        # reported is kept
        late = rows[rows["timestamp"] > deadline]
        assert len(late) <= 1, (tid, late[["epoch", "timestamp"]])
        assert list(rows["epoch"]) == list(range(1, len(rows) + 1))
        overrun = rows["timestamp"].max() - deadline
        if len(late) < len(rows):
            # it was running at the deadline: at most one of its epochs over (plus reporting slack)
            assert overrun <= rows["epoch_time_s"].max() + 2.0, (tid, overrun)
        # else it was queued before the deadline and first reported after it: what it ran
        # past the deadline is its start-up and one epoch, which the rule above bounds to
        # that one report (on a loaded machine the start-up alone took 2.5-3.6 s, so an
        # epoch-plus-2-s bound on these failed; whether Tune should start a trial it queued
        # before the deadline is an open question recorded in the issue)
    assert "trials in" in printed and f"of a {BUDGET_S:.0f}s budget" in printed
    assert "stopped by the budget" in printed


def test_the_preset_is_the_first_trial_with_the_presets_values(budget_sweep: tuple[str, str, str]) -> None:
    name, storage, printed = budget_sweep
    frame = results.Sweep.open(name, storage).trials()
    preset = frame[frame["preset"]]
    assert len(preset) == 1
    row = preset.iloc[0]
    task2 = preset_config("task2")
    assert row["optim.lr"] == pytest.approx(task2.optim.lr)
    assert row["model.stages"] == task2.model.stages
    assert row["model.pooling"] == "avg"  # the only choice offered
    # the sweep's end compares the preset with the best on the same validation split
    line = next(line for line in printed.splitlines() if line.startswith("preset trial"))
    assert str(row["trial_id"]) in line and f"{row['best_val_f1']:.4f}" in line
    assert f"{frame['best_val_f1'].max():.4f}" in line


TRANSFER_SPACE = """
task: task3
asha: {max_epochs: 2, grace_period: 2, reduction_factor: 2}
fixed:
  model.name: resnet18
  model.pretrained: false
  model.freeze_depth: 0
  data.image_size: 32
  data.rgba: keep
  data.normalize: half
  loss.imbalance: none
  augment.hflip: 0.0
  augment.rotation: 0.0
  augment.color_jitter: 0.0
  early_stop.patience: 0
params:
  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
"""


def test_transfer_trials_share_one_feature_extraction(
    task2_data: Path, tmp_path: Path, ray_session: None
) -> None:
    from tuning.sweep import SweepOptions, run_sweep

    space = tmp_path / "transfer.yaml"
    space.write_text(TRANSFER_SPACE)
    storage = str(tmp_path / "runs")
    run_sweep(SweepOptions(space=str(space), data=str(task2_data), samples=3, name="tl", storage=storage,
                           max_concurrent=1))
    history = results.Sweep.open("tl", storage).history()
    assert set(history["features"]) == {"cached"}  # the results say which path trials took
    first_epochs = history[history["epoch"] == 1].sort_values("timestamp")
    extracted = first_epochs["feature_extract_s"].to_numpy()
    # same backbone (seeded random init), same data: the first trial extracts, the others reuse
    assert extracted[0] > 0 and (extracted[1:] == 0).all(), first_epochs[["trial_id", "feature_extract_s"]]
    assert len(first_epochs) == 3 and isinstance(history, pd.DataFrame)
