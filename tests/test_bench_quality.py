"""bench quality's parts: the artwork set builder, the bare baselines on a tiny set, the
report it assembles, and its command line.

The end-to-end ``poketune bench quality --task task2 --quick`` runs six CLI processes (about
2.5 minutes on 2 busy cores), too long for the suite: its pieces are tested here instead,
with the arms' processes replaced where only the report is under test."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bench import quality
from bench.artwork import DEFAULT_ARTWORK, TYPES, ArtworkMissingError, build, build_info
from bench.baselines import train_cnn, train_lite0, train_mlp

needs_artwork = pytest.mark.skipif(
    not (DEFAULT_ARTWORK / "labels.csv").is_file(),
    reason=f"the shared Pokémon artwork is not at {DEFAULT_ARTWORK} (never part of the repo)",
)

TINY: dict[str, Any] = {"pokemon": 30, "variants": 2, "size": 32}


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file of a set, build.json aside (it records the build time)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "build.json" and ".poketune_cache" not in p.parts
    }


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not (DEFAULT_ARTWORK / "labels.csv").is_file():
        pytest.skip(f"the shared Pokémon artwork is not at {DEFAULT_ARTWORK}")
    root = tmp_path_factory.mktemp("artwork-sets")
    return {
        "task1": build("task1", root / "t1", **TINY),
        "task2": build("task2", root / "t2", **TINY),
        "task3": build("task3", root / "t3", pokemon=30, variants=2, size=48),
    }


# ---------------------------------------------------------------------------------- builder
@needs_artwork
def test_the_same_seed_writes_the_same_files_and_another_seed_does_not(
    sets: dict[str, Path], tmp_path: Path
) -> None:
    again = build("task2", tmp_path / "again", **TINY)
    assert _digest(again) == _digest(sets["task2"])
    other = build("task2", tmp_path / "other", seed=1, **TINY)
    assert _digest(other) != _digest(sets["task2"])


@needs_artwork
def test_a_complete_set_is_reused_and_a_different_one_is_not_overwritten(
    sets: dict[str, Path],
) -> None:
    stamp = (sets["task2"] / "build.json").stat().st_mtime_ns
    assert build("task2", sets["task2"], **TINY) == sets["task2"]
    assert (sets["task2"] / "build.json").stat().st_mtime_ns == stamp  # nothing rebuilt
    with pytest.raises(FileExistsError, match="overwrite"):
        build("task2", sets["task2"], pokemon=30, variants=3, size=32)


@needs_artwork
@pytest.mark.parametrize("kind", ["task1", "task2", "task3"])
def test_the_layout_loads_with_the_nine_types(sets: dict[str, Path], kind: str) -> None:
    from training.config import DataConfig
    from training.data import load_split

    root = sets[kind]
    cfg = DataConfig(image_size=32, rgba="keep" if kind == "task2" else "composite")
    train = load_split(root, cfg, "train", cache_dir=root / ".poketune_cache")
    test = load_split(root, cfg, "test", class_names=train.class_names, cache_dir=root / ".poketune_cache")
    assert train.class_names == list(TYPES)  # every class made it into train
    info = build_info(root)["counts"]
    assert len(train.labels) == info["train"]["images"] and len(test.ids) == info["test"]["images"]
    answers = _rows(root / "test_labels.csv")
    assert [r["id"] for r in answers] == [r["id"] for r in _rows(root / "sample_submission.csv")]
    assert {r["label"] for r in answers} <= set(TYPES)
    # the labels are the artwork's type1
    labels = {r["name"]: r["type1"] for r in _rows(DEFAULT_ARTWORK / "labels.csv")}
    assert all(labels[r["name"]] == r["label"] for r in _rows(root / "images.csv"))


@needs_artwork
def test_task3_splits_by_pokemon_and_task2_by_image(sets: dict[str, Path]) -> None:
    def names(kind: str, split: str) -> set[str]:
        return {r["name"] for r in _rows(sets[kind] / "images.csv") if r["split"] == split}

    assert names("task3", "test") and not names("task3", "train") & names("task3", "test")
    # by image: with 2 variants per Pokémon some Pokémon have one image on each side
    assert names("task2", "train") & names("task2", "test")
    counts = build_info(sets["task2"])["counts"]
    total = counts["train"]["images"] + counts["test"]["images"]
    assert total == TINY["variants"] * len(names("task2", "train") | names("task2", "test"))
    assert counts["test"]["images"] == pytest.approx(0.2 * total, abs=len(TYPES))  # 20 % per class


@needs_artwork
def test_task1_is_transparent_with_an_outline_and_task2_opaque(sets: dict[str, Path]) -> None:
    from training.data import silhouette_box

    t1 = sorted((sets["task1"] / "train").glob("*.png"))
    t2 = sorted((sets["task2"] / "train").glob("*.png"))
    for path in t1[:10]:
        rgba = np.asarray(Image.open(path))
        assert rgba.shape == (32, 32, 4)
        assert (rgba[..., 3] == 0).mean() > 0.2  # background transparent...
        assert rgba[0, 0, 3] == 0 and (rgba[..., 3] == 255).any()  # ...sprite opaque
        assert silhouette_box(rgba) is not None  # the black outline the task1 crop uses
    for path in t2[:10]:
        rgba = np.asarray(Image.open(path))
        assert rgba.shape == (32, 32, 4) and (rgba[..., 3] == 255).all()
        assert silhouette_box(rgba) is not None
    t3 = np.asarray(Image.open(next((sets["task3"] / "test").glob("*.png"))))
    assert t3.shape == (48, 48, 3)  # a photo behind every sprite: RGB


def test_a_missing_artwork_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtworkMissingError, match="--artwork"):
        build("task2", tmp_path / "out", artwork=tmp_path / "nowhere")


def test_the_benchmark_skips_with_the_reason_without_artwork(tmp_path: Path) -> None:
    report = quality.run(quick=True, out=tmp_path, artwork=tmp_path / "nowhere")
    assert report.skipped and "artwork" in report.skipped and report.tables == {}


# ---------------------------------------------------------------------------------- baselines
@needs_artwork
def test_the_cnn_baseline_picks_its_epoch_on_validation_and_scores_the_test(
    sets: dict[str, Path],
) -> None:
    res = train_cnn(sets["task2"], seed=0, epochs=3)
    assert 0.0 <= res.test_f1 <= 1.0 and res.epochs_run == 3 and not res.stopped_by_budget
    best = max(h["val_f1"] for h in res.history)
    assert res.best_val_f1 == best and res.history[res.best_epoch - 1]["val_f1"] == best
    counts = build_info(sets["task2"])["counts"]
    assert res.train_images + res.val_images == counts["train"]["images"]
    assert res.test_images == counts["test"]["images"]


@needs_artwork
def test_a_spent_budget_stops_a_baseline_after_one_epoch(sets: dict[str, Path]) -> None:
    res = train_mlp(sets["task1"], seed=1, epochs=5, time_budget_s=0.0, image_size=32)
    assert res.epochs_run == 1 and res.stopped_by_budget and res.best_epoch == 1


@needs_artwork
def test_the_lite0_baseline_runs_on_the_shipped_weights(sets: dict[str, Path]) -> None:
    res = train_lite0(sets["task3"], seed=0, epochs=1)
    assert res.epochs_run == 1 and 0.0 <= res.test_f1 <= 1.0


# ---------------------------------------------------------------------------------- report
@needs_artwork
def test_the_report_holds_every_arm_the_margins_and_the_targets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    f1 = {"baseline": 0.40, "preset": 0.45, "flow": 0.60}

    def fake(name: str):  # an arm that "ran" one 10 s step and scored f1[name] + seed/100
        def arm_fn(arm: quality.Arm, *args: object) -> None:
            if name == "preset" and arm.seed == 1:
                raise quality.ArmError("train exited with 1: boom")
            arm.steps.append(quality.Step("train", ["x"], 10.0, ""))
            arm.test_f1 = f1[name] + arm.seed / 100

        return arm_fn

    for name in quality.ARMS:
        monkeypatch.setattr(quality, f"_{name}", fake(name))
    report = quality.run(quick=True, out=tmp_path, task="task2", seeds=2, budget="5s")
    rows = report.tables["per seed and arm"]
    assert [(r["seed"], r["arm"]) for r in rows] == [(s, a) for s in (0, 1) for a in quality.ARMS]
    failed = next(r for r in rows if r["seed"] == 1 and r["arm"] == "preset")
    assert failed["test_f1"] is None and "boom" in failed["error"]
    by_arm = {r["arm"]: r for r in report.tables["per arm over seeds"]}
    assert by_arm["flow"]["mean"] == pytest.approx(0.605) and by_arm["preset"]["seeds_ok"] == 1
    assert report.summary["margin flow - baseline"] == pytest.approx(0.20)
    margin, wall = report.targets
    assert margin.limit == 0.15 and margin.met is True
    assert wall.value == 10.0 and wall.limit == 5.0 and wall.met is False  # over budget: said so
    doc = json.loads(report.write(tmp_path).read_text())
    assert doc["benchmark"] == "quality_task2" and doc["config"]["seeds"] == [0, 1]
    # every arm, the failed one included, was kept as it ended: a run cut short keeps them
    kept = [json.loads(ln) for ln in (tmp_path / "quality_task2.arms.jsonl").read_text().splitlines()]
    assert [(k["seed"], k["arm"], k["test_f1"]) for k in kept] == [(r["seed"], r["arm"], r["test_f1"]) for r in rows]
    assert len({k["run"] for k in kept}) == 1
    # a measurement split across sessions: the third seed alone
    later = quality.run(quick=True, out=tmp_path, task="task2", seeds=1, first_seed=2, budget="5s")
    assert [r["seed"] for r in later.tables["per seed and arm"]] == [2, 2, 2]
    assert later.config["seeds"] == [2]


def test_the_cli_passes_task_budget_and_seeds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bench._common import BenchReport
    from tuning.cli import main

    seen: dict[str, object] = {}

    def fake_run(quick: bool, out: object, **kwargs: object) -> BenchReport:
        seen.update(kwargs, quick=quick)
        return BenchReport("quality_task1", quick, {}, {})

    monkeypatch.setattr(quality, "run", fake_run)
    argv = ["bench", "quality", "--task", "task1", "--budget", "5m", "--seeds", "2"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert seen == {"task": "task1", "budget": "5m", "seeds": 2, "quick": False}
    assert (tmp_path / "quality_task1.json").is_file()
    seen.clear()
    assert main([*argv, "--first-seed", "2", "--out", str(tmp_path)]) == 0
    assert seen["first_seed"] == 2 and seen["seeds"] == 2


def test_bench_all_leaves_the_hour_long_quality_run_out() -> None:
    from bench import ON_DEMAND, ORDER

    assert "quality" in ORDER and "quality" in ON_DEMAND


@needs_artwork
def test_cv_selection_runs_both_arms_the_same_way_but_for_cv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bench import cv_selection

    commands: list[tuple[str, list[str]]] = []

    def fake_run(arm: quality.Arm, name: str, command: list[str], log_dir: Path, timeout_s: float) -> str:
        commands.append((arm.arm, command))
        arm.steps.append(quality.Step(name, command, 30.0 if name == "tune" else 5.0, ""))
        if name == "tune":
            return "best trial abc123: val_f1 0.5000\n"
        return "retrained trial abc123 of sweep 'x' (best_val_f1 0.5 at epoch 4) for 4 epochs, seeds [0]\n"

    monkeypatch.setattr(cv_selection, "_run", fake_run)
    monkeypatch.setattr(cv_selection, "_trial_count", lambda name, storage: 3 if "cv3" in name else 6)
    monkeypatch.setattr(cv_selection, "_retrain_checkpoints", lambda out, folder, since: ["m.pt"])
    monkeypatch.setattr(cv_selection, "_submit_and_score",
                        lambda arm, model, data, work, timeout_s: 0.4 + (0.1 if arm.arm == "cv3" else 0) + arm.seed / 100)  # fmt: skip
    report = cv_selection.run(quick=True, out=tmp_path, seeds=2, budget="60s")
    tunes = {(arm, tuple(c)) for arm, c in commands if "tune" in c}
    for arm, cmd in tunes:  # the same sweep but for --cv 3
        assert ("--cv" in cmd) == (arm == "cv3") and cmd[cmd.index("--time-budget-s") + 1] == "60"
    # both selected configs refitted by the same recipe (not --no-refit)
    retrains = [c for _, c in commands if "retrain" in c]
    assert len(retrains) == 4 and not any("--no-refit" in c for c in retrains)
    rows = report.tables["per seed and arm"]
    assert [(r["seed"], r["arm"]) for r in rows] == [(0, "one_split"), (0, "cv3"), (1, "one_split"), (1, "cv3")]
    assert rows[1]["s_per_trial"] == pytest.approx(10.0) and rows[0]["s_per_trial"] == pytest.approx(5.0)
    kept = [json.loads(ln) for ln in (tmp_path / "cv_selection.arms.jsonl").read_text().splitlines()]
    assert [(k["seed"], k["arm"], k["s_per_trial"]) for k in kept] == [(r["seed"], r["arm"], r["s_per_trial"]) for r in rows]
    assert report.summary["mean test macro-F1 cv3 - one_split"] == pytest.approx(0.1)


def test_the_flow_recipe_is_the_tasks_own_and_arms_can_be_chosen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    commands: list[list[str]] = []

    def fake_run(arm: quality.Arm, name: str, command: list[str], log_dir: Path, timeout_s: float) -> str:
        commands.append(command)
        arm.steps.append(quality.Step(name, command, 1.0, ""))
        return "best trial abc: val_f1 0.5\n  checkpoint: /nowhere\n"

    monkeypatch.setattr(quality, "_run", fake_run)
    monkeypatch.setattr(quality, "_retrain_checkpoints", lambda out, folder, since: ["m.pt"])
    monkeypatch.setattr(quality, "_submit_and_score", lambda arm, model, data, work, timeout_s: 0.3)
    monkeypatch.setattr(quality, "_usable_count", lambda name, storage: 3)
    monkeypatch.setattr(quality, "_trial_count", lambda name, storage: 5)
    monkeypatch.setattr(quality, "build", lambda *a, **k: tmp_path)
    monkeypatch.setattr(quality, "build_info", lambda d: {"params": {"size": 32}, "counts": {"train": {"images": 1}, "test": {"images": 1}}, "build_s": 0.0})
    for task, budget_share, final in [("task3", 0.55, ["--from-trial-weights", "backbone"]), ("task2", 0.9, ["--top", "3", "--within", "0.1", "--no-refit"])]:
        commands.clear()
        report = quality.run(out=tmp_path, task=task, seeds=1, budget="100s", arms="flow")
        assert [r["arm"] for r in report.tables["per seed and arm"]] == ["flow"]  # the other arms left out
        tune, retrain = commands
        assert tune[tune.index("--time-budget-s") + 1] == f"{budget_share * 100:g}"
        if task == "task3":  # the refit gets what is left of the arm's budget, less submit's share
            refit_s = float(retrain.pop(retrain.index("--time-budget") + 1).rstrip("s"))
            assert 0 < refit_s <= 100 - quality.SUBMIT_RESERVE_S
            retrain.remove("--time-budget")
        else:
            assert "--time-budget" not in retrain
        assert retrain[retrain.index("retrain") + 4:] == final  # task3 refits the best trial, from its weights
    # one usable trial: --top 1 alone (retrain refuses --within with nothing to choose among)
    monkeypatch.setattr(quality, "_usable_count", lambda name, storage: 1)
    commands.clear()
    quality.run(out=tmp_path, task="task1", seeds=1, budget="100s", arms="flow")
    assert commands[1][commands[1].index("retrain") + 4:] == ["--top", "1", "--no-refit"]
    monkeypatch.setattr(quality, "_usable_count", lambda name, storage: 3)
    # task3 on its full-size set: the sweep ranks at 96 px, the refit trains at the set's 160
    monkeypatch.setattr(quality, "build_info", lambda d: {"params": {"size": 160}, "counts": {"train": {"images": 1}, "test": {"images": 1}}, "build_s": 0.0})
    commands.clear()
    quality.run(out=tmp_path, task="task3", seeds=1, budget="100s", arms="flow")
    tune, retrain = commands
    assert tune[tune.index("--set") + 1] == "data.image_size=96"
    assert retrain[retrain.index("retrain") + 4:][:4] == ["--set", "data.image_size=160", "--from-trial-weights", "backbone"]
    with pytest.raises(ValueError, match="unknown arm 'flo'"):
        quality.run(out=tmp_path, task="task2", arms="flo")


@pytest.mark.parametrize("benchmark", ["quality", "cv_selection"])
def test_both_artwork_benchmarks_check_their_options_before_building(benchmark: str, tmp_path: Path) -> None:
    import importlib

    run = importlib.import_module(f"bench.{benchmark}").run
    with pytest.raises(ValueError, match=r"unknown task 'task9'; valid: task1, task2, task3"):
        run(out=tmp_path, task="task9")
    # cv_selection took --seeds 0 and reported an empty run
    with pytest.raises(ValueError, match=r"seeds must be >= 1, got 0"):
        run(out=tmp_path, task="task2", seeds=0)
    assert not (tmp_path / "data").exists()  # nothing built
