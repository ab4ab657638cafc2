"""A trial process killed mid-epoch is retried from its last checkpoint (``--max-failures``);
when that checkpoint is corrupt the retry falls back to the one before it and says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tuning import results

# one trial of ~0.5 s epochs on 2 cores, a checkpoint after every epoch
SPACE = """
task: task2
asha: {max_epochs: 6, grace_period: 6, reduction_factor: 2}
fixed: {data.image_size: 64, model.channels: 32, model.stages: 3, checkpoint_every_s: 0}
params:
  optim.lr: {loguniform: [1.0e-3, 2.0e-3]}
"""
CATCH_S = 150
FINISH_S = 300


def _rows(trial_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for line in (trial_dir / "result.json").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # the line being written
            break
    return rows


def _trial_dir(sweep: Path) -> Path | None:
    found = [p.parent for p in sweep.glob("*/result.json")]
    return found[0] if found else None


def test_a_killed_trial_with_a_corrupt_checkpoint_resumes_from_the_one_before(
    tmp_path: Path, task2_data: Path
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    storage = tmp_path / "runs"
    log_path = tmp_path / "tune.log"
    cmd = [sys.executable, "-m", "tuning.cli", "tune", str(space), "--data", str(task2_data),
           "--samples", "1", "--name", "f", "--storage", str(storage), "--max-failures", "2",
           "--seed", "3"]  # fmt: skip
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
        try:
            deadline = time.monotonic() + CATCH_S
            while time.monotonic() < deadline:
                trial = _trial_dir(storage / "f")
                if trial is not None and len(_rows(trial)) >= 2:
                    break
                assert proc.poll() is None, log_path.read_text()[-3000:]
                time.sleep(0.1)
            else:
                pytest.fail("no trial reported two epochs: " + log_path.read_text()[-3000:])
            pid = int(_rows(trial)[-1]["pid"])
            # frozen, the trial cannot report another checkpoint while the test corrupts the
            # latest one Tune knows of (the driver has written every result it received)
            os.kill(pid, signal.SIGSTOP)
            time.sleep(1.0)
            last = [r for r in _rows(trial) if r.get("checkpoint_dir_name")][-1]
            latest = trial / last["checkpoint_dir_name"] / "checkpoint.pt"
            data = latest.read_bytes()
            latest.write_bytes(data[: len(data) // 2])
            os.kill(pid, signal.SIGKILL)
            proc.wait(timeout=FINISH_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    out = log_path.read_text()
    assert proc.returncode == 0, out[-3000:]
    rows = _rows(trial)
    killed_at = last["epoch"]
    after = [r for r in rows if r.get("checkpoint_fallback")]
    # the retry said which file was corrupt and went on from the epoch before it: that
    # epoch is trained again, no other
    assert len(after) == 1, rows
    assert str(latest) in after[0]["checkpoint_fallback"]
    assert after[0]["epoch"] == killed_at and after[0]["pid"] != pid
    epochs = [r["epoch"] for r in rows]
    assert epochs == list(range(1, killed_at + 1)) + list(range(killed_at, 7)), epochs
    assert "resumed from the checkpoint before it" in out
    frame = results.Sweep.open("f", str(storage)).trials()
    assert list(frame["status"]) == ["completed"]
