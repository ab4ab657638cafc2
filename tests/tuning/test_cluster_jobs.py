"""Sweeps on a real two-node Ray cluster (``ray start`` processes, token auth, dashboard):
submitted through the Jobs API, and surviving the loss of a worker node mid-trial.

Both nodes run on this machine with one CPU each, so a 2-trial-wide sweep puts one trial on
each node. Trials report the id of the node that ran each epoch (``node_id``, see
``training.ray_worker.RayReporter``): both nodes have the same IP here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ray_cluster import LocalCluster, LocalNode, local_cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="node kill reads sessions from /proc"),
]

REPO = Path(__file__).resolve().parents[2]

QUICK_SPACE = """\
task: task2
asha: {max_epochs: 2, grace_period: 1, reduction_factor: 2}
fixed: {data.image_size: 32, model.channels: 8}
params:
  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
  model.stages: {int: [2, 3]}
"""

# Slow enough (~2 s an epoch on one CPU) to kill a node between two epochs of a trial;
# grace_period == max_epochs: ASHA stops nothing, every trial must reach the last epoch
SLOW_EPOCHS = 3
SLOW_SPACE = f"""\
task: task2
asha: {{max_epochs: {SLOW_EPOCHS}, grace_period: {SLOW_EPOCHS}}}
fixed: {{data.image_size: 64, model.channels: 64, model.stages: 3}}
params:
  optim.lr: {{loguniform: [1.0e-4, 1.0e-2]}}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("ray_cluster"), workers=1) as c:
        yield c


@pytest.fixture
def two_nodes(cluster: LocalCluster) -> LocalCluster:
    """The module's cluster with a live worker node (a previous test may have killed it)."""
    if not cluster.workers():
        cluster.add_worker(f"worker{len(cluster.nodes)}")
    assert len(cluster.alive_nodes()) == 2
    return cluster


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def _trial_rows(trial_dir: str | Path) -> list[dict[str, Any]]:
    f = Path(trial_dir) / "result.json"
    if not f.is_file():
        return []
    rows = []
    for line in f.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # the line being written right now
            break
    return rows


def _tune_args(space: Path, data: Path, storage: Path, name: str, samples: int) -> list[str]:
    return [
        "poketune", "tune", str(space), "--data", str(data), "--samples", str(samples),
        "--storage", str(storage), "--name", name,
    ]  # fmt: skip


def test_sweep_submitted_as_job_runs_on_both_nodes(
    two_nodes: LocalCluster, task2_data: Path, tmp_path: Path
) -> None:
    """The documented ``ray job submit --working-dir . -- poketune tune ... --address auto``,
    then followed through the Jobs API (``JobSubmissionClient``) like a notebook would."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    from tuning.results import load

    cluster = two_nodes
    head, worker = cluster.nodes["head"], cluster.workers()[0]
    storage = tmp_path / "runs"

    # without the token the Jobs API refuses the request
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{cluster.dashboard_url}/api/jobs/", timeout=10)
    assert refused.value.code == 401

    job = "poketune-test-sweep"
    # what must not be uploaded (.gitignore'd paths are skipped too, but say it explicitly)
    excludes = [".venv", ".git", ".mypy_cache", ".pytest_cache", "data", "poketune_runs"]
    tune_args = _tune_args(_space(tmp_path, QUICK_SPACE), task2_data, storage, "jobsweep", 2)
    submit = [
        "ray", "job", "submit", "--no-wait", "--submission-id", job,
        "--address", cluster.dashboard_url,
        "--working-dir", ".", "--runtime-env-json", json.dumps({"excludes": excludes}),
        "--", *tune_args, "--address", "auto",
    ]  # fmt: skip
    # the CLI authenticates from the environment: RAY_AUTH_MODE=token + the token file
    out = subprocess.run(
        submit, cwd=REPO, env=cluster.env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "Uploading package gcs://" in out.stdout + out.stderr

    # the SDK client takes the token as a header: no dependence on this process's Ray settings
    client = JobSubmissionClient(cluster.dashboard_url, headers=cluster.auth_headers())
    deadline = time.monotonic() + 180
    while not (status := client.get_job_status(job)).is_terminal():
        if time.monotonic() > deadline:
            client.stop_job(job)
            pytest.fail(f"job still {status} after 180 s:\n{client.get_job_logs(job)[-3000:]}")
        time.sleep(1)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "best trial" in logs
    assert client.get_job_info(job).driver_node_id == head.node_id

    # results come from the shared storage path, where every node wrote its trials
    frame = load("jobsweep", str(storage))
    assert len(frame) == 2
    statuses = set(frame["status"])
    assert statuses <= {"completed", "stopped_asha"}, frame[["trial_id", "status", "error"]]
    assert (frame["status"] == "completed").any()
    ran_on = {row["node_id"] for d in frame["trial_dir"] for row in _trial_rows(d)}
    assert ran_on == {head.node_id, worker.node_id}


def _trial_on(node: LocalNode, sweep_dir: Path) -> tuple[Path, int] | None:
    """A trial whose latest epoch ran on ``node`` and that has epochs left, and its epochs."""
    for result in sweep_dir.glob("*/result.json"):
        rows = _trial_rows(result.parent)
        if rows and rows[-1]["node_id"] == node.node_id and len(rows) < SLOW_EPOCHS:
            return result.parent, len(rows)
    return None


def test_sweep_survives_worker_node_loss_and_resumes_trial_from_checkpoint(
    two_nodes: LocalCluster, task2_data: Path, tmp_path: Path
) -> None:
    from training.checkpoint import load_checkpoint
    from tuning.results import load

    cluster = two_nodes
    head, worker = cluster.nodes["head"], cluster.workers()[0]
    storage, name = tmp_path / "runs", "nodeloss"
    args = _tune_args(_space(tmp_path, SLOW_SPACE), task2_data, storage, name, 2)
    # the driver connects like one started on the head node would: GCS address + token env
    args += ["--address", cluster.address, "--max-failures", "2", "--max-concurrent", "2"]
    log = tmp_path / "driver.log"
    with log.open("w") as out:
        driver = subprocess.Popen(args, env=cluster.env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        t0 = time.monotonic()
        victim = None
        while victim is None:
            if driver.poll() is not None or time.monotonic() - t0 > 150:
                pytest.fail(f"no trial caught mid-way on {worker.name}:\n{log.read_text()[-3000:]}")
            victim = _trial_on(worker, storage / name)
            time.sleep(0.2)
        victim_dir, epochs_before = victim
        worker.kill()
        t_kill = time.time()
        assert driver.wait(timeout=240) == 0, log.read_text()[-3000:]
        t_end = time.time()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()

    assert worker.node_id not in {n["node_id"] for n in cluster.alive_nodes()}

    # no trial lost: both ran every epoch
    frame = load(name, str(storage)).set_index("trial_id")
    assert len(frame) == 2
    assert (frame["status"] == "completed").all(), frame[["status", "error"]]
    assert (frame["epochs"] == SLOW_EPOCHS).all()

    rows = _trial_rows(victim_dir)
    # epochs continue from the checkpoint: none repeated, none skipped
    assert [r["epoch"] for r in rows] == list(range(1, SLOW_EPOCHS + 1))
    on_worker = [r["node_id"] == worker.node_id for r in rows]
    k = on_worker.index(False)  # first epoch after the restore
    assert k >= epochs_before and not any(on_worker[k:])
    assert {r["node_id"] for r in rows[k:]} == {head.node_id}
    # Tune restored the trial (iteration counter restarted) rather than starting it afresh
    assert rows[k]["iterations_since_restore"] == 1 and rows[k]["training_iteration"] == k + 1
    assert (victim_dir / "error.txt").is_file()  # the failure Tune retried is on record
    state = load_checkpoint(Path(str(frame.loc[victim_dir.name, "checkpoint"])))
    assert [h["epoch"] for h in state["history"]] == list(range(1, SLOW_EPOCHS + 1))

    (survivor,) = frame.drop(victim_dir.name)["trial_dir"]
    survivor_rows = _trial_rows(survivor)
    assert all(r["iterations_since_restore"] == r["training_iteration"] for r in survivor_rows)

    recovered = rows[k]["timestamp"] - t_kill
    print(
        f"\nnode loss: killed {worker.name} after {epochs_before} epoch(s) of {victim_dir.name}; "
        f"its epoch {k + 1} reported on the head {recovered:.1f}s later; sweep ended "
        f"{t_end - t_kill:.1f}s after the kill"
    )
