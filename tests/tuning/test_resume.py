"""--resume after the driver is killed mid-sweep (the whole process group, Ray included)."""

from __future__ import annotations

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


def _poketune(*args: str) -> list[str]:
    return [sys.executable, "-m", "tuning.cli", *args]


def _history(name: str, storage: str) -> dict[str, list[int]]:
    try:
        hist = results.load_history(name, storage)
    except (FileNotFoundError, OSError):
        return {}
    if hist.empty:
        return {}
    return {tid: g["epoch"].tolist() for tid, g in hist.groupby("trial_id")}


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
        deadline = time.monotonic() + 240
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
    study_before = results.load_study("r", storage)
    completed_before = {t: e for t, e in before.items() if len(e) == 4}
    interrupted = {t: e for t, e in before.items() if len(e) < 4}

    second = subprocess.run(_poketune(*args, "--resume"), capture_output=True, text=True, env=env, timeout=400)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    after = _history("r", storage)
    frame = results.load("r", storage)
    assert len(frame) == SAMPLES and set(frame["status"]) == {"completed"}
    for tid, epochs in completed_before.items():
        assert after[tid] == epochs, f"completed trial {tid} was run again"
    for tid, epochs in interrupted.items():
        # continued from its checkpoint: epoch 1 is never trained twice
        assert after[tid].count(1) == 1 and after[tid][-1] == 4, (tid, epochs, after[tid])
    for epochs in after.values():
        assert epochs[-1] == 4
    # the searcher's history came back too: Optuna knows every trial, old ones included
    study_after = results.load_study("r", storage)
    assert len(study_after.trials) == SAMPLES
    old_params = [t.params for t in study_before.trials if t.state.is_finished()]
    assert old_params and all(p in [t.params for t in study_after.trials] for p in old_params)
