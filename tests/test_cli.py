"""The ``poketune`` CLI itself: start-up cost, what it prints for the user's mistakes and for
ours, and the sweep summary line. Nothing here starts Ray."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from training.config import ConfigError
from training.errors import PoketuneError
from tuning.cli import COMMANDS, USER_ERRORS, main

REPO = Path(__file__).resolve().parents[1]
#: what `poketune --help` and `poketune COMMAND --help` must not import (seconds of start-up)
HEAVY = ("ray", "torch", "mlflow", "optuna", "sklearn", "pandas")


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter in the repository: what a shell running `poketune` gets."""
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def _heavy_after(code: str) -> Any:
    proc = _python("-c", code + f"\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_building_the_parser_imports_no_heavy_module() -> None:
    assert _heavy_after("import tuning.cli\ntuning.cli.build_parser()") == []


def test_every_commands_help_imports_no_heavy_module() -> None:
    code = f"""
import contextlib, io, json, sys
from tuning.cli import build_parser
heavy = {{}}
for name in {list(COMMANDS)!r}:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        build_parser().parse_args([name, "--help"])
    assert "usage: poketune " + name in out.getvalue(), out.getvalue()
    heavy[name] = [m for m in {HEAVY!r} if m in sys.modules]
print(json.dumps(heavy))
"""
    proc = _python("-c", code)
    assert proc.returncode == 0, proc.stderr
    heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(heavy) == set(COMMANDS)
    assert heavy == {name: [] for name in heavy}


def test_score_help_as_a_module_exits_0_without_heavy_imports() -> None:
    proc = _python("-m", "tuning.cli", "score", "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--answers" in proc.stdout
    # the same run, `-m` included, reporting what it imported as the interpreter exits
    code = f"""
import atexit, json, runpy, sys
atexit.register(lambda: print(json.dumps([m for m in {HEAVY!r} if m in sys.modules])))
sys.argv = ["poketune", "score", "--help"]
runpy.run_module("tuning.cli", run_name="__main__", alter_sys=True)
"""
    proc = _python("-c", code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--answers" in proc.stdout
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_a_bug_keeps_its_traceback() -> None:
    code = """
import sys
import tuning.commands.score as score

def run(args):
    return {}["epoch"]  # a bug of ours, not the user's mistake

score.run = run
from tuning.cli import main
sys.exit(main(["score", "sub.csv", "--answers", "answers.csv"]))
"""
    proc = _python("-c", code)
    assert proc.returncode not in (0, 2)
    assert "Traceback (most recent call last)" in proc.stderr
    assert "KeyError: 'epoch'" in proc.stderr
    assert "error: 'epoch'" not in proc.stderr


@pytest.mark.parametrize("exc", [RuntimeError("worker died"), ValueError("bad shape"), TypeError("x")])
def test_unexpected_errors_propagate(exc: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    def run(args: Any) -> int:
        raise exc

    monkeypatch.setattr("tuning.commands.score.run", run)
    with pytest.raises(type(exc)):
        main(["score", "sub.csv", "--answers", "answers.csv"])


def test_a_user_error_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(args: Any) -> int:
        raise ConfigError("unknown config key 'nope'")

    monkeypatch.setattr("tuning.commands.score.run", run)
    assert main(["score", "sub.csv", "--answers", "answers.csv"]) == 2
    assert capsys.readouterr().err == "poketune score: error: unknown config key 'nope'\n"
    # -v: the user asked for everything, the traceback included
    with pytest.raises(ConfigError):
        main(["score", "sub.csv", "--answers", "answers.csv", "-v"])


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("training.config", "ConfigError"),
        ("tuning.space", "SpaceError"),
        ("training.registry", "UnknownNameError"),
        ("training.data", "DataError"),
        ("training.models", "PretrainedWeightsError"),
        ("training.checkpoint", "CheckpointError"),
        ("tuning.submission", "SubmissionError"),
        ("tuning._mlflow", "MlflowUnreachableError"),
        ("tuning.results", "SweepNotFoundError"),
        ("tuning.resolve", "ModelURIError"),
        ("tuning.predict", "PredictorError"),
    ],
)
def test_user_facing_errors_are_poketune_errors(module: str, name: str) -> None:
    # a class that stopped being one would silently turn the user's mistake into a traceback
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, PoketuneError) and issubclass(cls, USER_ERRORS)


def test_real_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--task", "task1", "--data", str(tmp_path), "--set", "nope=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("poketune train: error: unknown config key 'nope'") and err.count("\n") == 1
    assert main(["results", "nope", "--storage", str(tmp_path)]) == 2  # SweepNotFoundError
    err = capsys.readouterr().err
    assert err.startswith("poketune results: error: no sweep named 'nope'") and err.count("\n") == 1


def test_tune_prints_the_spaces_own_metric(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tuning.sweep
    from tuning.sweep import SweepOptions, SweepResult

    seen: list[SweepOptions] = []

    def run_sweep(opts: SweepOptions) -> SweepResult:
        seen.append(opts)
        return SweepResult(
            name="s", path="/runs/s", metric="val_loss", mode="min", best_trial_id="t1",
            best_config={"optim.lr": 0.01}, best_metric=0.3125, best_checkpoint="/runs/s/ck",
            wall_time_s=3.0,
        )

    monkeypatch.setattr(tuning.sweep, "run_sweep", run_sweep)
    assert main(["tune", "space.yaml", "--data", "d", "--samples", "2", "--name", "s"]) == 0
    out = capsys.readouterr().out
    assert "best trial t1: val_loss 0.3125" in out
    assert "val_f1" not in out
    assert seen[0].samples == 2 and seen[0].name == "s"


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--task", "task3", "--data", "{data}"],
        ["tune", str(Path(__file__).parents[1] / "search_spaces" / "task3_transfer_resnet.yaml"),
         "--data", "{data}", "--samples", "1",
         "--storage", "{tmp}"],
    ],
)
def test_missing_hub_weights_fail_in_one_line_before_ray(
    argv: list[str], task1_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """torchvision's ImageNet weights are not in this machine's (empty) hub cache: the driver
    says so, naming the offline preset, instead of a WorkerGroupError from every worker."""
    args = [a.format(data=task1_data, tmp=tmp_path) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "task3_lite" in err and "model.weights_path" in err
    import ray

    assert not ray.is_initialized()
    assert not any(tmp_path.iterdir())  # no sweep folder left behind
