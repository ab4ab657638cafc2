"""Submissions from checkpoints: the stored preprocessing is what decodes the test images,
the sample submission's shape and order are followed, bad input is named."""

from __future__ import annotations

import dataclasses
import errno
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from training.checkpoint import build_model_for, load_checkpoint
from training.config import DataConfig
from training.data import DataError, load_split
from training.engine import LocalReporter, fit, prepare_data
from training.tasks import preset_config
from tuning.cli import main
from tuning.predict import ModelURIError, Predictor, PredictorError, load_predictor
from tuning.submission import (
    SubmissionError,
    build_submission,
    make_submission,
    score_submission,
    validate_submission,
)


@pytest.fixture(scope="module")
def task1_model(task1_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny task1 MLP trained on silhouette crops at 32 px; returns its checkpoint folder."""
    cfg = preset_config("task1", {"data.image_size": 32, "optim.epochs": 2, "model.hidden_sizes": [32]})
    assert cfg.data.crop == "silhouette"
    data, _ = prepare_data(task1_data, cfg)
    out = tmp_path_factory.mktemp("task1_model")
    fit(cfg, data, LocalReporter(out_dir=out))
    return out


@pytest.fixture
def test_dir(task1_data: Path, tmp_path: Path) -> Path:
    """A private copy of the test split (tests break it in various ways)."""
    root = tmp_path / "data"
    root.mkdir()
    shutil.copytree(task1_data / "test", root / "test")
    for name in ("sample_submission.csv", "test_labels.csv"):
        shutil.copy(task1_data / name, root / name)
    return root


def _shuffle_sample(root: Path, seed: int = 0) -> list[str]:
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str)
    sample = sample.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    sample.to_csv(root / "sample_submission.csv", index=False)
    return list(sample["id"])


# ---------------------------------------------------------------------------------- the file
def test_submission_follows_the_sample_order_and_columns(task1_model: Path, test_dir: Path, tmp_path: Path) -> None:
    order = _shuffle_sample(test_dir)
    assert order != sorted(order)
    out = tmp_path / "sub.csv"
    res = make_submission(str(task1_model), test_dir, out)
    sub = pd.read_csv(out, dtype=str)
    assert list(sub.columns) == ["id", "label"]
    assert list(sub["id"]) == order
    ckpt = load_checkpoint(task1_model)
    assert set(sub["label"]) <= set(ckpt.class_names)
    assert res.rows == len(order) == len(list((test_dir / "test").glob("*.png")))
    # the labels are the argmax of the model's logits for each id, computed here without the
    # predictor: decode as the task1 preset does, normalise by hand, run the best weights
    images = load_split(
        test_dir, DataConfig(image_size=32, crop="silhouette"), "test",
        class_names=ckpt.class_names, cache_dir=test_dir / "oracle_cache",
    )
    model = build_model_for(ckpt.config, len(ckpt.class_names))
    assert ckpt.best_model is not None
    model.load_state_dict(ckpt.best_model)
    x = torch.as_tensor(images.images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        logits = model.eval()((x - 0.5) / 0.5)  # the preset's "half" normalisation
    by_id = dict(zip(images.ids, (ckpt.class_names[i] for i in logits.argmax(1)), strict=True))
    assert list(sub["label"]) == [by_id[i] for i in order]
    # and the file scores against the answers
    assert 0.0 <= score_submission(out, test_dir / "test_labels.csv").macro_f1 <= 1.0


def test_without_a_sample_submission_ids_are_sorted(task1_model: Path, test_dir: Path, tmp_path: Path) -> None:
    (test_dir / "sample_submission.csv").unlink()
    out = tmp_path / "sub.csv"
    make_submission(str(task1_model), test_dir, out)
    sub = pd.read_csv(out, dtype=str)
    assert list(sub.columns) == ["id", "label"]
    assert list(sub["id"]) == sorted(p.stem for p in (test_dir / "test").glob("*.png"))


def test_tta_averages_the_flipped_view(task1_model: Path, test_dir: Path) -> None:
    pred = load_predictor(str(task1_model))
    x = torch.as_tensor(pred.load_test(test_dir).images[:5]).permute(0, 3, 1, 2).contiguous()
    plain, flipped = pred.predict_proba(x), pred.predict_proba(torch.flip(x, dims=[-1]))
    np.testing.assert_allclose(pred.predict_proba(x, tta=True), (plain + flipped) / 2, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------- preprocessing
def test_submit_decodes_with_the_checkpoints_preprocessing(task1_model: Path, test_dir: Path) -> None:
    ckpt = load_checkpoint(task1_model)
    stored = ckpt.preprocessing
    assert stored.crop == "silhouette" and stored.image_size == 32
    expected = load_split(
        test_dir, DataConfig(image_size=32, crop="silhouette", rgba=stored.rgba), "test",
        class_names=ckpt.class_names, cache_dir=test_dir / "ref_cache",
    )
    pred = load_predictor(str(task1_model))
    got = pred.load_test(test_dir, cache_dir=test_dir / "submit_cache")
    assert got.ids == expected.ids
    np.testing.assert_array_equal(got.images, expected.images)
    # the crop matters: the uncropped images are different pixels
    uncropped = load_split(test_dir, DataConfig(image_size=32, crop="none"), "test", cache_dir=test_dir / "c3")
    assert not np.array_equal(uncropped.images, expected.images)

    # a user's DataConfig says where files are; its decode settings are ignored
    user = DataConfig(image_size=48, crop="none", rgba="keep", background=[0, 0, 0], normalize="imagenet")
    again = pred.load_test(test_dir, user, cache_dir=test_dir / "user_cache")
    np.testing.assert_array_equal(again.images, expected.images)
    assert pred.data_config(user).crop == "silhouette"


def test_stored_config_data_section_does_not_override_preprocessing(task1_model: Path, test_dir: Path, tmp_path: Path) -> None:
    """Even a checkpoint whose config disagrees with its preprocessing decodes by the latter."""
    ckpt = load_checkpoint(task1_model)
    ckpt.config = ckpt.config.replace(**{"data.crop": "none", "data.background": [0, 0, 0]})
    ckpt.save(tmp_path / "edited")
    a = load_predictor(str(task1_model)).load_test(test_dir)
    b = load_predictor(str(tmp_path / "edited")).load_test(test_dir)
    np.testing.assert_array_equal(a.images, b.images)


# ---------------------------------------------------------------------------------- bad input
def test_sample_ids_without_images_are_named(task1_model: Path, test_dir: Path, tmp_path: Path) -> None:
    gone = sorted((test_dir / "test").glob("*.png"))[3]
    gone.unlink()
    with pytest.raises(DataError, match=rf"{gone.stem}.*no image in test/"):
        make_submission(str(task1_model), test_dir, tmp_path / "sub.csv")
    assert not (tmp_path / "sub.csv").exists()


def test_images_missing_from_the_sample_are_named(task1_model: Path, test_dir: Path, tmp_path: Path) -> None:
    sample = pd.read_csv(test_dir / "sample_submission.csv", dtype=str)
    dropped = sample["id"].iloc[2]
    sample.drop(index=2).to_csv(test_dir / "sample_submission.csv", index=False)
    with pytest.raises(DataError, match=rf"{dropped}.*not in sample_submission.csv"):
        make_submission(str(task1_model), test_dir, tmp_path / "sub.csv")


def test_unreadable_image_is_named(task1_model: Path, test_dir: Path, tmp_path: Path) -> None:
    bad = sorted((test_dir / "test").glob("*.png"))[0]
    bad.write_bytes(b"this is not a png at all")
    with pytest.raises(DataError, match=rf"{bad.name}.*cannot decode"):
        make_submission(str(task1_model), test_dir, tmp_path / "sub.csv")


def test_failed_submission_leaves_an_existing_file_alone(
    task1_model: Path, test_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "sub.csv"
    out.write_text("previous,good,file\n")

    import training.files

    def disk_full(fd: int) -> None:  # the new file is half on disk when the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(training.files.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        make_submission(str(task1_model), test_dir, out)
    assert out.read_text() == "previous,good,file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "sub.csv"]  # no temp left


@pytest.mark.parametrize("uri", ["/no/such/checkpoint", "{tmp}/empty_dir"])
def test_model_paths_that_do_not_resolve_are_named(test_dir: Path, tmp_path: Path, uri: str) -> None:
    (tmp_path / "empty_dir").mkdir()
    uri = uri.format(tmp=tmp_path)
    with pytest.raises(ModelURIError, match=uri):
        make_submission(uri, test_dir, tmp_path / "sub.csv")


def test_cli_reports_bad_model_and_writes_good_submission(
    task1_model: Path, test_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub.csv"
    assert main(["submit", "--model", str(tmp_path / "nope.pt"), "--data", str(test_dir), "--out", str(out)]) == 2
    assert "nope.pt does not exist" in capsys.readouterr().err
    assert main(["submit", "--model", str(task1_model), "--data", str(test_dir), "--out", str(out), "--tta"]) == 0
    printed = capsys.readouterr().out
    assert "crop silhouette" in printed and str(out) in printed
    assert len(pd.read_csv(out)) == len(list((test_dir / "test").glob("*.png")))


# ---------------------------------------------------------------------------------- ensembles
def test_comma_separated_checkpoints_average(task1_model: Path, test_dir: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(task1_model)
    other = dataclasses.replace(
        ckpt,
        model={k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in ckpt.model.items()},
        best_model=None,
    )
    other.save(tmp_path / "other")
    a, b = load_predictor(str(task1_model)), load_predictor(str(tmp_path / "other"))
    both = load_predictor(f"{task1_model},{tmp_path / 'other' / 'checkpoint.pt'}")
    assert len(both.members) == 2
    x = torch.as_tensor(a.load_test(test_dir).images[:6]).permute(0, 3, 1, 2).contiguous()
    np.testing.assert_allclose(both.predict_proba(x), (a.predict_proba(x) + b.predict_proba(x)) / 2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("class_names", ["A", "B", "C", "D", "E", "F", "G", "H", "I"], "class names"),
        ("preprocessing", {"crop": "none"}, "preprocessing"),
    ],
)
def test_members_must_share_classes_and_preprocessing(
    task1_model: Path, tmp_path: Path, key: str, value: object, message: str
) -> None:
    ckpt = load_checkpoint(task1_model)
    if isinstance(value, dict):
        value = dataclasses.replace(ckpt.preprocessing, **value)
    dataclasses.replace(ckpt, **{key: value}).save(tmp_path / "changed")
    with pytest.raises(PredictorError, match=message):
        load_predictor(f"{task1_model},{tmp_path / 'changed'}")


def test_predictor_checks_input_shape_and_dtype(task1_model: Path) -> None:
    pred = load_predictor(str(task1_model))
    with pytest.raises(PredictorError, match="uint8"):
        pred.predict_proba(np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(PredictorError, match=r"N×3×32×32"):
        pred.predict_proba(np.zeros((2, 3, 16, 16), np.uint8))
    assert isinstance(pred, Predictor)


# ---------------------------------------------------------------------------------- validation
def test_validation_names_every_kind_of_bad_row() -> None:
    classes = ["a", "b"]
    good = build_submission(["x", "y", "z"], ["a", "b", "a"])
    validate_submission(good, expected_ids=["x", "y", "z"], class_names=classes)
    bad = pd.DataFrame({"id": ["x", "x", "q"], "label": ["a", "c", "b"]})
    with pytest.raises(SubmissionError) as err:
        validate_submission(bad, expected_ids=["x", "y", "z"], class_names=classes)
    msg = str(err.value)
    assert "more than once: 'x'" in msg
    assert "missing: 'y', 'z'" in msg
    assert "not test images: 'q'" in msg
    assert "'x=c'" in msg


def test_build_fills_the_template_label_column_in_its_order() -> None:
    template = pd.DataFrame({"id": ["b", "a", "c"], "label": ["?", "?", "?"]})
    frame = build_submission(["a", "b", "c"], ["A", "B", "C"], template=template)
    assert frame.to_dict("list") == {"id": ["b", "a", "c"], "label": ["B", "A", "C"]}
    renamed = pd.DataFrame({"id": ["a"], "type": ["?"]})  # the only other column is the label
    assert list(build_submission(["a"], ["A"], template=renamed)["type"]) == ["A"]
    with pytest.raises(SubmissionError, match="besides"):
        build_submission(["a"], ["A"], template=pd.DataFrame({"id": ["a"], "label": ["?"], "x": [1]}))


def test_decode_config_keeps_locations_and_forces_strictness(task1_model: Path) -> None:
    pred = load_predictor(str(task1_model))
    where = dataclasses.replace(DataConfig(), id_col="image_id", skip_bad=True, classes=["a"], layout="manifest")
    cfg = pred.data_config(where)
    assert cfg.id_col == "image_id"
    assert (cfg.skip_bad, cfg.classes, cfg.layout) == (False, [], "kaggle")
