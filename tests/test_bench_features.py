"""``bench features --quick``: the arms take the paths they say, and the second cached trial
reuses the first one's features (no timing assertions: the numbers go to docs/benchmarks.md)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import run_benchmark


def test_feature_cache_benchmark_runs_its_three_arms(tmp_path: Path) -> None:
    run_benchmark("features", quick=True, out=tmp_path)
    doc = json.loads((tmp_path / "features.json").read_text())
    live, first, second = doc["tables"]["head trial wall time"]
    assert (live["path"], first["path"], second["path"]) == ("live", "cached", "cached")
    assert live["extract_s"] == 0 and first["extract_s"] > 0 and second["extract_s"] == 0
    assert doc["summary"]["speedup_first_trial"] == live["wall_s"] / first["wall_s"]
    (target,) = doc["targets"]
    assert target["metric"] == "speedup_first_trial" and target["limit"] == 10.0
