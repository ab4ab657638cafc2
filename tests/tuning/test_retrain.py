"""Retraining a real (tiny) sweep's best trial through TorchTrainer and registering it in a
real ``mlflow server``; submitting from the registry.

Two real retrains (three TorchTrainer runs) make registered versions 1 (one seed) and 2
(a two-seed ensemble through the CLI); the other tests read what they left behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow_server import MlflowServer, free_port, mlflow_server_fixture

from training.checkpoint import load_checkpoint
from training.config import ConfigError, DataConfig, TrainConfig
from training.data import Preprocessing, load_split, normalize_batch
from training.engine import LocalReporter, fit
from tuning import results
from tuning._mlflow import MlflowUnreachableError, tracking
from tuning.cli import main
from tuning.predict import ModelURIError, load_predictor
from tuning.retrain import (
    MEMBER_RESERVE_S,
    RetrainResult,
    SourceTrial,
    distinct_trials,
    epochs_within,
    near_the_best,
    retrain,
    retrain_config,
    select_trial,
)
from tuning.sweep import SweepOptions, run_sweep

SPACE = """
task: task2
asha: {max_epochs: 3, grace_period: 1, reduction_factor: 2}
fixed: {data.image_size: 32, model.channels: 8}
params:
  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
  model.stages: {int: [2, 3]}
"""
MODEL = "poketune-task2"

mlflow_server = mlflow_server_fixture()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, task2_data: Path, ray_session: None) -> tuple[str, str]:
    tmp = tmp_path_factory.mktemp("retrain_sweep")
    (tmp / "tiny.yaml").write_text(SPACE)
    storage = str(tmp / "runs")
    run_sweep(SweepOptions(space=str(tmp / "tiny.yaml"), data=str(task2_data), samples=4, name="s", storage=storage))
    return "s", storage


@pytest.fixture(scope="module")
def registered(sweep: tuple[str, str], mlflow_server: MlflowServer) -> tuple[RetrainResult, str]:
    """Version 1: retrain() with one seed; version 2: the CLI with --seeds 2 --epochs 1."""
    first = retrain(*sweep, mlflow_uri=mlflow_server.uri)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["retrain", sweep[0], "--storage", sweep[1], "--mlflow-uri", mlflow_server.uri,
                   "--seeds", "2", "--epochs", "1"])
    assert rc == 0, out.getvalue()
    return first, out.getvalue()


def _version_tags(uri: str, version: int) -> dict[str, str]:
    with tracking(uri) as client:
        return dict(client.get_model_version(MODEL, str(version)).tags)


# ---------------------------------------------------------------------------------- selection
def test_best_trial_is_the_max_val_f1_and_a_named_one_can_be_chosen(sweep: tuple[str, str]) -> None:
    frame = results.Sweep.open(*sweep).trials()
    ok = frame[frame["status"] != "errored"]
    best = ok.loc[ok["best_val_f1"].idxmax()]
    src = select_trial(results.Sweep.open(*sweep))
    assert src.trial_id == best["trial_id"]
    assert src.best_value == pytest.approx(best["best_val_f1"])
    assert src.best_epoch == best["best_epoch"]
    # the config is the one the trial trained with (its checkpoint's), searched values included
    assert src.config == load_checkpoint(Path(best["checkpoint"]) / "checkpoint.pt").config
    assert src.config.optim.lr == pytest.approx(best["optim.lr"])
    assert src.config.model.stages == best["model.stages"]

    other = str(frame["trial_id"].iloc[-1])
    assert select_trial(results.Sweep.open(*sweep), other).trial_id == other
    with pytest.raises(ValueError, match=rf"no trial 'nope'.*{frame['trial_id'].iloc[0]}"):
        select_trial(results.Sweep.open(*sweep), "nope")


def test_retrain_config_trains_on_everything_for_the_given_epochs(sweep: tuple[str, str]) -> None:
    src = select_trial(results.Sweep.open(*sweep))
    cfg = retrain_config(src, epochs=7, seed=11, num_threads=1)
    assert (cfg.optim.epochs, cfg.early_stop.patience, cfg.seed) == (7, 0, 11)
    # everything the sweep searched or fixed stays
    assert cfg.optim.lr == src.config.optim.lr
    assert cfg.model == src.config.model
    assert cfg.data == src.config.data


def test_unreachable_mlflow_fails_before_training(sweep: tuple[str, str]) -> None:
    def runs() -> list[Path]:
        return sorted((Path(sweep[1]) / sweep[0] / "retrain").glob("*"))

    before = runs()
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MlflowUnreachableError, match=dead):
        retrain(*sweep, mlflow_uri=dead)
    assert runs() == before


def _fit_in_process(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Replace Ray Train's start-up with ``fit`` in this process, handing back a Ray
    checkpoint folder as TorchTrainer would; returns the (config, prepared data) of each run."""
    import ray
    import ray.train

    import training.ray_worker as rw

    runs: list[tuple[Any, Any]] = []

    def in_process(
        cfg: Any, data: Any, *, storage_path: str, name: str, deadline: float | None = None,
        init_weights: Any = None, **_: Any,
    ) -> Any:  # fmt: skip
        prepared = ray.get(data)
        runs.append((cfg, prepared))
        rep = LocalReporter(out_dir=Path(storage_path) / name / "checkpoint_000000")
        fit(cfg, prepared, rep, deadline=deadline, init_weights=init_weights)
        folder = ray.train.Checkpoint.from_directory(str(rep.out_dir))
        return SimpleNamespace(checkpoint=folder, path=str(Path(storage_path) / name))

    monkeypatch.setattr(rw, "run_torch_trainer", in_process)
    return runs


def test_without_mlflow_checkpoints_are_written_locally(
    sweep: tuple[str, str], task2_data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The no-registry path. Only Ray Train's start-up is replaced: ``fit`` runs in process
    and hands back a Ray checkpoint folder, so retrain's own reading, trimming and writing of
    the checkpoint are what is tested (the TorchTrainer path is what the registered versions
    below go through)."""
    runs = _fit_in_process(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # must not be used
    assert main(["retrain", sweep[0], "--storage", sweep[1], "--epochs", "1", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "nothing registered" in out
    (cfg0, data0), (cfg1, _) = runs
    n_train, n_val = len(data0.y_train), len(data0.y_val)
    assert (n_train, n_val) == (len(pd.read_csv(task2_data / "train.csv")), 0)
    assert (cfg0.seed, cfg1.seed) == (0, 1)
    ckpts = [Path(line.split("checkpoint:")[1].strip()) for line in out.splitlines() if "checkpoint:" in line]
    assert len(ckpts) == 2
    for ckpt in ckpts:
        assert ckpt.is_file()
        assert ckpt.is_relative_to(Path(sweep[1]) / sweep[0] / "retrain")
        state = load_checkpoint(ckpt)
        # inference checkpoints only: the best weights, no optimizer state
        assert state.optimizer == {} and state.best_model is None
        assert state.config.optim.epochs == 1


def test_retrain_set_changes_the_refit_config_and_nothing_else(
    sweep: tuple[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sweep ranked at 32 px, its best trial refitted at 24 px: the data the member trains
    on, its config and its checkpoint's preprocessing all say 24; every other key is the
    trial's (``fit`` in process, as above)."""
    trained = _fit_in_process(monkeypatch)
    src = select_trial(results.Sweep.open(*sweep))
    assert src.config.data.image_size == 32
    assert main(["retrain", sweep[0], "--storage", sweep[1], "--epochs", "1", "--set", "data.image_size=24"]) == 0
    out = capsys.readouterr().out
    assert "with --set data.image_size=24 on the trials' configs" in out
    ((cfg, data),) = trained
    assert tuple(data.x_train.shape[-2:]) == (24, 24) and cfg.data.image_size == 24
    changed = {k for k, v in cfg.to_flat().items() if src.config.to_flat()[k] != v}
    assert changed <= {"data.image_size", "optim.epochs", "seed", "num_threads", "early_stop.patience",
                       "early_stop.f1_window", "early_stop.monitor"}
    ckpt = Path(next(line.split("checkpoint:")[1].strip() for line in out.splitlines() if "checkpoint:" in line))
    state = load_checkpoint(ckpt)
    assert state.config.data.image_size == 24 and state.preprocessing.image_size == 24
    # the keys a retrain decides, a refit that trains nothing, a key that does not exist
    for extra, message in [
        (["--set", "optim.epochs=3"], "--set optim.epochs: retrain sets it itself; use --epochs"),
        (["--set", "early_stop.patience=3"], "no validation split to stop on"),
        (["--no-refit", "--set", "data.image_size=24"], "--set, --time-budget and --from-trial-weights do not apply"),
        (["--set", "data.imagesize=24"], "data.imagesize"),
    ]:
        assert main(["retrain", sweep[0], "--storage", sweep[1], *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert len(trained) == 1  # none of them trained anything


def test_from_trial_weights_refits_from_the_trials_best_weights(
    sweep: tuple[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--from-trial-weights``: the member starts from the best trial's best weights (at a rate of ~0
    one epoch leaves them where they were; the same refit from the config's initialisation
    ends far from them) and records the trial epoch it started from. A ``--set`` that
    changes the architecture fails in one line before anything trains (``fit`` in process)."""
    trained = _fit_in_process(monkeypatch)
    src = select_trial(results.Sweep.open(*sweep))
    assert src.checkpoint is not None
    best = load_checkpoint(src.checkpoint).best_weights
    learned = [k for k in best if "running_" not in k and "num_batches" not in k]
    still = {"optim.lr": 1e-12}
    res = retrain(*sweep, mlflow_uri=None, epochs=1, overrides=still, from_trial_weights="all")
    assert res.from_trial_weights == "all" and [m.started_from_epoch for m in res.members] == [src.best_epoch]
    warm = load_checkpoint(res.checkpoints[0]).model
    for key in learned:
        torch.testing.assert_close(warm[key], best[key], atol=1e-6, rtol=0)
    cold = load_checkpoint(retrain(*sweep, mlflow_uri=None, epochs=1, overrides=still).checkpoints[0]).model
    assert any(not torch.allclose(cold[k], best[k], atol=1e-3) for k in learned)
    # the backbone's alone (the CLI's --from-trial-weights backbone): the head is the cold refit's
    assert main(["retrain", sweep[0], "--storage", sweep[1], "--epochs", "1", "--set", "optim.lr=1e-12", "--from-trial-weights", "backbone"]) == 0
    out = capsys.readouterr().out
    assert "weights (the backbone's; a fresh head)" in out, out
    body = load_checkpoint(re.search(r"checkpoint: (\S+)", out).group(1)).model  # type: ignore[union-attr]
    for key in learned:
        torch.testing.assert_close(body[key], (cold if key.startswith("head.") else best)[key], atol=1e-6, rtol=0)
    assert len(trained) == 3
    for extra, message in [
        (["--set", "model.channels=16"], f"--from-trial-weights: trial {src.trial_id}'s checkpoint {src.checkpoint}: its weights do not fit this model: shape mismatches"),
        (["--no-refit"], "--time-budget and --from-trial-weights do not apply"),
        (["--from-trial-weights", "head"], "--from-trial-weights: 'head' is not one of all, backbone"),
    ]:
        assert main(["retrain", sweep[0], "--storage", sweep[1], "--from-trial-weights", *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert len(trained) == 3  # none of them trained anything


def test_epochs_within_splits_what_is_left_among_the_members() -> None:
    reserve = MEMBER_RESERVE_S
    # one member, 100 s left, 5-s epochs: (100 − reserve) // 5, capped at the 10 asked
    assert epochs_within(10, 5.0, 100.0, 1) == min(10, int((100.0 - reserve) // 5.0))
    assert epochs_within(30, 5.0, 100.0, 1) == int((100.0 - reserve) // 5.0)
    # two members share it: each gets half, less its own start-up
    assert epochs_within(30, 5.0, 100.0, 2) == int((50.0 - reserve) // 5.0)
    # not one epoch fits the share (or the time is already spent)
    assert epochs_within(10, 40.0, 100.0, 2) == 0
    assert epochs_within(10, 5.0, -3.0, 1) == 0


def test_time_an_epoch_times_the_config_on_a_few_batches_and_leaves_the_process_as_it_was(
    sweep: tuple[str, str], task2_data: Path
) -> None:
    from training.engine import prepare_data
    from training.epoch_time import time_an_epoch

    src = select_trial(results.Sweep.open(*sweep))
    cfg = retrain_config(src, epochs=9, seed=0, num_threads=1)
    data, _ = prepare_data(str(task2_data), cfg, train_on_all=True)
    before = data.x_train.copy()
    threads = torch.get_num_threads()
    timed = time_an_epoch(cfg, data, batches=2)
    assert timed.train_images == len(data.y_train)
    assert timed.timed_images == min(len(data.y_train), 2 * cfg.optim.batch_size)
    assert 0.0 < timed.seconds < float("inf")
    assert torch.get_num_threads() == threads  # Fitter set 1 thread process-wide for the probe
    assert np.array_equal(data.x_train, before)


def test_retrain_time_budget_cuts_the_epochs_to_what_fits_before_training(
    sweep: tuple[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An epoch is "timed" at 1000 s (the timing replaced, the training real and in process):
    a 2515-s budget holds 2 of the 5 epochs asked plus one start-up, so the member trains 2
    and its config (which sizes the schedule) says 2; a budget that holds none trains nothing."""
    import training.epoch_time as et

    trained = _fit_in_process(monkeypatch)
    monkeypatch.setattr(et, "time_an_epoch", lambda cfg, data, **_: et.EpochTime(1000.0, 16, len(data.y_train)))
    assert main(["retrain", sweep[0], "--storage", sweep[1], "--epochs", "5", "--time-budget", "2515s"]) == 0
    out = capsys.readouterr().out
    ((cfg, _),) = trained
    assert cfg.optim.epochs == 2
    ckpt = Path(next(line.split("checkpoint:")[1].strip() for line in out.splitlines() if "checkpoint:" in line))
    state = load_checkpoint(ckpt)
    assert state.config.optim.epochs == 2 and len(state.history) == 2
    assert "time budget 2515 s for the refit:" in out and "2 of the 5 epochs asked fit" in out
    assert ": 2 epochs, final train_loss" in out
    # one epoch does not fit: one line before anything trains
    assert main(["retrain", sweep[0], "--storage", sweep[1], "--epochs", "5", "--time-budget", "15m"]) == 2
    err = capsys.readouterr().err
    assert "--time-budget 900s: one epoch ≈ 1000.0 s" in err and "not one epoch fits" in err
    assert "Traceback" not in err and len(trained) == 1
    # and it is a refit's budget: the trials' own weights train nothing
    assert main(["retrain", sweep[0], "--storage", sweep[1], "--no-refit", "--time-budget", "5m"]) == 2
    assert "--time-budget and --from-trial-weights do not apply" in capsys.readouterr().err


def test_retrain_time_budget_holds_when_the_epochs_run_slower_than_timed(
    sweep: tuple[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An epoch "timed" at 1 ms plans all 400 epochs asked into a 4-s budget (reserves set
    to 0); the real epochs take far longer, so the member's deadline ends it early, the
    registered member and its checkpoint say how many epochs it trained, and the call ends
    near its budget instead of after 400 epochs (the task3 refit overran by 82 s this way)."""
    import time

    import training.epoch_time as et
    import tuning.retrain as rt

    trained = _fit_in_process(monkeypatch)
    monkeypatch.setattr(et, "time_an_epoch", lambda cfg, data, **_: et.EpochTime(0.001, 16, len(data.y_train)))
    monkeypatch.setattr(rt, "MEMBER_RESERVE_S", 0.0)
    monkeypatch.setattr(rt, "AFTER_TRAINING_RESERVE_S", 0.0)
    t0 = time.monotonic()
    assert main(["retrain", sweep[0], "--storage", sweep[1], "--epochs", "400", "--time-budget", "4s"]) == 0
    wall = time.monotonic() - t0
    out = capsys.readouterr().out
    ((cfg, _),) = trained
    assert cfg.optim.epochs == 400  # the plan: the timing said all of them fit
    ckpt = Path(next(line.split("checkpoint:")[1].strip() for line in out.splitlines() if "checkpoint:" in line))
    n = len(load_checkpoint(ckpt).history)
    assert 1 <= n < 400
    assert f"the deadline ended it after {n} of the 400 epochs planned" in out
    assert f"for {n} epochs, seeds [0]" in out
    assert wall < 4 + 30, wall  # not 400 epochs' worth; the slack is the retrain's own start-up


# ---------------------------------------------------------------------------------- registry
def test_first_retrain_is_version_1_trained_on_all_images(
    registered: tuple[RetrainResult, str], sweep: tuple[str, str], task2_data: Path, mlflow_server: MlflowServer
) -> None:
    first, _ = registered
    src = select_trial(results.Sweep.open(*sweep))
    assert (first.registered_name, first.version) == (MODEL, 1)
    assert first.model_uri == f"models:/{MODEL}/1"
    assert first.epochs == src.best_epoch and first.seeds == [0]
    for run_dir in first.run_dirs:
        assert Path(run_dir).parent == Path(sweep[1]).resolve() / sweep[0] / "retrain"
        assert Path(run_dir).name.endswith("-seed0")

    state = load_checkpoint(first.checkpoints[0])
    assert state.config.optim.epochs == src.best_epoch
    assert state.config.early_stop.patience == 0
    assert len(state.history) == src.best_epoch
    assert all(np.isnan(h["val_f1"]) for h in state.history)  # no validation split

    assert first.mlflow_run_id is not None
    with tracking(mlflow_server.uri) as client:
        run = client.get_run(first.mlflow_run_id)
        n_train = len(pd.read_csv(task2_data / "train.csv"))
        assert run.data.params["retrain.train_images"] == str(n_train)  # train + val
        assert run.data.params["optim.epochs"] == str(src.best_epoch)
        assert run.data.params["optim.lr"] == str(src.config.optim.lr)
        assert run.data.tags["source_trial_id"] == src.trial_id
        assert run.data.tags["sweep"] == sweep[0]
        losses = client.get_metric_history(first.mlflow_run_id, "train_loss")
        assert [m.step for m in losses] == list(range(1, src.best_epoch + 1))
        assert [m.value for m in losses] == pytest.approx([h["train_loss"] for h in state.history])
    assert _version_tags(mlflow_server.uri, 1)["seeds"] == "0"


def test_second_retrain_is_version_2_an_averaging_ensemble(
    registered: tuple[RetrainResult, str], mlflow_server: MlflowServer, task2_data: Path
) -> None:
    _, cli_out = registered
    assert f"models:/{MODEL}/2 (2-member ensemble)" in cli_out
    with tracking(mlflow_server.uri) as client:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))
    assert versions == [1, 2]
    assert _version_tags(mlflow_server.uri, 2)["seeds"] == "0,1"

    ensemble = load_predictor(f"models:/{MODEL}/2", mlflow_server.uri)
    assert len(ensemble.members) == 2
    files = [line.split("checkpoint:")[1].strip() for line in cli_out.splitlines() if "checkpoint:" in line]
    members = [load_predictor(f) for f in files]
    prep = members[0].preprocessing
    x = torch.as_tensor(_cached_images(task2_data, prep.image_size, prep.channels)[:6])
    x = x.permute(0, 3, 1, 2).contiguous()
    p0, p1 = (m.predict_proba(x) for m in members)
    assert not np.allclose(p0, p1, atol=1e-4)  # different seeds, different models
    np.testing.assert_allclose(ensemble.predict_proba(x), (p0 + p1) / 2, rtol=1e-5, atol=1e-6)

    # the pyfunc itself: normalised float input (the signature), averaged probabilities
    import mlflow.pyfunc

    with tracking(mlflow_server.uri):
        pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL}/2")
    xn = normalize_batch(x, Preprocessing.from_dict(ensemble.preprocessing.to_dict())).numpy()
    np.testing.assert_allclose(pyfunc.predict(xn), (p0 + p1) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pyfunc.unwrap_python_model().predict(None, x.numpy()), (p0 + p1) / 2, rtol=1e-5, atol=1e-6)
    meta = pyfunc.metadata.metadata
    assert meta["class_names"] == ensemble.class_names and meta["members"] == 2


def _cached_images(root: Path, size: int, channels: int) -> np.ndarray:
    """Decoded train images of the dataset at ``size`` px (the sweep cached them; other test
    modules may have cached other sizes of the same shared dataset)."""
    for path in sorted((root / ".poketune_cache").glob("train-*.npy")):
        images = np.load(path, mmap_mode="r")
        if images.shape[1:] == (size, size, channels):
            return np.asarray(images)
    raise AssertionError(f"no {size}px cache under {root}")


def test_submit_from_the_registry_uses_the_latest_version(
    registered: tuple[RetrainResult, str], mlflow_server: MlflowServer, task2_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sub.csv"
    assert main(["submit", "--model", f"models:/{MODEL}/latest", "--mlflow-uri", mlflow_server.uri,
                 "--data", str(task2_data), "--out", str(out)]) == 0
    sub = pd.read_csv(out, dtype=str)
    sample = pd.read_csv(task2_data / "sample_submission.csv", dtype=str)
    assert list(sub.columns) == list(sample.columns) and list(sub["id"]) == list(sample["id"])
    # the oracle, without the predictor or the registry: version 2 is the second retrain (two
    # seeds), so average the softmax of its two local checkpoints, decoded and normalised here
    _, cli_out = registered
    files = [line.split("checkpoint:")[1].strip() for line in cli_out.splitlines() if "checkpoint:" in line]
    members = [load_checkpoint(f) for f in files]
    assert len(members) == 2
    prep = members[0].preprocessing
    images = load_split(
        task2_data, DataConfig(image_size=prep.image_size, rgba=prep.rgba), "test",
        class_names=members[0].class_names, cache_dir=tmp_path / "cache",
    )
    x = torch.as_tensor(images.images).permute(0, 3, 1, 2).float() / 255
    x = (x - 0.5) / 0.5  # task2's "half" normalisation, alpha included
    with torch.no_grad():
        probs = sum(m.build_model()(x).softmax(-1) for m in members) / 2
    expected = [members[0].class_names[i] for i in probs.argmax(1)]
    assert set(sub["id"]) == set(images.ids)
    by_id = dict(zip(images.ids, expected, strict=True))
    assert list(sub["label"]) == [by_id[i] for i in sub["id"]]


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (f"models:/{MODEL}/7", r"versions \[1, 2\]"),
        ("models:/nope/1", f"no registered model named 'nope'.*{MODEL}"),
        ("runs:/0123456789abcdef0123456789abcdef/model", "Run .* not found"),
    ],
)
def test_unresolvable_model_uris_are_named(
    registered: tuple[RetrainResult, str], mlflow_server: MlflowServer, uri: str, message: str
) -> None:
    with pytest.raises(ModelURIError, match=message) as err:
        load_predictor(uri, mlflow_server.uri)
    assert uri in str(err.value)


def test_run_uri_resolves_the_runs_checkpoints(registered: tuple[RetrainResult, str], mlflow_server: MlflowServer) -> None:
    first, _ = registered
    pred = load_predictor(f"runs:/{first.mlflow_run_id}/model", mlflow_server.uri)
    local = load_predictor(str(first.checkpoints[0]))
    x = torch.randint(0, 256, (3, *(pred.preprocessing.channels, 32, 32)), dtype=torch.uint8)
    np.testing.assert_allclose(pred.predict_proba(x), local.predict_proba(x), rtol=1e-6)
    assert json.loads(json.dumps(pred.preprocessing.to_dict())) == local.preprocessing.to_dict()


def test_top_2_registers_an_ensemble_of_two_distinct_configs(
    registered: tuple[RetrainResult, str], sweep: tuple[str, str], task2_data: Path, mlflow_server: MlflowServer
) -> None:
    frame = results.Sweep.open(*sweep).trials()  # best first
    res = retrain(*sweep, mlflow_uri=mlflow_server.uri, top=2, epochs=1, registered_name="poketune-top2")
    assert [m.trial_id for m in res.members] == [str(t) for t in frame["trial_id"][:2]]
    a, b = (load_checkpoint(c) for c in res.checkpoints)
    assert a.config != b.config and a.config.optim.lr != b.config.optim.lr  # two configs, not seeds
    tags = dict(client_tags(mlflow_server.uri, "poketune-top2", res.version))
    assert json.loads(tags["members"]) == [{"trial_id": m.trial_id, "seed": 0, "epochs": 1} for m in res.members]

    # the registered model's probabilities are the members' mean, computed here from the two
    # checkpoints alone (their own weights, the "half" normalisation by hand)
    x = torch.as_tensor(_cached_images(task2_data, a.preprocessing.image_size, a.preprocessing.channels)[:5])
    x = x.permute(0, 3, 1, 2).contiguous()
    xf = (x.float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        expected = (a.build_model()(xf).softmax(-1) + b.build_model()(xf).softmax(-1)) / 2
    registered_model = load_predictor(res.model_uri or "", mlflow_server.uri)
    assert len(registered_model.members) == 2
    np.testing.assert_allclose(registered_model.predict_proba(x), expected.numpy(), rtol=1e-5, atol=1e-6)


def client_tags(uri: str, name: str, version: int | None) -> dict[str, str]:
    with tracking(uri) as client:
        return dict(client.get_model_version(name, str(version)).tags)


def test_vs_preset_trains_the_preset_once_on_the_sweeps_split(sweep: tuple[str, str]) -> None:
    """What tuning bought: the preset's own recipe (``poketune train --task task2``), on the
    sweep's data settings and seed, scored on the validation split the trials were scored on."""
    from training.tasks import preset_config

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["retrain", sweep[0], "--storage", sweep[1], "--epochs", "1", "--vs-preset"])
    assert rc == 0, out.getvalue()
    best = select_trial(results.Sweep.open(*sweep))
    line = next(ln for ln in out.getvalue().splitlines() if ln.startswith("preset task2 trained once"))
    ckpt_line = next(ln for ln in out.getvalue().splitlines() if ln.strip().startswith("preset checkpoint:"))
    ckpt = load_checkpoint(ckpt_line.split(":", 1)[1].strip())
    preset = preset_config("task2")
    # the preset's recipe, not the trial's: its optimiser, epochs and model; the sweep's data
    assert ckpt.config.optim == preset.optim and ckpt.config.model == preset.model
    assert ckpt.config.data == best.config.data and ckpt.config.seed == best.config.seed
    preset_best = max(h["val_f1"] for h in ckpt.history)
    assert f"val_f1 {preset_best:.4f}" in line and f"val_f1 {best.best_value:.4f}" in line
    assert f"({best.best_value - preset_best:+.4f} from tuning)" in line


def test_epochs_steps_keeps_the_trials_optimizer_steps_on_the_larger_set() -> None:
    from tuning.retrain import _epochs

    src = SimpleNamespace(best_epoch=10)
    assert _epochs(src, "best", 0.8) == 10  # each image as often as in the trial
    assert _epochs(src, "steps", 0.8) == 8  # 10 epochs of 80 % of the images = 8 of all
    assert _epochs(SimpleNamespace(best_epoch=1), "steps", 0.8) == 1
    assert _epochs(src, 3, 0.8) == 3


def test_no_refit_registers_the_trials_own_best_weights(
    sweep: tuple[str, str], mlflow_server: MlflowServer, task2_data: Path
) -> None:
    frame = results.Sweep.open(*sweep).trials()
    top = [str(t) for t in frame["trial_id"][:2]]
    res = retrain(*sweep, mlflow_uri=mlflow_server.uri, top=2, refit=False, registered_name="poketune-norefit")
    assert [m.trial_id for m in res.members] == top and not res.refit
    for member, path, row in zip(res.members, res.checkpoints, frame.head(2).to_dict("records"), strict=True):
        trial_ckpt = load_checkpoint(next(Path(row["trial_dir"]).glob("checkpoint_*/checkpoint.pt")))
        kept = load_checkpoint(path)
        # the weights of the trial's best epoch, untouched, and the epoch it says
        assert member.epochs == trial_ckpt.best_epoch == row["best_epoch"]
        for key, value in trial_ckpt.best_weights.items():
            assert torch.equal(kept.model[key], value), key
    assert res.run_dirs == [str(Path(p)) for p in res.run_dirs] and all("checkpoint_" in d for d in res.run_dirs)
    tags = client_tags(mlflow_server.uri, "poketune-norefit", res.version)
    assert tags["refit"] == "false" and json.loads(tags["members"])[0]["trial_id"] == top[0]
    assert len(load_predictor(res.model_uri or "", mlflow_server.uri).members) == 2
    with pytest.raises(ConfigError, match="--no-refit keeps the trials' own weights"):
        retrain(*sweep, mlflow_uri=None, refit=False, seeds=2)


def _src(trial_id: str, value: float) -> SourceTrial:
    return SourceTrial("s", trial_id, "val_f1", value, 3, TrainConfig())


def test_distinct_trials_of_a_space_with_a_list_valued_choice() -> None:
    from types import SimpleNamespace

    from tuning.space import parse_space

    # task1's space searches model.hidden_sizes, whose cells are lists: `retrain --top 3` on
    # the task1 sweep of `bench quality` (2026-12-03) failed on them ("truth value of an array")
    space = parse_space({"task": "task1", "asha": {"max_epochs": 3}, "params": {
        "model.hidden_sizes": {"choice": [[128], [256, 128]]}, "optim.lr": {"loguniform": [1.0e-4, 1.0e-2]}}})
    frame = pd.DataFrame({
        "trial_id": ["a", "b", "c", "d"], "status": ["completed"] * 4, "best_val_f1": [0.9, 0.8, 0.7, 0.6],
        "best_epoch": [3, 3, 2, 3], "model.hidden_sizes": [[256, 128], [256, 128], [128], [128]],
        "optim.lr": [1e-3, 1e-3, 1e-3, 2e-3],
    })
    sweep = SimpleNamespace(space=space, trials=lambda: frame)
    # b repeats a's config and counts once, at a's better score; c and d differ in one value
    assert [str(r["trial_id"]) for r in distinct_trials(sweep, 3)] == ["a", "c", "d"]  # type: ignore[arg-type]


def test_near_the_best_keeps_the_members_within_the_margin_in_either_direction() -> None:
    ranked = [_src("a", 0.70), _src("b", 0.65), _src("c", 0.60), _src("d", 0.31)]
    kept, left = near_the_best(ranked, 0.1, "max")
    assert [s.trial_id for s in kept] == ["a", "b", "c"] and [s.trial_id for s in left] == ["d"]
    kept, left = near_the_best(ranked, 0.06, "max")
    assert [s.trial_id for s in kept] == ["a", "b"]
    kept, _ = near_the_best(ranked, 0.0, "max")
    assert [s.trial_id for s in kept] == ["a"]  # the best is always kept
    losses = [_src("a", 0.20), _src("b", 0.25), _src("c", 0.90)]  # a loss: lower is better
    kept, left = near_the_best(losses, 0.1, "min")
    assert [s.trial_id for s in kept] == ["a", "b"] and [s.trial_id for s in left] == ["c"]
    with pytest.raises(ConfigError, match="--within must be >= 0"):
        near_the_best(ranked, -0.1, "max")


def test_retrain_within_leaves_out_the_weak_top_trials_and_says_so(
    sweep: tuple[str, str], mlflow_server: MlflowServer
) -> None:
    ranked = distinct_trials(results.Sweep.open(*sweep), 3)
    assert len(ranked) == 3
    scores = {str(r["trial_id"]): float(r["best_val_f1"]) for r in ranked}
    best = max(scores.values())
    # a margin below every gap but the ties, read from the sweep's results
    expected = [t for t, v in scores.items() if v >= best - 1e-9]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["retrain", sweep[0], "--storage", sweep[1], "--top", "3", "--within", "1e-9", "--no-refit",
                   "--mlflow-uri", mlflow_server.uri, "--registered-name", "poketune-within"])
    assert rc == 0, out.getvalue()
    text = out.getvalue()
    import re

    registered = re.search(r"^registered models:/poketune-within/(\d+) ", text, re.MULTILINE)
    assert registered, text
    version = int(registered.group(1))
    tags = client_tags(mlflow_server.uri, "poketune-within", version)
    assert [m["trial_id"] for m in json.loads(tags["members"])] == expected
    left = [t for t in scores if t not in expected]
    assert json.loads(tags.get("left_out", "{}")) == pytest.approx({t: scores[t] for t in left})
    for t in left:
        assert f"left out trial {t} (best_val_f1 {scores[t]:.4f}" in text
    # a margin wider than any val_f1 gap keeps all three
    res = retrain(*sweep, mlflow_uri=None, top=3, within=1.0, refit=False)
    assert [s.trial_id for s in res.sources] == list(scores) and res.left_out == []
    with pytest.raises(ConfigError, match="--within chooses among the --top K"):
        retrain(*sweep, mlflow_uri=None, within=0.1, refit=False)


def test_a_driver_killed_mid_retrain_registers_nothing_and_the_rerun_registers_one_whole_version(
    sweep: tuple[str, str], tmp_path: Path
) -> None:
    """Killed after its first seed trained: no version, no run; the rerun's version holds
    both seeds, each trained for every epoch."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    name, storage = sweep
    cmd = [sys.executable, "-m", "tuning.cli", "retrain", name, "--storage", storage, "--mlflow-uri", uri,
           "--seeds", "2", "--epochs", "2", "--registered-name", "killed"]  # fmt: skip
    retrain_dir = Path(storage) / name / "retrain"
    before = set(retrain_dir.glob("*-seed0/checkpoint.pt"))
    before_second = set(retrain_dir.glob("*-seed1/checkpoint.pt"))
    log = tmp_path / "first.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while not set(retrain_dir.glob("*-seed0/checkpoint.pt")) - before:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Ray, like a crashed laptop
            proc.wait()
    assert set(retrain_dir.glob("*-seed1/checkpoint.pt")) == before_second  # killed mid-way
    client = MlflowClient(tracking_uri=uri)
    assert client.search_model_versions("name = 'killed'") == []
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    [version] = client.search_model_versions("name = 'killed'")
    members = json.loads(version.tags["members"])
    assert [(m["seed"], m["epochs"]) for m in members] == [(0, 2), (1, 2)]
    run = client.get_run(version.run_id)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]
