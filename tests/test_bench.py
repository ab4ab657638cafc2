"""Smoke tests for bench/: each benchmark's tiniest mode runs end to end and writes valid
JSON (no timing assertions), plus the sweep-efficiency arithmetic on hand-made curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from bench import BENCHMARKS, ORDER
from bench._common import BenchReport, Target, steady_images_per_s
from bench.overhead import Measured, baseline
from bench.sweep_efficiency import (
    _ratio,
    _summarise,
    curve,
    epochs_to_target,
    equal_budget,
    population_table,
)
from tuning.cli import main


def _read(out: Path, name: str) -> dict:
    doc = json.loads((out / f"{name}.json").read_text())  # strict JSON: no NaN tokens
    assert doc["benchmark"] == name and doc["quick"] is True
    assert doc["machine"]["nproc"] >= 1 and doc["machine"]["torch"] == torch.__version__
    return doc


def test_every_benchmark_in_the_run_order_is_registered() -> None:
    assert sorted(ORDER) == BENCHMARKS.names()


def test_unknown_benchmark_is_a_clear_cli_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # checked before anything ran


def test_report_json_has_no_nan_and_judges_targets(tmp_path: Path) -> None:
    report = BenchReport(
        benchmark="x",
        quick=True,
        config={},
        tables={"t": [{"a": float("nan"), "b": 1.0}]},
        targets=[
            Target("fast", 0.5, 0.95, ">="),
            Target("small", 10.0, 90.0, "<="),
            Target("unknown", float("nan"), 1.0, "<="),
        ],
    )
    doc = json.loads(report.write(tmp_path).read_text())
    assert doc["tables"]["t"] == [{"a": None, "b": 1.0}]
    assert [t["met"] for t in doc["targets"]] == [False, True, None]
    assert "MISSED" in report.table() and "-> met" in report.table()


def test_steady_rate_skips_the_warm_up_epoch_and_is_a_harmonic_mean() -> None:
    # 100 images per epoch at 10 and 40 img/s: 12.5 s for 200 images = 16 img/s
    assert steady_images_per_s([1.0, 10.0, 40.0]) == pytest.approx(16.0)
    assert steady_images_per_s([5.0]) == pytest.approx(5.0)  # one epoch: nothing to skip
    assert math.isnan(steady_images_per_s([]))


def test_curve_follows_the_trial_order_and_counts_epochs_to_target() -> None:
    history = pd.DataFrame(
        {  # trial "b" ran first (2 epochs), then "a" (3 epochs); rows arrive shuffled
            "trial_id": ["a", "b", "a", "b", "a"],
            "training_iteration": [1, 2, 2, 1, 3],
            "val_f1": [0.30, 0.50, 0.60, 0.20, 0.55],
            "time_total_s": [1.0, 4.0, 2.0, 3.0, 3.5],
        }
    )
    c = curve(history, ["b", "a"])
    assert c["trial_id"].tolist() == ["b", "b", "a", "a", "a"]
    assert c["best_so_far"].tolist() == [0.20, 0.50, 0.50, 0.60, 0.60]
    assert c["time_s"].tolist() == pytest.approx([3.0, 4.0, 5.0, 6.0, 7.5])
    assert epochs_to_target(c, 0.59) == (4, pytest.approx(6.0))
    assert epochs_to_target(c, 0.7) == (None, None)


def test_equal_budget_reads_random_search_at_the_asha_sweeps_epoch_count() -> None:
    def c(best: list[float]) -> pd.DataFrame:
        return pd.DataFrame({"epochs": range(1, len(best) + 1), "best_so_far": best})

    row = equal_budget(3, {"asha+tpe": c([0.1, 0.4, 0.5]), "random": c([0.2, 0.3, 0.3, 0.6])})
    assert row == {"seed": 3, "epochs": 3, "asha+tpe_best": 0.5, "random_best": 0.3}


def test_overhead_row_divides_by_the_mean_of_both_plain_runs() -> None:
    # plain: 100 img/s steady, 300 img/s steady in the second run (harmonic mean of 200 and
    # 600 = 2 / (1/200 + 1/600)), so the yardstick is 200 img/s
    plain = Measured("plain PyTorch", [50.0, 100.0, 100.0], [3.0, 2.0, 2.0], 8.0, 200)
    again = Measured("plain PyTorch (again)", [10.0, 200.0, 600.0], [20.0, 1.0, 0.4], 22.0, 200)
    # 300 training images at 20, 100 and 300 img/s: 15 + 3 + 1 = 19 s of training in 21.5 s
    # of epochs (2.5 s evaluating), 25 s of wall time (3.5 s outside the epochs)
    fit = Measured("engine.fit (no Ray)", [20.0, 100.0, 300.0], [16.0, 4.0, 1.5], 25.0, 300)
    runs = [plain, fit, again]
    assert baseline(runs) == pytest.approx(200.0)
    row = fit.row(baseline(runs))
    assert row["path"] == "engine.fit (no Ray)" and row["epochs"] == 3
    assert row["img_per_s"] == pytest.approx(150.0)  # 2 / (1/100 + 1/300): epoch 1 left out
    assert row["vs_plain"] == pytest.approx(0.75)
    assert row["train_s"] == pytest.approx(19.0)
    assert row["eval_s"] == pytest.approx(2.5)
    assert row["startup_s"] == pytest.approx(3.5)
    assert row["wall_s"] == 25.0
    assert math.isnan(fit.row(None)["vs_plain"])  # no yardstick, no ratio


def test_summary_counts_epochs_and_time_to_within_tolerance_of_the_best() -> None:
    def rows(trials: dict[str, tuple[list[float], list[float]]]) -> list[dict]:
        return [
            {"trial_id": tid, "training_iteration": i + 1, "val_f1": f1, "time_total_s": t}
            for tid, (f1s, times) in trials.items()
            for i, (f1, t) in enumerate(zip(f1s, times, strict=True))
        ]

    outcomes = {
        # ASHA stopped "a1" after one epoch; "a2" ran 3 and found the best, 0.80
        "asha+tpe": {
            "history": rows({"a2": ([0.40, 0.70, 0.80], [1.0, 2.5, 4.0]), "a1": ([0.30], [2.0])}),
            "order": ["a1", "a2"],
            "wall_s": 9.0,
        },
        # random search ran both trials to 3 epochs; its best, 0.795, is within 0.01 of 0.80
        "random": {
            "history": rows({"r1": ([0.20, 0.50, 0.60], [1.0, 2.0, 3.0]),
                             "r2": ([0.30, 0.75, 0.795], [1.0, 2.0, 4.0])}),
            "order": ["r1", "r2"],
            "wall_s": 12.0,
        },
    }
    table, curves = _summarise(5, outcomes)
    by = {r["strategy"]: r for r in table}
    assert by["asha+tpe"]["target_f1"] == by["random"]["target_f1"] == pytest.approx(0.79)
    # ASHA: a1's epoch, then a2's three; 0.80 at the 4th epoch, after 2 + 1 + 1.5 + 1.5 s
    assert by["asha+tpe"] | {"target_f1": None} == {
        "seed": 5, "strategy": "asha+tpe", "trials": 2, "total_epochs": 4,
        "best_val_f1": 0.80, "target_f1": None, "epochs_to_target": 4,
        "trial_s_to_target": pytest.approx(6.0), "total_trial_s": pytest.approx(6.0), "sweep_wall_s": 9.0,
    }  # fmt: skip
    # random: 0.795 at its 6th and last epoch, after 3 + 4 s of trials
    assert (by["random"]["epochs_to_target"], by["random"]["total_epochs"]) == (6, 6)
    assert by["random"]["trial_s_to_target"] == pytest.approx(7.0)
    assert by["random"]["best_val_f1"] == pytest.approx(0.795)
    assert _ratio(table) == pytest.approx(4 / 6)
    assert curves["asha+tpe"]["best_so_far"].tolist() == [0.30, 0.40, 0.70, 0.80]


def test_population_table_orders_side_by_side_epochs_by_report_time() -> None:
    def rows(reports: list[tuple[str, int, float, int, str | None]]) -> list[dict]:
        return [
            {"trial_id": tid, "training_iteration": it, "val_f1": f1, "timestamp": ts, "exploited_from": hop}
            for tid, it, f1, ts, hop in reports
        ]

    outcomes = {
        # p2 copied p1 after its own epoch 2 (its epoch 3 row names p1); reports interleave
        (0, "pbt"): {"history": rows([("p1", 1, 0.2, 100, None), ("p2", 1, 0.1, 100, None),
                                      ("p1", 2, 0.5, 103, None), ("p2", 2, 0.3, 104, None),
                                      ("p2", 3, 0.6, 106, "p1"), ("p1", 3, 0.55, 107, None)]),
                     "wall_s": 10.0},
        # the same seed's ASHA side by side: 4 epochs, its best (0.7) at its 4th, 9 s in
        (0, "asha"): {"history": rows([("a1", 1, 0.4, 50, None), ("a2", 1, 0.3, 51, None),
                                       ("a1", 2, 0.45, 55, None), ("a1", 3, 0.7, 59, None)]),
                      "wall_s": 12.0},
    }  # fmt: skip
    table, curves = population_table([0], outcomes)
    # the pbt curve follows the timestamps, not the trials: p1, p2 (same second: by trial), ...
    assert curves[(0, "pbt")]["trial_id"].tolist() == ["p1", "p2", "p1", "p2", "p2", "p1"]
    assert curves[(0, "pbt")]["best_so_far"].tolist() == [0.2, 0.2, 0.5, 0.5, 0.6, 0.6]
    assert curves[(0, "pbt")]["wall_s"].tolist() == [0, 0, 3, 4, 6, 7]
    by = {r["strategy"]: r for r in table}
    assert (by["pbt"]["trials"], by["pbt"]["total_epochs"], by["pbt"]["exploits"]) == (2, 6, 1)
    assert (by["asha"]["exploits"], by["asha"]["best_val_f1"]) == (0, 0.7)
    # equal compute: the cheaper one's 4 epochs; equal wall: the shorter one's 7 s
    assert by["pbt"]["equal_epochs"] == by["asha"]["equal_epochs"] == 4
    assert (by["pbt"]["best_at_equal_epochs"], by["asha"]["best_at_equal_epochs"]) == (0.5, 0.7)
    assert by["pbt"]["equal_wall_s"] == 7
    assert (by["pbt"]["best_at_equal_wall"], by["asha"]["best_at_equal_wall"]) == (0.6, 0.45)


def test_ratio_treats_never_reaching_the_target_explicitly() -> None:
    def rows(asha: int | None, rand: int | None) -> list[dict]:
        return [
            {"strategy": "asha+tpe", "epochs_to_target": asha, "total_epochs": 40},
            {"strategy": "random", "epochs_to_target": rand, "total_epochs": 90},
        ]

    assert _ratio(rows(10, 40)) == pytest.approx(0.25)
    assert _ratio(rows(10, None)) == pytest.approx(10 / 90)  # bound: random's whole budget
    assert _ratio(rows(None, 40)) == float("inf")


def test_data_benchmark_quick_writes_json(tmp_path: Path) -> None:
    assert main(["bench", "data", "--quick", "--out", str(tmp_path)]) == 0
    doc = _read(tmp_path, "data")
    decode = doc["tables"]["decode and cache"]
    assert [r["task"] for r in decode] == ["task1", "task2"]
    assert all(r["images"] > 0 and r["first_decode_s"] > 0 for r in decode)
    augment = doc["tables"]["augmentation (1 thread)"]
    assert all(r["augment_img_per_s"] > 0 for r in augment)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a real GPU run is not a smoke test")
def test_gpu_benchmark_skips_cleanly_without_cuda(tmp_path: Path) -> None:
    assert main(["bench", "gpu", "--quick", "--out", str(tmp_path)]) == 0
    doc = _read(tmp_path, "gpu")
    assert "no CUDA" in doc["skipped"] and doc["tables"] == {}


@pytest.mark.slow
def test_overhead_benchmark_quick_runs_every_path(tmp_path: Path) -> None:
    assert main(["bench", "overhead", "--quick", "--out", str(tmp_path)]) == 0
    doc = _read(tmp_path, "overhead")
    rows = doc["tables"]["throughput and wall time per path"]
    assert [r["path"] for r in rows] == [
        "plain PyTorch",
        "engine.fit (no Ray)",
        "poketune train (TorchTrainer)",
        "poketune tune (1 trial)",
        "plain PyTorch (again)",
    ]
    assert all(r["epochs"] == 2 and r["img_per_s"] > 0 for r in rows)
    # every path against the mean of the two plain runs' steady rates (the arithmetic itself
    # is checked on hand-made numbers above)
    yardstick = (rows[0]["img_per_s"] + rows[-1]["img_per_s"]) / 2
    assert doc["summary"]["plain_img_per_s (mean of both)"] == pytest.approx(yardstick)
    for r in rows:
        assert r["vs_plain"] == pytest.approx(r["img_per_s"] / yardstick)
    # the targets judge the two Ray paths, at >= 0.95 of the plain loop
    by = {r["path"]: r for r in rows}
    ray_paths = ["poketune train (TorchTrainer)", "poketune tune (1 trial)"]
    assert [(t["metric"], t["value"], t["limit"], t["op"]) for t in doc["targets"]] == [
        (f"{p} / plain", pytest.approx(by[p]["vs_plain"]), 0.95, ">=") for p in ray_paths
    ]


@pytest.mark.slow
def test_sweep_efficiency_quick_compares_the_strategies(tmp_path: Path) -> None:
    assert main(["bench", "sweep_efficiency", "--quick", "--out", str(tmp_path)]) == 0
    doc = _read(tmp_path, "sweep_efficiency")
    rows = doc["tables"]["per seed and strategy"]
    assert sorted(r["strategy"] for r in rows) == ["asha+gp", "asha+random", "asha+tpe", "median+tpe", "random"]
    by = {r["strategy"]: r for r in rows}
    # random search without pruning runs every trial to max_epochs; the pruning ones never run more
    assert by["random"]["total_epochs"] == doc["config"]["samples"] * doc["config"]["max_epochs"]
    for label in ("asha+tpe", "median+tpe", "asha+random", "asha+gp"):
        assert by[label]["total_epochs"] <= by["random"]["total_epochs"]
    # the target is still ASHA + TPE against random search: the best of those two
    assert rows[0]["target_f1"] == pytest.approx(max(by[k]["best_val_f1"] for k in ("asha+tpe", "random")) - 0.01)
    # equal compute: every strategy's best after the cheapest one's epochs, from its own curve
    cheapest = min(r["total_epochs"] for r in rows)
    for t in doc["tables"]["per strategy"]:
        c = pd.DataFrame(doc["extra"]["curves"][f"{t['strategy']}-seed0"])
        assert t["mean_best_at_equal_epochs"] == pytest.approx(c.loc[c["epochs"] <= cheapest, "best_so_far"].max())
        assert t["mean_best_val_f1"] == pytest.approx(by[t["strategy"]]["best_val_f1"])
    # each strategy's epochs to the target are where its own curve first reaches it
    for r in rows:
        c = pd.DataFrame(doc["extra"]["curves"][f"{r['strategy']}-seed{r['seed']}"])
        assert len(c) == r["total_epochs"]
        hit = c.loc[c["best_so_far"] >= r["target_f1"], "epochs"]
        assert r["epochs_to_target"] == (int(hit.iloc[0]) if len(hit) else None)
    assert (tmp_path / "sweep_efficiency.png").stat().st_size > 0
    # PBT runs its population side by side, after the one-at-a-time sweeps
    (pbt,) = doc["tables"]["side by side (2 trials at once)"]
    assert pbt["strategy"] == "pbt" and pbt["trials"] == doc["config"]["population"] == 2
    pbt_curve = pd.DataFrame(doc["extra"]["curves"]["pbt-seed0"])
    assert pbt["total_epochs"] == len(pbt_curve) > 0
    assert pbt["best_val_f1"] == pytest.approx(pbt_curve["val_f1"].max())


@pytest.mark.slow
def test_trial_overhead_quick_measures_both_kinds_of_trial(tmp_path: Path) -> None:
    assert main(["bench", "trial_overhead", "--quick", "--out", str(tmp_path)]) == 0
    rows = _read(tmp_path, "trial_overhead")["tables"]["seconds per trial outside training"]
    assert len(rows) == 3
    # every trial reported (a hung TorchTrainer sweep shows up as a note and no results)
    assert all(r["trials_with_results"] == r["trials"] for r in rows), rows
    assert all(r["overhead_per_trial_s"] > 0 for r in rows)


@pytest.mark.slow
def test_gpu_benchmark_code_runs_on_the_cpu(tmp_path: Path) -> None:
    from bench.gpu import run

    report = run(quick=True, out=tmp_path, device="cpu")
    assert report.skipped is None
    packing = report.tables["packing: trials sharing one GPU"]
    assert [p["trials"] for p in packing] == [1, 4]
    assert all(p["images_per_wall_s"] > 0 for p in packing)
    assert len(report.tables["throughput per path"]) == 5


@pytest.mark.slow
def test_soak_quick_samples_the_sweep_and_finds_no_leak(tmp_path: Path) -> None:
    assert main(["bench", "soak", "--quick", "--tracemalloc", "--out", str(tmp_path)]) == 0
    doc = _read(tmp_path, "soak")
    rows = doc["tables"]["samples"]
    assert len(rows) >= 3 and rows[0]["trials"] < 30 and rows[-1]["trials"] == 30  # sampled while it ran
    assert all(r["driver_rss_mb"] > 0 and r["driver_fds"] > 0 for r in rows)
    summary = doc["summary"]
    assert summary["trials"] == 30 and summary["driver_rss_mb per 100 trials"] is not None
    # after the sweep: no trial actor alive, no placement group left
    assert summary["trial_actors_alive_after"] == 0 and summary["placement_groups_after"] == 0
    assert summary["KB per trial"] == pytest.approx(summary["sweep folder MB"] * 1024 / 30, rel=0.01)
    # the traced growth is split by package, from a snapshot a quarter in to one after the sweep
    first, last = (float(t) for t in summary["traced between trials"].split(" and "))
    assert 7 <= first < last == 30
    packages = summary["by package, MB per 100 trials"]
    assert set(packages) <= {"ray", "optuna", "sqlalchemy", "pandas", "pyarrow", "torch", "poketune", "other"}
    assert sum(packages.values()) == pytest.approx(summary["traced Python growth MB per 100 trials"], abs=0.05)


def test_soak_attributes_traced_growth_to_the_package_that_allocated() -> None:
    import tracemalloc

    from bench.soak import by_package

    tracemalloc.start(1)
    try:
        first = tracemalloc.take_snapshot()
        kept = [bytes(1000) + bytes([i % 256]) for i in range(4000)]  # ~4 MB, allocated in this file
        diff = tracemalloc.take_snapshot().compare_to(first, "filename")
    finally:
        tracemalloc.stop()
    grown = by_package(diff)
    assert len(kept) == 4000 and grown["other"] >= 3.5  # a test file is no package's
    site = "/venv/lib/python3.11/site-packages"
    fake = [
        SimpleNamespace(traceback=[SimpleNamespace(filename=f"{site}/ray/tune/experiment/trial.py")], size_diff=2**20),
        SimpleNamespace(traceback=[SimpleNamespace(filename=f"{site}/optuna/storages/_in_memory.py")], size_diff=2**19),
        SimpleNamespace(traceback=[SimpleNamespace(filename="/work/repo/tuning/_progress.py")], size_diff=2**18),
    ]
    assert by_package(fake) == {"ray": 1.0, "optuna": 0.5, "poketune": 0.25}  # type: ignore[arg-type]


def test_soak_folder_size_skips_files_that_vanish_while_walked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tune deletes a trial's older checkpoint while the sampler walks the sweep: that file
    is skipped, the sampler thread does not die (it did in a fresh-clone CI run)."""
    import os

    from bench import soak

    (tmp_path / "kept").write_bytes(b"x" * 2**20)
    (tmp_path / "checkpoint_000000").mkdir()
    (tmp_path / "checkpoint_000000" / "checkpoint.pt").write_bytes(b"y" * 2**20)
    real_stat = os.stat

    def stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if "checkpoint_000000" in str(path):
            raise FileNotFoundError(path)  # deleted between listing and stat
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(soak.os, "stat", stat)
    assert soak._folder_mb(tmp_path) == pytest.approx(1.0)
