"""``compare_runs`` / ``poketune compare``: a CNN and a transfer model trained on a generated
CIFAR-10, compared from checkpoint paths, MLflow runs and a real sweep's best trial."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import f1_score, precision_recall_fscore_support

from training.checkpoint import build_model_for, load_checkpoint
from training.config import TrainConfig
from training.data import cifar
from training.engine import LocalReporter, fit, prepare_data
from training.loop import predict_proba
from training.models import count_parameters
from training.tasks import preset_config
from tuning.cli import main
from tuning.compare import FIGURES, compare_runs
from tuning.resolve import ModelURIError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A generated CIFAR-10 whose files pass torchvision's md5 check for this module."""
    root = tmp_path_factory.mktemp("cifar")
    folder = cifar.write_cifar10_batches(root, per_class=4, test_per_class=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cifar, "EXPECTED_MD5", cifar.file_md5s(folder))
        yield root


def _train(cfg: TrainConfig, root: Path, out: Path) -> Path:
    data, _ = prepare_data(root, cfg)
    fit(cfg, data, LocalReporter(out_dir=out))
    return out


@pytest.fixture(scope="module")
def runs(cifar_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("runs")
    small = {"num_threads": 1, "optim.batch_size": 32}
    cnn = preset_config("cifar10_cnn", {**small, "optim.epochs": 3, "model.channels": 8})
    transfer = preset_config(
        "cifar10_transfer",
        {
            **small,
            "model.name": "resnet18",
            "model.pretrained": False,
            "model.freeze_depth": 1,
            "data.image_size": 32,
            "optim.head_epochs": 1,
            "optim.epochs": 3,
        },
    )
    return {"cnn": _train(cnn, cifar_root, tmp / "cnn"), "tl": _train(transfer, cifar_root, tmp / "tl")}


def _independent_predictions(ckpt: Path, root: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(y_true, y_pred, total parameters) without going through tuning.compare."""
    state = load_checkpoint(ckpt)
    model = build_model_for(state.config, len(state.class_names))
    assert state.best_model is not None
    model.load_state_dict(state.best_model)
    data, _ = prepare_data(root, state.config)
    probs = predict_proba(model, torch.as_tensor(data.x_val), torch.device("cpu"), data.preprocessing)
    return data.y_val, probs.argmax(-1).numpy(), count_parameters(model)[0]


def _table(md: str, first_header: str) -> pd.DataFrame:
    """The markdown table whose header starts with ``| first_header |`` as strings."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return pd.DataFrame(rows[2:], columns=rows[0])


def test_report_matches_sklearn_on_the_same_predictions(
    runs: dict[str, Path], cifar_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    result = compare_runs(
        [f"cnn={runs['cnn']}", str(runs["tl"] / "checkpoint.pt")],
        out,
        storage=str(tmp_path / "no-sweeps"),
        data=str(cifar_root),
    )
    assert [r.label for r in result.runs] == ["cnn", "tl"]
    md = (out / "report.md").read_text()

    per_class = _table(md, "class").set_index("class")
    assert list(per_class.index) == [*cifar.CLASS_NAMES, "macro avg"]
    for label in ("cnn", "tl"):
        assert {f"precision {label}", f"recall {label}", f"F1 {label}"} <= set(per_class.columns)
    summary = _table(md, "run").set_index("run")

    csv = pd.read_csv(out / "per_class.csv")
    assert len(csv) == 2 * 10 and set(csv["run"]) == {"cnn", "tl"}
    for run, label in zip(result.runs, ("cnn", "tl"), strict=True):
        y_true, y_pred, params = _independent_predictions(runs[label] / "checkpoint.pt", cifar_root)
        np.testing.assert_array_equal(run.y_pred, y_pred)
        macro = f1_score(y_true, y_pred, labels=range(10), average="macro", zero_division=0)
        assert run.macro_f1 == pytest.approx(macro)
        assert per_class.loc["macro avg", f"F1 {label}"] == f"{macro:.3f}"
        assert summary.loc[label, "macro-F1"] == f"{macro:.3f}"
        assert summary.loc[label, "accuracy"] == f"{(y_true == y_pred).mean():.3f}"
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=range(10), zero_division=0)
        mine = csv[csv["run"] == label].set_index("class").loc[cifar.CLASS_NAMES]
        np.testing.assert_allclose(mine["f1"], f)
        np.testing.assert_allclose(mine["precision"], p)
        np.testing.assert_allclose(mine["recall"], r)
        assert mine["support"].tolist() == s.tolist()
        for cls, value in zip(cifar.CLASS_NAMES, f, strict=True):
            assert per_class.loc[cls, f"F1 {label}"].strip("*") == f"{value:.3f}"
        # parameter counts and training time
        assert run.params_total == params
        assert summary.loc[label, "parameters"] == f"{params:,}"
        history = load_checkpoint(runs[label]).history
        assert run.train_time_s == pytest.approx(sum(h["epoch_time_s"] for h in history))

    # the transfer model's last phase trains the head + one stage, not everything
    tl = result.runs[1]
    assert 0 < tl.params_trainable < tl.params_total

    for name, png in result.figures.items():
        assert png == out / FIGURES[name] and png.read_bytes()[:8] == PNG_MAGIC
        with Image.open(png) as img:
            img.verify()
        assert f"]({png.name})" in md


def test_cli_writes_the_report_and_names_bad_runs(
    runs: dict[str, Path], cifar_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    code = main(["compare", str(runs["cnn"]), str(runs["tl"]), "--out", str(out), "--data", str(cifar_root)])
    assert code == 0 and (out / "report.md").is_file() and (out / "summary.csv").is_file()
    assert "report:" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "nope" in capsys.readouterr().err
    # a checkpoint path records no data folder: --data is required
    assert main(["compare", str(runs["cnn"]), "--out", str(out)]) == 2
    assert "--data" in capsys.readouterr().err


def test_mlflow_runs_in_and_report_out(
    runs: dict[str, Path], cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from tuning._mlflow import Tags
    from tuning.export import CHECKPOINT_ARTIFACT

    monkeypatch.chdir(tmp_path)  # nothing lands in the repository
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("trained", artifact_location=(tmp_path / "art").as_uri())
    # as `poketune export` logs it (tagged), and somewhere else without the tag
    tagged = client.create_run(exp, run_name="exported-cnn").info.run_id
    client.log_artifact(tagged, str(runs["cnn"] / "checkpoint.pt"), Path(CHECKPOINT_ARTIFACT).parent.as_posix())
    client.set_tag(tagged, Tags.CHECKPOINT_ARTIFACT, CHECKPOINT_ARTIFACT)
    untagged = client.create_run(exp).info.run_id
    client.log_artifact(untagged, str(runs["tl"] / "checkpoint.pt"), "deep/inside")

    out = tmp_path / "report"
    result = compare_runs(
        [f"runs:/{tagged}", f"tl=runs:/{untagged}"],
        out,
        storage=str(tmp_path),
        data=str(cifar_root),
        mlflow_uri=uri,
    )
    assert [r.label for r in result.runs] == ["exported-cnn", "tl"]
    direct = compare_runs([str(runs["cnn"])], tmp_path / "direct", storage=str(tmp_path), data=str(cifar_root))
    assert result.runs[0].macro_f1 == direct.runs[0].macro_f1

    assert result.mlflow_run_id is not None
    logged = {a.path for a in client.list_artifacts(result.mlflow_run_id)}
    assert {"report.md", "per_class.csv", *FIGURES.values()} <= logged
    metrics = client.get_run(result.mlflow_run_id).data.metrics
    assert metrics["macro_f1/tl"] == pytest.approx(result.runs[1].macro_f1)

    with pytest.raises(ModelURIError, match="runs:/0123abc"):
        compare_runs(["runs:/0123abc"], out, storage=str(tmp_path), data=str(cifar_root), mlflow_uri=uri)


SPACE = """
task: cifar10_cnn
asha: {max_epochs: 2, grace_period: 1, reduction_factor: 2}
fixed: {model.channels: 8, optim.batch_size: 32}
params:
  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
"""


@pytest.mark.slow
def test_sweep_best_trial_with_its_recorded_data(
    cifar_root: Path, tmp_path: Path, ray_session: None
) -> None:
    from tuning import results
    from tuning.sweep import SweepOptions, run_sweep

    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    storage = str(tmp_path / "sweeps")
    # the driver decodes the data once (the md5 patch applies there) and ships it to trials
    run_sweep(SweepOptions(space=str(space), data=str(cifar_root), samples=2, name="cf", storage=storage))
    best = results.Sweep.open("cf", storage).trials().iloc[0]

    result = compare_runs(["sweep:cf", f"sweep:cf/{best['trial_id']}"], tmp_path / "r", storage=storage)
    first, second = result.runs
    assert first.label == f"cf/{best['trial_id']}" and second.label == f"{first.label} (2)"
    assert first.data_dir == str(cifar_root.resolve())
    assert first.macro_f1 == second.macro_f1
    assert first.epochs == best["epochs"]
