"""``poketune``: parse arguments, build a config, call one function.

Each subcommand lives in ``tuning/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; this file only collects them. A command's module is imported only when
that command is parsed, and its heavy modules (Ray, torch, pandas, MLflow, Optuna) only when it
runs, so ``poketune --help`` and ``poketune score --help`` start in a fraction of a second.

Errors: the user's mistakes (:data:`USER_ERRORS`, a :class:`~training.errors.PoketuneError`: a bad key,
file, URI, space or submission)
print as one line and exit 2; anything else is a bug and keeps its traceback (``-v`` shows the
traceback of user errors too).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Iterable
from typing import Any, NoReturn

from training.errors import PoketuneError

__all__ = ["COMMANDS", "USER_ERRORS", "build_parser", "main"]

#: subcommand → (module under tuning.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "make-data": ("make_data", "generate a synthetic Kaggle-layout dataset (task1|task2|task3)"),
    "check": ("check", "check a dataset: counts, unreadable files, duplicates, train/test leaks"),
    "train": ("train", "train one config through Ray Train's TorchTrainer"),
    "tune": ("tune", "run a Ray Tune sweep (Optuna TPE + ASHA) from a YAML search space"),
    "results": ("results", "query a sweep's trials as a table / CSV / Parquet / JSON"),
    "report": ("report", "write a sweep's HTML report (plots, learning curves, trial table)"),
    "errors": ("errors", "a sweep's best model's mistakes and the likely mislabelled images (cleanlab)"),
    "export": ("export", "export a sweep's trials to MLflow"),
    "retrain": ("retrain", "retrain the best trial's config on train+val and register it"),
    "submit": ("submit", "predict the test images and write a validated submission CSV"),
    "score": ("score", "score a submission against known labels"),
    "compare": ("compare", "compare runs side by side (per-class report, curves)"),
    "bench": ("bench", "run the benchmarks in bench/"),
}

#: what the CLI prints as one line: every user-facing error class subclasses PoketuneError
#: (ConfigError, DataError, ModelURIError, SubmissionError, ...); a missing or existing file is
#: the user's too
USER_ERRORS: tuple[type[BaseException], ...] = (PoketuneError, FileNotFoundError, FileExistsError)


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line (argparse's usage block buries the message): what is wrong,
    with the argument's name, and where the usage is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _CommandParser(_Parser):
    """A subcommand's parser: its module adds the arguments the first time it parses."""

    command_module: str | None = None

    def load(self) -> None:
        if self.command_module is None:
            return
        module = importlib.import_module(self.command_module)
        self.command_module = None
        module.add_arguments(self)
        self.set_defaults(_run=module.run)

    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        self.load()
        return super().parse_known_args(args, namespace)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="poketune", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser
    )
    for name, (module, help_text) in COMMANDS.items():
        qualified = f"tuning.commands.{module}"
        if importlib.util.find_spec(qualified) is None:  # a command left out of this install
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.command_module = qualified
        p.add_argument("-v", "--verbose", action="store_true", help="full Ray/MLflow logging")
    return parser


def _quiet() -> None:
    """Ray, Tune, Optuna and MLflow are chatty by default; ``-v`` brings everything back.

    Called only once a command runs (``--help`` never gets here): it imports Optuna.
    """
    # Tune's own tables and banners: poketune prints its own progress lines
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # with CheckpointConfig(num_to_keep=1) Tune snapshots the experiment at every trial
    # checkpoint on purpose (a resumed sweep then never repeats a reported epoch)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("ray", "ray.tune", "ray.train", "mlflow", "optuna", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        # optuna resets its logger's level when first imported: set it afterwards
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:  # pragma: no cover - optuna is a dependency
        pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(message)s",
    )
    logging.getLogger("poketune").setLevel(logging.INFO)
    if not args.verbose:
        _quiet()
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; a sweep can be continued with --resume", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.verbose or not isinstance(exc, USER_ERRORS):
            raise  # a bug of ours: the traceback says where
        print(f"poketune {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
