"""Bad input at the command line: every command, given malformed values, answers with one line
that names the argument (or the file), exits 2, prints no traceback, starts nothing, and leaves
what is already in the storage and the MLflow store as it was."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tuning.cli import main

# a stand-in for a sweep already in the storage and a local MLflow store: the bytes must survive
SWEEP_FILES = {"old-sweep/poketune_sweep.json": b'{"name": "old-sweep"}', "old-sweep/t1/result.json": b"{}\n"}
STORE = b"SQLite format 3\x00 not really, but it must stay these bytes"


@pytest.fixture()
def world(tmp_path: Path, task2_data: Path) -> dict[str, Path]:
    storage = tmp_path / "runs"
    for rel, content in SWEEP_FILES.items():
        (storage / rel).parent.mkdir(parents=True, exist_ok=True)
        (storage / rel).write_bytes(content)
    (tmp_path / "mlflow.db").write_bytes(STORE)
    (tmp_path / "list.yaml").write_text("- optim.lr\n- model.channels\n")
    (tmp_path / "space.yaml").write_text(
        "task: task2\nasha: {max_epochs: 2, grace_period: 1, reduction_factor: 2}\n"
        "params:\n  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
    )
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "answers.csv").write_text("id,label\na,Fire\n")
    (tmp_path / "not_a_model").mkdir()
    return {"tmp": tmp_path, "storage": storage, "data": task2_data, "space": tmp_path / "space.yaml"}


def _snapshot(tmp: Path) -> dict[str, str]:
    return {str(p.relative_to(tmp)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp.rglob("*")) if p.is_file()}


W = dict[str, Path]
#: (case id, argv from the world, what the one line must name)
CASES: list[tuple[str, Callable[[W], list[str]], str]] = [
    ("tune-samples-negative", lambda w: ["tune", str(w["space"]), "--data", str(w["data"]), "--samples", "-3"], "argument --samples"),
    ("tune-samples-zero", lambda w: ["tune", str(w["space"]), "--data", str(w["data"]), "--samples", "0"], "argument --samples"),
    ("tune-samples-text", lambda w: ["tune", str(w["space"]), "--data", str(w["data"]), "--samples", "many"], "argument --samples"),
    ("tune-budget-zero", lambda w: ["tune", str(w["space"]), "--data", str(w["data"]), "--time-budget", "0"], "argument --time-budget"),
    ("tune-budget-negative", lambda w: ["tune", str(w["space"]), "--data", str(w["data"]), "--time-budget", "-5m"], "argument --time-budget"),
    ("tune-budget-unit", lambda w: ["tune", str(w["space"]), "--data", str(w["data"]), "--time-budget", "10x"], "argument --time-budget"),
    ("tune-budget-seconds", lambda w: ["tune", str(w["space"]), "--data", str(w["data"]), "--time-budget-s", "-1"], "argument --time-budget-s"),
    ("tune-workers-zero", lambda w: ["tune", str(w["space"]), "--data", str(w["data"]), "--workers-per-trial", "0"], "argument --workers-per-trial"),
    ("tune-gpu-fraction", lambda w: ["tune", str(w["space"]), "--data", str(w["data"]), "--gpus-per-trial", "1.5"], "argument --gpus-per-trial"),
    ("tune-gpu-negative", lambda w: ["tune", str(w["space"]), "--data", str(w["data"]), "--gpus-per-trial", "-1"], "argument --gpus-per-trial"),
    ("tune-cpus-zero", lambda w: ["tune", str(w["space"]), "--data", str(w["data"]), "--cpus-per-trial", "0"], "argument --cpus-per-trial"),
    ("tune-cpus-inf", lambda w: ["tune", str(w["space"]), "--data", str(w["data"]), "--cpus-per-trial", "inf"], "argument --cpus-per-trial"),
    ("tune-concurrency-zero", lambda w: ["tune", str(w["space"]), "--data", str(w["data"]), "--max-concurrent", "0"], "argument --max-concurrent"),
    ("tune-failures", lambda w: ["tune", str(w["space"]), "--data", str(w["data"]), "--max-failures", "-2"], "argument --max-failures"),
    ("tune-cv-one-fold", lambda w: ["tune", str(w["space"]), "--data", str(w["data"]), "--cv", "1"], "argument --cv"),
    ("tune-storage-scheme", lambda w: ["tune", str(w["space"]), "--data", str(w["data"]), "--storage", "ftp://host/runs"], "argument --storage"),
    ("tune-space-not-a-mapping", lambda w: ["tune", str(w["tmp"] / "list.yaml"), "--data", str(w["data"]), "--samples", "1", "--storage", str(w["storage"])], "list.yaml"),
    ("tune-space-missing", lambda w: ["tune", str(w["tmp"] / "nope.yaml"), "--data", str(w["data"]), "--samples", "1", "--storage", str(w["storage"])], "nope.yaml"),
    ("tune-unknown-key", lambda w: ["tune", str(w["space"]), "--data", str(w["data"]), "--samples", "1", "--storage", str(w["storage"]), "--set", "optim.nope=1"], "optim.nope"),
    ("train-workers-zero", lambda w: ["train", "--task", "task2", "--data", str(w["data"]), "--workers", "0"], "argument --workers"),
    ("train-unknown-task", lambda w: ["train", "--task", "task9", "--data", str(w["data"])], "argument --task"),
    ("make-data-scale", lambda w: ["make-data", "--kind", "task2", "--out", str(w["tmp"] / "new"), "--scale", "-1"], "argument --scale"),
    ("results-top-zero", lambda w: ["results", "old-sweep", "--storage", str(w["storage"]), "--top", "0"], "argument --top"),
    ("results-unknown-sweep", lambda w: ["results", "nope", "--storage", str(w["storage"])], "no sweep named 'nope'"),
    ("export-top-negative", lambda w: ["export", "old-sweep", "--storage", str(w["storage"]), "--top", "-1"], "argument --top"),
    ("retrain-top-zero", lambda w: ["retrain", "old-sweep", "--storage", str(w["storage"]), "--top", "0"], "argument --top"),
    ("retrain-seeds-zero", lambda w: ["retrain", "old-sweep", "--storage", str(w["storage"]), "--seeds", "0"], "argument --seeds"),
    ("report-storage-scheme", lambda w: ["report", "old-sweep", "--storage", "nope://x"], "argument --storage"),
    ("score-binary-csv", lambda w: ["score", str(w["tmp"] / "binary.csv"), "--answers", str(w["tmp"] / "answers.csv")], "binary.csv"),
    ("submit-folder-as-model", lambda w: ["submit", "--model", str(w["tmp"] / "not_a_model"), "--data", str(w["data"]), "--out", str(w["tmp"] / "s.csv")], "not_a_model"),
    ("check-missing-data", lambda w: ["check", "--data", str(w["tmp"] / "no_data")], "no_data"),
    ("check-near-bits", lambda w: ["check", "--data", str(w["data"]), "--near-bits", "-1"], "argument --near-bits"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "names"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_is_one_line_exit_2_and_changes_nothing(
    world: W, argv: Callable[[W], list[str]], names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(world["tmp"])
    try:
        code = main(argv(world))
    except SystemExit as exc:  # argparse's own exit
        code = exc.code  # type: ignore[assignment]
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err and names in lines[0], lines[0]
    assert lines[0].startswith("poketune ")
    assert _snapshot(world["tmp"]) == before  # no sweep folder, no output file, the store untouched
