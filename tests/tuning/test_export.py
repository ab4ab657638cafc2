"""export_sweep against a real ``mlflow server`` (HTTP) and a SQLite store: run structure,
metric history, tags, models and artifacts, idempotent re-export, unreachable servers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from asha_check import FROZEN_LR, LEARNING_LR, asha_replay, make_colour_data, trial_order
from mlflow import MlflowClient
from mlflow_server import MlflowServer, PendingServer, free_port, launch_mlflow_server

from training.checkpoint import load_checkpoint
from tuning import results
from tuning._mlflow import (
    EXPERIMENT_KIND_TAG,
    MlflowUnreachableError,
    Tags,
    artifact_location_for,
    ensure_reachable,
    normalize_tracking_uri,
    tracking,
)
from tuning.cli import main
from tuning.export import CHECKPOINT_ARTIFACT, ExportSummary, export_sweep
from tuning.export._runs import log_batch
from tuning.report import SECTIONS

# an lr that learns the colours in one epoch and one that cannot: ASHA must stop a trial
# (the reasoning is in tests/asha_check.py)
SPACE = f"""
task: task2
asha: {{max_epochs: 3, grace_period: 1, reduction_factor: 2}}
fixed: {{data.image_size: 32, model.channels: 8}}
params:
  optim.lr: {{choice: [{FROZEN_LR}, {LEARNING_LR}]}}
  model.stages: {{int: [2, 3]}}
"""
SEED = 0  # its proposals put a frozen trial after a learner
NAME = "exp-sweep"
TOP = 2
EVAL_FILES = {
    "confusion_matrix.png", "learning_curve.png", "classification_report.txt",
    "classification_report.json", "config.json",
}


@pytest.fixture(scope="module")
def server_launch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PendingServer]:
    # launched first so it starts up while the sweep trains
    with launch_mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as pending:
        yield pending


@pytest.fixture(scope="module")
def sweep(server_launch: PendingServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny real sweep (4 trials, one at a time, ASHA); returns its storage folder."""
    import ray

    from tuning.sweep import SweepOptions, init_ray, run_sweep

    tmp = tmp_path_factory.mktemp("export_sweep")
    data = make_colour_data(tmp / "colours")
    space = tmp / "tiny.yaml"
    space.write_text(SPACE)
    storage = str(tmp / "runs")
    init_ray(None, num_cpus=2)  # the product's own Ray settings, as in conftest's ray_session
    try:
        run_sweep(SweepOptions(space=str(space), data=str(data), samples=4, name=NAME, storage=storage,
                               seed=SEED, max_concurrent=1))
    finally:
        ray.shutdown()  # the rest of the module needs the CPUs, not Ray
    return storage


@pytest.fixture(scope="module")
def server(server_launch: PendingServer, sweep: str) -> MlflowServer:
    return server_launch.ready()


@pytest.fixture(scope="module")
def frame(sweep: str) -> pd.DataFrame:
    return results.Sweep.open(NAME, sweep).trials()


@pytest.fixture(scope="module")
def exported(server: MlflowServer, sweep: str) -> ExportSummary:
    return export_sweep(NAME, sweep, server.uri, top=TOP)


@pytest.fixture(scope="module")
def client(server: MlflowServer) -> MlflowClient:
    return MlflowClient(tracking_uri=server.uri)


def _trial_runs(client: MlflowClient, summary: ExportSummary) -> list[mlflow.entities.Run]:
    return client.search_runs(
        [summary.experiment_id], f"tags.`mlflow.parentRunId` = '{summary.parent_run_id}'", max_results=1000
    )


def _logged_models(client: MlflowClient, summary: ExportSummary, run_id: str) -> list[object]:
    return list(client.search_logged_models([summary.experiment_id], filter_string=f"source_run_id = '{run_id}'"))


def test_one_parent_with_a_nested_run_per_trial(
    exported: ExportSummary, client: MlflowClient, frame: pd.DataFrame
) -> None:
    exp = client.get_experiment(exported.experiment_id)
    assert exp.name == "poketune-task2"
    parent = client.get_run(exported.parent_run_id)
    assert parent.data.tags[Tags.SWEEP] == NAME
    assert parent.data.tags[Tags.KIND] == "sweep"
    assert "mlflow.parentRunId" not in parent.data.tags
    assert parent.data.params["max_epochs"] == "3"
    assert parent.data.params["samples"] == "4"
    assert parent.data.metrics["best_val_f1"] == pytest.approx(frame["best_val_f1"].max())
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "search_space.yaml", "results.csv", "data_check.json"
    }
    # the data check the sweep ran first reaches MLflow with it
    check = json.loads(Path(client.download_artifacts(parent.info.run_id, "data_check.json")).read_text())
    data = Path(results.Sweep.open(NAME, str(Path(frame["trial_dir"][0]).parents[1])).meta.data)
    assert check["images"]["train"] == len(pd.read_csv(data / "train.csv"))
    assert set(check["summary"]) >= {"unreadable", "train_test_pairs", "label_conflicts"}
    runs = _trial_runs(client, exported)
    assert sorted(r.data.tags[Tags.TRIAL_ID] for r in runs) == sorted(frame["trial_id"])
    assert exported.created == len(frame) and exported.updated == 0
    all_runs = client.search_runs([exported.experiment_id])
    assert len(all_runs) == len(frame) + 1


def test_the_sweeps_report_is_on_its_parent_run(exported: ExportSummary, client: MlflowClient, frame: pd.DataFrame) -> None:
    def files(path: str) -> set[str]:
        out: set[str] = set()
        for a in client.list_artifacts(exported.parent_run_id, path):
            out |= files(a.path) if a.is_dir else {a.path}
        return out

    logged = files("report")
    assert "report/report.html" in logged
    assert sorted(exported.report_artifacts) == sorted(f.removeprefix("report/") for f in logged)
    page = Path(client.download_artifacts(exported.parent_run_id, "report/report.html")).read_text()
    assert all(f"<td>{tid}</td>" in page for tid in frame["trial_id"])
    if shutil.which("chromium") or os.environ.get("CI"):  # PNGs need the browser: CI installs it
        assert {f"report/png/{s}.png" for s in SECTIONS} <= logged
    # and the error report of the best trial (poketune errors)
    assert files("errors") >= {f"errors/{f}" for f in ("per_class.csv", "label_issues.csv", "label_issues.png", "confusion_matrix.png")}


def test_the_experiment_opens_on_its_runs_in_the_mlflow_ui(exported: ExportSummary, client: MlflowClient) -> None:
    """MLflow 3.17's UI lands an experiment on its GenAI overview; the URL poketune prints
    opens the runs view, checked in a real browser."""
    from browser import visit

    exp = client.get_experiment(exported.experiment_id)
    assert exp.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert exported.url and exported.url.startswith(client.tracking_uri)
    runs_page = exported.url.rsplit("/runs/", 1)[0] + "/runs?workflowType=machine_learning"
    seen = visit(
        runs_page,
        ready=f"document.body && document.body.innerText.includes({NAME!r})",
        probe="document.body.innerText",
        screenshot=Path(__file__).resolve().parents[2] / "test-artifacts" / "mlflow_runs.png",
    )
    assert f"/#/experiments/{exported.experiment_id}/runs" in seen.location
    assert "matching run" in seen.probe  # the runs table's footer, not the GenAI overview
    assert "Traces" not in seen.probe.split(NAME)[0].split("Runs")[-1]  # the Runs tab is the one open
    assert seen.errors == []


def test_trial_runs_have_params_history_and_tags(
    exported: ExportSummary, client: MlflowClient, frame: pd.DataFrame, sweep: str
) -> None:
    by_trial = {r.data.tags[Tags.TRIAL_ID]: r for r in _trial_runs(client, exported)}
    assert (frame["status"] == "stopped_asha").any(), "the seeded tiny sweep should have ASHA-stopped trials"
    # certain by construction (tests/asha_check.py): the statuses are ASHA's rule replayed
    order = trial_order(Path(sweep) / NAME)
    replay = asha_replay(results.Sweep.open(NAME, sweep).history(), order, max_epochs=3, grace=1, rf=2)
    assert any(replay.values()), f"seed {SEED} no longer runs a frozen trial after a learner: {order}"
    assert dict(zip(frame["trial_id"], frame["status"], strict=True)) == {
        t: "stopped_asha" if e else "completed" for t, e in replay.items()
    }
    for row in frame.to_dict("records"):
        run = by_trial[row["trial_id"]]
        tags, params = run.data.tags, run.data.params
        assert tags[Tags.STATUS] == row["status"]
        assert tags[Tags.SWEEP] == NAME and tags[Tags.TASK] == "task2" and tags[Tags.DATA_HASH]
        if row["status"] == "stopped_asha":
            assert tags[Tags.ASHA_STOP_EPOCH] == str(row["stop_epoch"])
            assert run.info.status == "FINISHED"
        else:
            assert Tags.ASHA_STOP_EPOCH not in tags
        # searched params with their sampled values, and the rest of the flat config
        assert float(params["optim.lr"]) == pytest.approx(row["optim.lr"])
        assert params["model.stages"] == str(row["model.stages"])
        assert params["data.image_size"] == "32" and params["model.channels"] == "8"
        for key in ("val_f1", "train_loss", "val_loss", "lr", "epoch_time_s"):
            hist = client.get_metric_history(run.info.run_id, key)
            assert sorted(m.step for m in hist) == list(range(1, row["epochs"] + 1)), key
        assert run.data.metrics["best_val_f1"] == pytest.approx(row["best_val_f1"])


def test_top_trials_have_models_and_evaluation_artifacts(
    exported: ExportSummary, client: MlflowClient, frame: pd.DataFrame, tmp_path: Path
) -> None:
    top_ids = list(frame["trial_id"][:TOP])
    assert exported.models_logged == top_ids
    best_run = exported.trial_runs[top_ids[0]]
    files = {a.path for a in client.list_artifacts(best_run)}
    assert files >= EVAL_FILES | {"checkpoint"}
    assert [a.path for a in client.list_artifacts(best_run, "checkpoint")] == [CHECKPOINT_ARTIFACT]
    local = Path(client.download_artifacts(best_run, "", str(tmp_path)))
    assert (local / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (local / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((local / "classification_report.json").read_text())
    sweep_meta = results.Sweep.open(NAME, str(Path(frame["trial_dir"][0]).parents[1])).meta
    assert set(sweep_meta.class_names) <= set(report)
    assert "macro avg" in (local / "classification_report.txt").read_text()
    assert torch.load(local / CHECKPOINT_ARTIFACT, weights_only=True)["best_model"]

    [model_info] = _logged_models(client, exported, best_run)
    with tracking(client.tracking_uri):
        model = mlflow.pyfunc.load_model(f"runs:/{best_run}/model")
    # the same pyfunc a retrain registers (one member here): normalised float N×C×H×W in,
    # the trial's best weights' probabilities out
    assert model.metadata.metadata["members"] == 1
    assert model.metadata.metadata["class_names"] == sweep_meta.class_names
    assert [p.name for p in model.metadata.signature.params] == ["tta"]
    x = torch.randn(5, 4, 32, 32)
    ckpt = load_checkpoint(local / CHECKPOINT_ARTIFACT)
    with torch.no_grad():
        expected = ckpt.build_model(best=True)(x).softmax(-1).numpy()
    probs = model.predict(x.numpy())
    assert probs.shape == (5, len(sweep_meta.class_names)) == (5, 3)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    assert model_info.name == "model"

    for tid in frame["trial_id"][TOP:]:  # below the top K: params and metrics only
        run_id = exported.trial_runs[tid]
        assert client.list_artifacts(run_id) == []
        assert _logged_models(client, exported, run_id) == []


def test_reexport_updates_in_place(exported: ExportSummary, client: MlflowClient, sweep: str, server: MlflowServer) -> None:
    before = {r.info.run_id for r in client.search_runs([exported.experiment_id])}
    again = export_sweep(NAME, sweep, server.uri, top=TOP, report=False)
    assert again.parent_run_id == exported.parent_run_id
    assert again.trial_runs == exported.trial_runs
    assert (again.created, again.updated) == (0, len(exported.trial_runs))
    assert again.models_logged == [] and again.models_unchanged == exported.models_logged
    assert {r.info.run_id for r in client.search_runs([exported.experiment_id])} == before
    frame = results.Sweep.open(NAME, sweep).trials()
    for row in frame.to_dict("records"):
        run_id = again.trial_runs[row["trial_id"]]
        assert len(client.get_metric_history(run_id, "val_f1")) == row["epochs"]
        assert len(client.get_metric_history(run_id, "best_val_f1")) == 1
        assert len(_logged_models(client, again, run_id)) == (1 if row["trial_id"] in again.models_unchanged else 0)
    assert len(client.get_metric_history(again.parent_run_id, "best_val_f1")) == 1


def test_reexport_appends_new_epochs_and_replaces_a_stale_model(
    sweep: str, server: MlflowServer, client: MlflowClient, tmp_path: Path
) -> None:
    """Exported while a trial had reported one epoch, then again when it had all three."""
    full_frame = results.Sweep.open(NAME, sweep).trials()
    tid = str(full_frame[full_frame["epochs"] == 3]["trial_id"].iloc[0])
    storage = tmp_path / "copy"
    shutil.copytree(Path(sweep) / NAME, storage / NAME)
    result_file = storage / NAME / tid / "result.json"
    full = result_file.read_text()
    result_file.write_text(full.splitlines()[0] + "\n")

    first = export_sweep(NAME, str(storage), server.uri, experiment="incremental", all_trials=True, report=False)
    run_id = first.trial_runs[tid]
    assert set(first.trial_runs) == set(full_frame["trial_id"]) and tid in first.models_logged
    assert [m.step for m in client.get_metric_history(run_id, "val_f1")] == [1]
    [old_model] = _logged_models(client, first, run_id)

    result_file.write_text(full)
    second = export_sweep(NAME, str(storage), server.uri, experiment="incremental", all_trials=True, report=False)
    # only the trial that trained further gets a new model; the others' are unchanged
    assert second.trial_runs[tid] == run_id and second.models_logged == [tid]
    assert sorted(second.models_unchanged) == sorted(set(first.models_logged) - {tid})
    hist = sorted(client.get_metric_history(run_id, "val_f1"), key=lambda m: m.step)
    assert [m.step for m in hist] == [1, 2, 3]
    expected = results.Sweep.open(NAME, str(storage)).history().query("trial_id == @tid")["val_f1"]
    assert [m.value for m in hist] == pytest.approx(expected.tolist())
    [new_model] = _logged_models(client, second, run_id)  # the stale model is gone
    assert new_model.model_id != old_model.model_id
    assert client.get_run(run_id).data.tags[Tags.MODEL_EPOCHS] == "3"
    assert client.get_run(run_id).info.status == "FINISHED"


def test_a_server_killed_mid_export_is_one_error_and_the_rerun_completes_without_duplicates(
    sweep: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tuning.export

    frame = results.Sweep.open(NAME, sweep).trials()
    real = tuning.export.log_trial_model
    calls: list[str] = []
    with launch_mlflow_server(tmp_path / "store") as pending:
        first = pending.ready()

        def log_then_die(*args: Any, **kwargs: Any) -> None:
            calls.append(args[2])  # the trial run's id
            if len(calls) == 2:  # one model is in; the server dies like a crashed host
                os.killpg(pending.proc.pid, signal.SIGKILL)
                pending.proc.wait()
            real(*args, **kwargs)

        monkeypatch.setattr(tuning.export, "log_trial_model", log_then_die)
        t0 = time.monotonic()
        with pytest.raises(MlflowUnreachableError) as err:
            export_sweep(NAME, sweep, first.uri, top=TOP)
        # MLflow's own retries would take ~4 minutes to give up
        assert time.monotonic() - t0 < 60
    message = str(err.value)
    assert "\n" not in message and f"MLflow tracking server at {first.uri} is unreachable" in message
    assert "mid-export" in message and f"poketune export {NAME} --storage" in message
    monkeypatch.setattr(tuning.export, "log_trial_model", real)

    port = int(first.uri.rsplit(":", 1)[1])
    # back where it was, with the same database and artifacts
    with launch_mlflow_server(tmp_path / "store", port=port) as pending:
        again = pending.ready()
        done = export_sweep(NAME, sweep, again.uri, top=TOP)
        client = MlflowClient(tracking_uri=again.uri)
        [exp] = client.search_experiments(filter_string=f"name = '{done.experiment_name}'")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        # one parent and one run per trial: nothing from the first attempt is doubled
        assert len(runs) == len(frame) + 1
        assert sorted(r.data.tags[Tags.TRIAL_ID] for r in runs if Tags.TRIAL_ID in r.data.tags) == sorted(frame["trial_id"])
        best = frame.sort_values("best_val_f1", ascending=False)["trial_id"].head(TOP).tolist()
        assert len(calls) == 2 and sorted(done.models_logged + done.models_unchanged) == sorted(best)
        for row in frame.to_dict("records"):
            run_id = done.trial_runs[row["trial_id"]]
            steps = [m.step for m in client.get_metric_history(run_id, "val_f1")]
            assert sorted(steps) == list(range(1, row["epochs"] + 1)), (row["trial_id"], steps)
            # the model the dead server half-took was replaced, not added to
            models = _logged_models(client, done, run_id)
            assert len(models) == (1 if row["trial_id"] in best else 0), row["trial_id"]


def test_unreachable_server_fails_fast_and_leaves_the_sweep_alone(sweep: str) -> None:
    folder = Path(sweep) / NAME
    snapshot = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(MlflowUnreachableError) as err:
        export_sweep(NAME, sweep, uri)
    assert time.monotonic() - t0 < 10
    msg = str(err.value)
    assert f"MLflow tracking server at {uri} is unreachable" in msg
    assert f"poketune export {NAME} --storage {sweep} --mlflow-uri {uri}" in msg
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == snapshot


def test_cli_unreachable_and_unknown_sweep(sweep: str, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    assert main(["export", NAME, "--storage", sweep, "--mlflow-uri", uri]) == 2
    assert "unreachable" in capsys.readouterr().err
    with pytest.raises(results.SweepNotFoundError, match=NAME):
        export_sweep("no-such-sweep", sweep, uri)
    assert main(["export", "no-such-sweep", "--storage", sweep, "--mlflow-uri", uri]) == 2
    assert NAME in capsys.readouterr().err  # the error lists the sweeps that do exist


def test_cli_export_to_sqlite_store(sweep: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{db}"
    assert main(["export", NAME, "--storage", sweep, "--mlflow-uri", uri, "--top", "1"]) == 0
    assert "4 created" in capsys.readouterr().out
    assert db.is_file()
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("poketune-task2")
    assert exp.artifact_location == (tmp_path / "store" / "mlartifacts" / "poketune-task2").as_uri()
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 5
    best = results.Sweep.open(NAME, sweep).trials()["trial_id"][0]
    [best_run] = [r for r in runs if r.data.tags.get(Tags.TRIAL_ID) == best]
    art_dir = tmp_path / "store" / "mlartifacts" / "poketune-task2" / best_run.info.run_id / "artifacts"
    assert {p.name for p in art_dir.iterdir()} >= EVAL_FILES
    models = client.search_logged_models([exp.experiment_id])
    assert [m.source_run_id for m in models] == [best_run.info.run_id]


def test_log_batch_respects_mlflow_limits(server: MlflowServer, client: MlflowClient) -> None:
    exp = client.create_experiment("limits")
    run_id = client.create_run(exp).info.run_id
    now = int(time.time() * 1000)
    metrics = [("m", float(i), now, i) for i in range(2500)] + [("nan", float("nan"), now, 0)]
    log_batch(
        client, run_id, metrics=metrics,
        params={f"p{i}": str(i) for i in range(150)}, tags={f"t{i}": str(i) for i in range(150)},
    )
    run = client.get_run(run_id)
    assert len(run.data.params) == 150
    assert sum(k.startswith("t") for k in run.data.tags) == 150
    assert len(client.get_metric_history(run_id, "m")) == 2500
    assert "nan" not in run.data.metrics


def test_tracking_uri_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalize_tracking_uri("sqlite:///sub/mlflow.db") == f"sqlite:///{tmp_path}/sub/mlflow.db"
    assert normalize_tracking_uri("runs.db") == f"sqlite:///{tmp_path}/runs.db"
    assert normalize_tracking_uri("http://host:5000/") == "http://host:5000"
    with pytest.raises(ValueError, match="plain path"):
        normalize_tracking_uri("some/folder")
    assert artifact_location_for("sqlite:///a/m.db", "poketune task2") == (tmp_path / "a" / "mlartifacts" / "poketune_task2").as_uri()
    assert artifact_location_for("http://host:5000", "x") is None
    # a SQLite store's folder is created; an unwritable one is refused with the reason
    assert ensure_reachable("sqlite:///new/dir/m.db") == f"sqlite:///{tmp_path}/new/dir/m.db"
    assert (tmp_path / "new" / "dir").is_dir()
    # a folder under a regular file cannot be created, not even by root (CI runs as root)
    (tmp_path / "a_file").write_text("not a folder")
    blocked = tmp_path / "a_file" / "sub"
    with pytest.raises(MlflowUnreachableError, match=rf"cannot create {blocked}: .*; try later"):
        ensure_reachable(f"sqlite:///{blocked}/m.db", hint="try later")
    assert (tmp_path / "a_file").read_text() == "not a folder"
    # a folder that exists but is not writable (permissions bind everyone but root)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not os.access(locked, os.W_OK):
        with pytest.raises(MlflowUnreachableError, match=r"not writable.*; try later"):
            ensure_reachable(f"sqlite:///{locked}/m.db", hint="try later")


def test_every_results_status_has_an_mlflow_run_status() -> None:
    """A trial status the results frame can hold but export cannot map would end the export
    with a KeyError (it did for the budget's stopped_budget)."""
    from tuning.export import RUN_STATUS
    from tuning.results import STATUSES

    assert set(STATUSES) == set(RUN_STATUS)
    assert RUN_STATUS["stopped_budget"] == "FINISHED"
