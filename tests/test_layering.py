"""Layering: ``training/`` is the lower layer. It may not import ``tuning`` (sweeps, MLflow,
the CLI) or ``bench``, not even inside a function, so the training code runs, and is tested,
without the layers built on it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UPPER = ("tuning", "bench")


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import anywhere in ``tree``, plus ``import_module("…")`` calls
    with a literal name."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _upward(tree: ast.AST) -> list[str]:
    return [
        f"line {line}: {name}"
        for line, name in _imported(tree)
        if name.split(".")[0] in UPPER
    ]


def test_the_checker_sees_imports_inside_functions() -> None:
    source = (
        "import os\nfrom training import config\n"
        "def f():\n    from tuning.sweep import init_ray\n"
        "    import bench._common\n    importlib.import_module('tuning.results')\n"
    )
    assert _upward(ast.parse(source)) == [
        "line 4: tuning.sweep", "line 5: bench._common", "line 6: tuning.results"
    ]


@pytest.mark.parametrize(
    "path", sorted(REPO.glob("training/**/*.py")), ids=lambda p: str(p.relative_to(REPO))
)
def test_training_does_not_import_tuning_or_bench(path: Path) -> None:
    bad = _upward(ast.parse(path.read_text(), filename=str(path)))
    assert not bad, f"{path.relative_to(REPO)} imports an upper layer: {'; '.join(bad)}"


# Tune's and Optuna's own files and private state: read through ExperimentAnalysis and
# optuna.load_study (tuning/results.py), never by hand (issue 15)
_TUNE_PRIVATE = ("_ot_study", "experiment_state-", "result.json", "params.json", "error.txt")


@pytest.mark.parametrize(
    "path",
    sorted(p for d in UPPER for p in (REPO / d).rglob("*.py")),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_nothing_reads_tunes_files_or_private_searcher_state(path: Path) -> None:
    text = path.read_text()
    # results.py names experiment_state-*.json in its error message (a glob, not a parse)
    allowed = {"experiment_state-"} if path == REPO / "tuning" / "results.py" else set()
    found = [s for s in _TUNE_PRIVATE if s in text and s not in allowed]
    assert not found, f"{path.relative_to(REPO)} reads {found}: use tuning.results.Sweep"
