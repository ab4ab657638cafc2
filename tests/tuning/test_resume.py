"""--resume after the driver is killed mid-sweep (the whole process group, Ray included)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tuning import results

# ~0.4 s epochs on 2 cores: a trial must still be mid-way when the test looks (0.03 s epochs
# once finished the whole sweep between two looks)
SPACE = """
task: task2
asha: {max_epochs: 4, grace_period: 4, reduction_factor: 2}
fixed: {data.image_size: 64, model.channels: 32, model.stages: 3}
params:
  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
  loss.imbalance: {choice: [none, focal]}
  loss.focal_gamma: {uniform: [0.5, 3.0], when: {loss.imbalance: [focal]}}
"""
SAMPLES = 5
# the waits, bounded well under pytest-timeout's 600 s for the whole test (measured: the first
# sweep is caught mid-way after ~25 s, the resumed one takes ~80 s on 2 busy cores)
CATCH_S = 150
RESUME_S = 300


def _poketune(*args: str) -> list[str]:
    return [sys.executable, "-m", "tuning.cli", *args]


def _history(name: str, storage: str) -> dict[str, list[int]]:
    try:
        hist = results.Sweep.open(name, storage).history()
    except (FileNotFoundError, OSError, results.SweepStateError):  # Tune has not saved its state yet
        return {}
    if hist.empty:
        return {}
    return {tid: g["epoch"].tolist() for tid, g in hist.groupby("trial_id")}


def _rows(name: str, storage: str) -> dict[str, list[dict]]:
    """Each trial's result.json rows as Tune wrote them (with its iteration counters)."""
    out = {}
    for f in Path(storage, name).glob("*/result.json"):
        rows = []
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # the line being written when the driver died
                break
        out[f.parent.name] = rows
    return out


def test_resume_after_killing_the_driver(tmp_path: Path, task2_data: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    storage = str(tmp_path / "runs")
    args = ["tune", str(space), "--data", str(task2_data), "--samples", str(SAMPLES), "--name", "r",
            "--storage", storage, "--max-concurrent", "1", "--seed", "7"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(_poketune(*args), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + CATCH_S
        while time.monotonic() < deadline:
            hist = _history("r", storage)
            done = [t for t, e in hist.items() if len(e) == 4]
            partial = [t for t, e in hist.items() if 1 <= len(e) < 4]
            if done and partial:
                break
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("sweep did not progress: " + (tmp_path / "first.log").read_text()[-3000:])
    finally:
        # the driver and the Ray it started die together, like a crashed laptop
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _history("r", storage)
    rows_before = _rows("r", storage)
    study_before = results.Sweep.open("r", storage).study()
    completed_before = {t: e for t, e in before.items() if len(e) == 4}
    interrupted = {t: e for t, e in before.items() if len(e) < 4}
    # the kill really came mid-trial: a trial had reported some of its epochs, not all
    assert completed_before and interrupted, before

    second = subprocess.run(
        _poketune(*args, "--resume"), capture_output=True, text=True, env=env, timeout=RESUME_S
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    after = _history("r", storage)
    frame = results.Sweep.open("r", storage).trials()
    assert len(frame) == SAMPLES and set(frame["status"]) == {"completed"}
    for tid, epochs in completed_before.items():
        assert after[tid] == epochs, f"completed trial {tid} was run again"
    rows_after = _rows("r", storage)
    for tid, epochs in interrupted.items():
        # continued from its checkpoint: epoch 1 is never trained twice
        assert after[tid].count(1) == 1 and after[tid][-1] == 4, (tid, epochs, after[tid])
        # the rows from before the kill are kept; then Tune restored the trial (its counter
        # since restore starts again at 1) instead of starting it afresh (training_iteration
        # continues from the checkpoint's)
        old, rows = rows_before[tid], rows_after[tid]
        assert len(old) == len(epochs) < 4 and rows[: len(old)] == old
        assert all(r["iterations_since_restore"] == r["training_iteration"] for r in old)
        restored = rows[len(old)]
        assert restored["iterations_since_restore"] == 1 and restored["training_iteration"] > 1, rows
        assert [r["epoch"] for r in rows[len(old):]] == list(range(restored["epoch"], 5))
    for tid in completed_before:  # never restored
        assert all(r["iterations_since_restore"] == r["training_iteration"] for r in rows_after[tid])
    for epochs in after.values():
        assert epochs[-1] == 4
    # the searcher's history came back too: Optuna knows every trial, old ones included
    study_after = results.Sweep.open("r", storage).study()
    states = [t.state.name for t in study_after.trials]
    # every Tune trial told once; a trial asked after Tune's last save died with the driver
    # and is marked failed on resume, never left running
    assert states.count("COMPLETE") == SAMPLES and set(states) <= {"COMPLETE", "FAIL"}, states
    old_params = [t.params for t in study_before.trials if t.state.is_finished()]
    assert old_params and all(p in [t.params for t in study_after.trials] for p in old_params)
