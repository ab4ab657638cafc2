"""Sweeps on a real multi-node Ray cluster (``ray start`` processes, token auth, dashboard):
submitted through the Jobs API, and surviving the loss of a worker node mid-trial.

The cluster is laid out like ``cluster.yaml``: a head with no CPUs (GCS, dashboard, the
sweep's driver) and two worker nodes with one CPU each, all on this machine. Trials report
the id of the node that ran each epoch (``node_id``, see ``training.ray_worker.RayReporter``):
every node has the same IP here.
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
WORKERS = 2
SAMPLES = 2
EPOCHS = 3
# Explicit: without it Tune keeps only one trial of an Optuna searcher pending, and on a
# cluster (--address) the trials of a sweep then run one at a time
CONCURRENCY = ["--max-concurrent", str(WORKERS)]
# ~1-2 s an epoch on one CPU: slow enough to kill a node between two epochs of a trial.
# grace_period == max_epochs: ASHA stops nothing, every trial must reach the last epoch.
# A checkpoint every epoch, so the restored trial must continue exactly where it stopped.
SPACE = f"""\
task: task2
asha: {{max_epochs: {EPOCHS}, grace_period: {EPOCHS}}}
fixed: {{data.image_size: 64, model.channels: 64, model.stages: 3, checkpoint_every_s: 0}}
params:
  optim.lr: {{loguniform: [1.0e-4, 1.0e-2]}}
"""


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("ray_cluster"), workers=WORKERS) as c:
        yield c


@pytest.fixture
def cluster(module_cluster: LocalCluster) -> LocalCluster:
    """The module's cluster with all its worker nodes, whatever ran before: a node a test
    killed is replaced, once the cluster itself (the GCS) has marked it dead; until then the
    GCS still lists it, and a later test would count one node too many."""
    for name, node in list(module_cluster.nodes.items()):
        if node.killed:
            module_cluster.wait_node_dead(name, timeout=90)
    while len(module_cluster.workers()) < WORKERS:
        module_cluster.add_worker(f"worker{len(module_cluster.nodes)}")
    alive = {n["node_id"] for n in module_cluster.alive_nodes()}
    assert alive == {n.node_id for n in module_cluster.nodes.values() if not n.killed}
    assert len(alive) == WORKERS + 1
    return module_cluster


@pytest.fixture
def space(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
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


def _tune_args(space: Path, data: Path, storage: Path, name: str) -> list[str]:
    return [
        "poketune", "tune", str(space), "--data", str(data), "--samples", str(SAMPLES),
        "--storage", str(storage), "--name", name, *CONCURRENCY,
    ]  # fmt: skip


def test_sweep_submitted_as_job_runs_on_the_workers(
    cluster: LocalCluster, space: Path, task2_data: Path, tmp_path: Path
) -> None:
    """The documented ``ray job submit --working-dir . -- poketune tune ... --address auto``,
    then followed through the Jobs API (``JobSubmissionClient``) as a notebook would."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    from tuning.results import Sweep

    storage = tmp_path / "runs"
    # without the token the Jobs API refuses
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{cluster.dashboard_url}/api/jobs/", timeout=10)
    assert refused.value.code == 401

    job = "poketune-test-sweep"
    # .gitignore'd paths are not uploaded either; say the big ones explicitly all the same
    excludes = [".venv", ".git", ".mypy_cache", ".pytest_cache", "data", "poketune_runs"]
    submit = [
        "ray", "job", "submit", "--no-wait", "--submission-id", job,
        "--address", cluster.dashboard_url,
        "--working-dir", ".", "--runtime-env-json", json.dumps({"excludes": excludes}),
        "--", *_tune_args(space, task2_data, storage, "jobsweep"), "--address", "auto",
    ]  # fmt: skip
    # the CLI authenticates from its environment: RAY_AUTH_MODE=token + the token file
    out = subprocess.run(
        submit, cwd=REPO, env=cluster.env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "Uploading package gcs://" in out.stdout + out.stderr

    # the SDK client takes the token as a header: independent of this process's Ray settings
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

    # the driver ran on the head, the trials on the workers (the head has no CPU to give)
    head, workers = cluster.nodes["head"], {w.node_id for w in cluster.workers()}
    assert client.get_job_info(job).driver_node_id == head.node_id
    # results come from the shared storage path, where each worker wrote its trials
    frame = Sweep.open("jobsweep", str(storage)).trials()
    assert len(frame) == SAMPLES
    assert (frame["status"] == "completed").all(), frame[["trial_id", "status", "error"]]
    ran_on = {row["node_id"] for d in frame["trial_dir"] for row in _trial_rows(d)}
    assert ran_on and ran_on <= workers


def _trial_mid_way(cluster: LocalCluster, sweep_dir: Path) -> tuple[Path, LocalNode] | None:
    """A trial with checkpointed epochs and epochs left, and the worker node running it."""
    workers = {w.node_id: w for w in cluster.workers()}
    for result in sweep_dir.glob("*/result.json"):
        rows = _trial_rows(result.parent)
        if rows and len(rows) < EPOCHS and rows[-1]["node_id"] in workers:
            return result.parent, workers[rows[-1]["node_id"]]
    return None


def test_sweep_survives_worker_node_loss_and_resumes_trial_from_checkpoint(
    cluster: LocalCluster, space: Path, task2_data: Path, tmp_path: Path
) -> None:
    from training.checkpoint import load_checkpoint
    from tuning.results import Sweep

    storage, name = tmp_path / "runs", "nodeloss"
    # the driver connects as one started on the head node would: GCS address + token env
    args = _tune_args(space, task2_data, storage, name)
    args += ["--address", cluster.address, "--max-failures", "2"]
    log = tmp_path / "driver.log"
    with log.open("w") as out:
        driver = subprocess.Popen(args, env=cluster.env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        t0 = time.monotonic()
        while (found := _trial_mid_way(cluster, storage / name)) is None:
            if driver.poll() is not None or time.monotonic() - t0 > 150:
                pytest.fail(f"no trial caught mid-way:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        victim_dir, lost = found
        epochs_before = len(_trial_rows(victim_dir))
        lost.kill()
        t_kill = time.time()
        assert driver.wait(timeout=240) == 0, log.read_text()[-3000:]
        t_end = time.time()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()

    # the node is really gone, by the cluster's own account (the GCS marks it dead after
    # missed health checks, often after the sweep ended: the trial's failure is noticed at
    # once, from its closed connection), and the other worker survived it
    cluster.wait_node_dead(lost.name, timeout=90)
    t_dead = time.time()
    alive = {n["node_id"] for n in cluster.alive_nodes()}
    survivors = alive - {cluster.nodes["head"].node_id}
    assert lost.node_id not in alive
    assert survivors == {w.node_id for w in cluster.workers()} and len(survivors) == WORKERS - 1

    # no trial lost: every trial ran every epoch
    frame = Sweep.open(name, str(storage)).trials().set_index("trial_id")
    assert len(frame) == SAMPLES
    assert (frame["status"] == "completed").all(), frame[["status", "error"]]
    assert (frame["epochs"] == EPOCHS).all()

    rows = _trial_rows(victim_dir)
    # epochs continue from the checkpoint: none repeated, none skipped
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    on_lost = [r["node_id"] == lost.node_id for r in rows]
    k = on_lost.index(False)  # the first epoch after the restore
    assert k >= epochs_before and not any(on_lost[k:])
    assert {r["node_id"] for r in rows[k:]} <= survivors
    # Tune restored the trial (its iteration counter restarted), not started it afresh
    assert rows[k]["iterations_since_restore"] == 1 and rows[k]["training_iteration"] == k + 1
    assert (victim_dir / "error.txt").is_file()  # the failure Tune retried is on record
    ckpt = load_checkpoint(Path(str(frame.loc[victim_dir.name, "checkpoint"])))
    assert [h["epoch"] for h in ckpt.history] == list(range(1, EPOCHS + 1))
    for other in frame.drop(victim_dir.name)["trial_dir"]:  # none of the others restarted
        other_rows = _trial_rows(other)
        assert all(r["iterations_since_restore"] == r["training_iteration"] for r in other_rows)

    recovered = rows[k]["timestamp"] - t_kill
    print(
        f"\nnode loss: killed {lost.name} after {epochs_before} epoch(s) of {victim_dir.name}; "
        f"its epoch {k + 1} reported from another node {recovered:.0f}s later; the sweep "
        f"ended {t_end - t_kill:.1f}s after the kill; the cluster marked the node dead "
        f"{t_dead - t_kill:.1f}s after it"
    )
