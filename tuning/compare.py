"""Compare trained runs side by side: per-class report, accuracy/loss curves, sizes, times.

A run is named by a *spec*:

* ``sweep:NAME`` — the best trial of a sweep under ``storage`` (``sweep:NAME/TRIAL_ID`` for
  another trial); its data folder comes from the sweep's metadata;
* ``runs:/RUN_ID`` — an MLflow run holding ``checkpoint.pt`` (what ``poketune export`` logs;
  ``runs:/RUN_ID/some/path`` names the artifact);
* a path — a ``checkpoint.pt`` file or a folder holding one (``poketune train``/``retrain``
  output, a Tune trial checkpoint).

``LABEL=SPEC`` names the run in the report (default: derived from the spec). Each run's best
weights are evaluated on the validation split its own config makes of its data
(``prepare_data``: same seed and ``data.val_fraction`` as in training), so runs trained with
the same seed on the same data are compared on the same images.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from training.config import TrainConfig
from training.data import Preprocessing
from training.engine import prepare_data
from training.loop import ArrayLoader, evaluate
from training.models import count_parameters
from training.run import model_from_checkpoint

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "ComparisonResult",
    "ResolvedRun",
    "RunEvaluation",
    "compare_runs",
    "evaluate_run",
    "resolve_run",
    "write_report",
]

#: the files ``write_report`` produces in the output folder
REPORT_FILE = "report.md"
PER_CLASS_CSV = "per_class.csv"
SUMMARY_CSV = "summary.csv"
FIGURES = {"accuracy": "accuracy.png", "loss": "loss.png", "per_class_f1": "per_class_f1.png"}
MLFLOW_EXPERIMENT = "poketune-compare"


# ------------------------------------------------------------------------------ resolving
@dataclass
class ResolvedRun:
    """A spec turned into a checkpoint dict, a label and (when known) its data folder."""

    spec: str
    label: str
    state: dict[str, Any] = field(repr=False)
    source: str  # where the checkpoint was read from
    data_dir: str | None = None


@dataclass(frozen=True)
class _Context:
    storage: str
    mlflow_uri: str | None


Resolver = Callable[[str, _Context], ResolvedRun]


def _from_path(spec: str, ctx: _Context) -> ResolvedRun:
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"run {spec!r}: no such file or folder (expected a checkpoint path, "
            "sweep:NAME or runs:/RUN_ID)"
        )
    file = path / CHECKPOINT_FILE if path.is_dir() else path
    # Tune names checkpoint folders checkpoint_000012: the trial folder above says more
    folder = file.parent
    label = folder.parent.name if folder.name.startswith("checkpoint_") else folder.name
    return ResolvedRun(spec, label or file.stem, load_checkpoint(file), str(file))


def _from_sweep(spec: str, ctx: _Context) -> ResolvedRun:
    from tuning import results
    from tuning.storage import is_remote, local_copy

    name, _, trial = spec.removeprefix("sweep:").partition("/")
    frame = results.load(name, ctx.storage)
    usable = frame[frame["checkpoint"].notna()] if not frame.empty else frame
    if trial:
        usable = usable[usable["trial_id"].astype(str) == trial]
    if usable.empty:
        which = f"trial {trial!r}" if trial else "any trial"
        raise ValueError(f"run {spec!r}: sweep {name!r} has no checkpoint for {which}")
    row = usable.iloc[0]  # results.load sorts the best trial first
    ckpt = str(row["checkpoint"])
    local = local_copy(ckpt) if is_remote(ckpt) else Path(ckpt)
    meta = results.open_sweep(name, ctx.storage).meta
    return ResolvedRun(
        spec,
        f"{name}/{row['trial_id']}",
        load_checkpoint(local),
        ckpt,
        data_dir=meta.get("data"),
    )


def _from_mlflow(spec: str, ctx: _Context) -> ResolvedRun:
    from tuning._mlflow import default_tracking_uri, normalize_tracking_uri, tracking

    run_id, _, artifact = spec.removeprefix("runs:/").partition("/")
    uri = normalize_tracking_uri(ctx.mlflow_uri) if ctx.mlflow_uri else default_tracking_uri()
    from mlflow.exceptions import MlflowException

    with tracking(uri) as client, tempfile.TemporaryDirectory() as tmp:
        try:
            run = client.get_run(run_id)
            path = artifact or _checkpoint_artifact(client, run_id, run.data.tags)
            local = Path(client.download_artifacts(run_id, path, tmp))
        except MlflowException as exc:  # not a ValueError: the CLI would print a traceback
            raise ValueError(f"run {spec!r} in {uri}: {exc.message}") from None
        state = load_checkpoint(local)  # a folder holding checkpoint.pt works too
        label = run.info.run_name or f"mlflow-{run_id[:8]}"
        return ResolvedRun(spec, label, state, f"{uri} {spec}", _sweep_data(client, run))


def _checkpoint_artifact(client: MlflowClient, run_id: str, tags: dict[str, str]) -> str:
    """The tag ``poketune export`` sets, else the first ``checkpoint.pt`` in the artifacts."""
    from tuning.export import Tags

    if tags.get(Tags.CHECKPOINT_ARTIFACT):
        return tags[Tags.CHECKPOINT_ARTIFACT]
    pending = [""]
    while pending:  # breadth first: the shallowest checkpoint.pt wins
        folder = pending.pop(0)
        for item in client.list_artifacts(run_id, folder or None):
            if item.is_dir:
                pending.append(item.path)
            elif Path(item.path).name == CHECKPOINT_FILE:
                return str(item.path)
    raise FileNotFoundError(f"MLflow run {run_id} has no {CHECKPOINT_FILE} artifact")


def _sweep_data(client: MlflowClient, run: Any) -> str | None:
    """An exported trial's data folder, from its sweep's metadata (when still reachable)."""
    from tuning import results
    from tuning.export import PARENT_TAG, Tags

    tags = run.data.tags
    parent_id = tags.get(PARENT_TAG)
    if not (tags.get(Tags.SWEEP) and parent_id):
        return None
    try:
        storage = client.get_run(parent_id).data.tags.get(Tags.STORAGE)
        return str(results.open_sweep(tags[Tags.SWEEP], storage).meta.get("data")) if storage else None
    except (OSError, ValueError, KeyError):  # the sweep folder is gone or elsewhere: use --data
        return None


#: spec prefix → resolver; anything else is a path
_RESOLVERS: dict[str, Resolver] = {"sweep:": _from_sweep, "runs:/": _from_mlflow}
_LABEL = re.compile(r"^(?P<label>[\w.+-]+)=(?P<spec>.+)$")


def resolve_run(spec: str, *, storage: str, mlflow_uri: str | None = None) -> ResolvedRun:
    """Read the checkpoint ``spec`` names (see the module docstring for the forms)."""
    label = None
    m = _LABEL.match(spec)
    if m and not Path(spec).exists():
        label, spec = m["label"], m["spec"]
    ctx = _Context(storage=storage, mlflow_uri=mlflow_uri)
    resolver = next((r for p, r in _RESOLVERS.items() if spec.startswith(p)), _from_path)
    run = resolver(spec, ctx)
    if label:
        run.label = label
    return run


# ------------------------------------------------------------------------------ evaluating
@dataclass
class RunEvaluation:
    label: str
    spec: str
    source: str
    model: str
    image_size: int
    data_dir: str
    class_names: list[str]
    y_true: np.ndarray = field(repr=False)
    y_pred: np.ndarray = field(repr=False)
    accuracy: float
    macro_f1: float
    per_class: pd.DataFrame = field(repr=False)  # index class; precision, recall, f1, support
    params_total: int
    params_trainable: int  # in the run's last phase (model.freeze_depth)
    train_time_s: float  # sum of epoch_time_s
    epochs: int
    best_epoch: int
    history: pd.DataFrame = field(repr=False)
    notes: list[str] = field(default_factory=list)


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def evaluate_run(
    run: ResolvedRun,
    data_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    device: torch.device | None = None,
) -> RunEvaluation:
    """The run's best weights on the validation split of ``data_dir`` under its own config."""
    state = run.state
    cfg = TrainConfig.from_flat(state["config"])
    data, _ = prepare_data(data_dir, cfg, cache_dir=cache_dir)
    names = list(state["class_names"])
    if data.class_names != names:
        raise ValueError(
            f"run {run.label!r}: trained on classes {names} but {data_dir} has {data.class_names}"
        )
    if len(data.y_val) == 0:
        raise ValueError(f"run {run.label!r}: {data_dir} gives an empty validation split")
    notes = []
    if state.get("source_hash") and state["source_hash"] != data.source_hash:
        notes.append(f"evaluated on {data_dir}, whose files differ from the ones it trained on")
    history = pd.DataFrame(state.get("history") or [])
    if "val_loss" in history and history["val_loss"].isna().all():
        notes.append("trained on train+val (retrained): its validation scores are optimistic")

    model, _ = model_from_checkpoint(state)
    total, trainable = count_parameters(model)
    device = device or _device()
    model.to(device)
    loader = ArrayLoader(
        torch.as_tensor(data.x_val), torch.as_tensor(data.y_val), cfg.eval_batch_size
    )
    prep = Preprocessing.from_dict(data.preprocessing)
    res = evaluate(model, loader, device, prep, num_classes=len(names))

    labels = np.arange(len(names))
    p, r, f, s = precision_recall_fscore_support(
        res.y_true, res.y_pred, labels=labels, zero_division=0
    )
    per_class = pd.DataFrame(
        {"precision": p, "recall": r, "f1": f, "support": s.astype(int)},
        index=pd.Index(names, name="class"),
    )
    epoch_times = history["epoch_time_s"] if "epoch_time_s" in history else pd.Series(dtype=float)
    return RunEvaluation(
        label=run.label,
        spec=run.spec,
        source=run.source,
        model=cfg.model.name,
        image_size=cfg.data.image_size,
        data_dir=str(data_dir),
        class_names=names,
        y_true=res.y_true,
        y_pred=res.y_pred,
        accuracy=float(accuracy_score(res.y_true, res.y_pred)),
        macro_f1=float(
            f1_score(res.y_true, res.y_pred, labels=labels, average="macro", zero_division=0)
        ),
        per_class=per_class,
        params_total=total,
        params_trainable=trainable,
        train_time_s=float(epoch_times.sum()),
        epochs=int(state.get("epoch", len(history))),
        best_epoch=int(state.get("best_epoch", 0)),
        history=history,
        notes=notes,
    )


# ------------------------------------------------------------------------------ reporting
@dataclass
class ComparisonResult:
    runs: list[RunEvaluation]
    summary: pd.DataFrame  # one row per run
    per_class: pd.DataFrame  # one row per (run, class)
    report: Path
    figures: dict[str, Path]
    mlflow_run_id: str | None = None


def _summary(runs: list[RunEvaluation]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run": r.label,
                "spec": r.spec,
                "model": r.model,
                "image_size": r.image_size,
                "params_total": r.params_total,
                "params_trainable": r.params_trainable,
                "epochs": r.epochs,
                "best_epoch": r.best_epoch,
                "train_time_s": r.train_time_s,
                "val_images": len(r.y_true),
                "accuracy": r.accuracy,
                "macro_f1": r.macro_f1,
            }
            for r in runs
        ]
    )


def _per_class_long(runs: list[RunEvaluation]) -> pd.DataFrame:
    frames = [r.per_class.reset_index().assign(run=r.label) for r in runs]
    out = pd.concat(frames, ignore_index=True)
    return out[["run", "class", "precision", "recall", "f1", "support"]]


def _markdown(frame: pd.DataFrame) -> str:
    """A GitHub table, first column left-aligned, the others right-aligned (pandas'
    ``to_markdown`` needs tabulate, which we do not depend on)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "–" if math.isnan(v) else f"{v:.3f}"
        return str(v).replace("|", "\\|")

    cols = [cell(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "| --- | " + " | ".join(["---:"] * (len(cols) - 1)) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def _per_class_wide(runs: list[RunEvaluation]) -> pd.DataFrame:
    """class × (metric, run) as text: each metric's runs side by side, the best F1 of a class
    in bold, a last row of macro averages. A class one run does not have shows as –."""
    classes: list[str] = []
    for r in runs:
        classes += [c for c in r.class_names if c not in classes]

    def fmt(v: float, bold: bool = False) -> str:
        if math.isnan(v):
            return "–"
        return f"**{v:.3f}**" if bold else f"{v:.3f}"

    support = runs[0].per_class["support"].reindex(classes)
    table: dict[str, list[str]] = {
        "class": [*classes, "macro avg"],
        "support": [*("–" if pd.isna(v) else str(int(v)) for v in support), str(len(runs[0].y_true))],
    }
    for metric, title in (("precision", "precision"), ("recall", "recall"), ("f1", "F1")):
        values = pd.DataFrame({r.label: r.per_class[metric].reindex(classes) for r in runs})
        best = values.max(axis=1)
        for r in runs:
            col = values[r.label]
            # bold only a class's single best F1: ties (all zero, say) stay plain
            unique = values.eq(best, axis=0).sum(axis=1) == 1
            bold = [
                metric == "f1" and len(runs) > 1 and v == b and u
                for v, b, u in zip(col, best, unique, strict=True)
            ]
            # the macro average over the run's own classes: sklearn's average="macro"
            table[f"{title} {r.label}"] = [
                *(fmt(v, b) for v, b in zip(col, bold, strict=True)),
                fmt(float(r.per_class[metric].mean())),
            ]
    return pd.DataFrame(table)


def _plot_curves(runs: list[RunEvaluation], out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    paths: dict[str, Path] = {}
    panels = {
        "accuracy": [("val_acc", "validation accuracy"), ("val_f1", "validation macro-F1")],
        "loss": [("train_loss", "training loss"), ("val_loss", "validation loss")],
    }
    for name, metrics in panels.items():
        fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
        for ax, (col, title) in zip(axes[0], metrics, strict=True):
            for i, r in enumerate(runs):
                h = r.history
                if col not in h or h[col].isna().all():
                    continue
                x = h["epoch"] if "epoch" in h else pd.Series(range(1, len(h) + 1))
                line = ax.plot(x, h[col], marker="o", ms=3, label=r.label, color=f"C{i}")[0]
                if "phase" in h and (h["phase"] == "head").any() and (h["phase"] != "head").any():
                    # where fine-tuning begins: the curves' kink is usually there
                    first = x[h["phase"] != "head"].iloc[0]
                    ax.axvline(first - 0.5, color=line.get_color(), ls=":", lw=1)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        fig.tight_layout()
        paths[name] = out / FIGURES[name]
        fig.savefig(paths[name], dpi=100)
        plt.close(fig)

    classes = runs[0].class_names
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(classes) * max(1, len(runs) / 2)), 4))
    for i, r in enumerate(runs):
        xs = np.arange(len(classes)) + (i - (len(runs) - 1) / 2) * width
        ax.bar(xs, r.per_class["f1"].reindex(classes).to_numpy(), width, label=r.label)
    ax.set_xticks(np.arange(len(classes)), classes, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1 (validation)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths["per_class_f1"] = out / FIGURES["per_class_f1"]
    fig.savefig(paths["per_class_f1"], dpi=100)
    plt.close(fig)
    return paths


def write_report(runs: list[RunEvaluation], out: Path) -> tuple[Path, dict[str, Path]]:
    """``report.md``, ``per_class.csv``, ``summary.csv`` and the PNGs into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    summary = _summary(runs)
    summary.to_csv(out / SUMMARY_CSV, index=False)
    _per_class_long(runs).to_csv(out / PER_CLASS_CSV, index=False)
    figures = _plot_curves(runs, out)

    shown = pd.DataFrame(
        {
            "run": summary["run"],
            "model": [f"{r.model} @ {r.image_size}px" for r in runs],
            "parameters": [f"{r.params_total:,}" for r in runs],
            "trainable (last phase)": [f"{r.params_trainable:,}" for r in runs],
            "epochs (best)": [f"{r.epochs} ({r.best_epoch})" for r in runs],
            "training time": [_duration(r.train_time_s) for r in runs],
            "accuracy": summary["accuracy"],
            "macro-F1": summary["macro_f1"],
        }
    )
    sources = "\n".join(f"- **{r.label}**: `{r.spec}` → `{r.source}`" for r in runs)
    notes = [f"- **{r.label}**: {n}" for r in runs for n in r.notes]
    n_val = ", ".join(sorted({str(len(r.y_true)) for r in runs}))
    text = "\n\n".join(
        [
            "# Run comparison",
            f"Generated {_dt.datetime.now():%Y-%m-%d %H:%M}. Every run's best weights are "
            f"evaluated on the validation split its own config makes of its data "
            f"({n_val} images).",
            "## Runs",
            _markdown(shown),
            sources,
            "## Per class (validation)",
            "Best F1 of each class in bold. Also in `per_class.csv` (one row per run and class).",
            _markdown(_per_class_wide(runs)),
            "## Curves",
            "Dotted vertical lines: where a run's fine-tuning phase begins.",
            f"![accuracy]({FIGURES['accuracy']})",
            f"![loss]({FIGURES['loss']})",
            f"![per-class F1]({FIGURES['per_class_f1']})",
            *(["## Notes", "\n".join(notes)] if notes else []),
        ]
    )
    report = out / REPORT_FILE
    report.write_text(text + "\n")
    return report, figures


def _log_to_mlflow(out: Path, runs: list[RunEvaluation], uri: str, experiment: str) -> str:
    from tuning._mlflow import ensure_reachable, get_or_create_experiment, tracking

    uri = ensure_reachable(uri, hint="the report is written; log it later with --mlflow-uri")
    with tracking(uri) as client:
        exp_id = get_or_create_experiment(client, experiment, uri)
        run = client.create_run(
            exp_id,
            run_name="compare " + " vs ".join(r.label for r in runs),
            tags={"poketune.kind": "compare"},
        )
        rid = run.info.run_id
        for i, r in enumerate(runs):
            key = re.sub(r"[^\w\-. /]", "_", r.label)
            client.log_param(rid, f"run_{i}", r.spec)
            client.log_metric(rid, f"accuracy/{key}", r.accuracy)
            client.log_metric(rid, f"macro_f1/{key}", r.macro_f1)
        client.log_artifacts(rid, str(out))
        client.set_terminated(rid)
    return str(rid)


def compare_runs(
    specs: list[str],
    out: Path,
    *,
    storage: str,
    data: str | None = None,
    mlflow_uri: str | None = None,
    mlflow_experiment: str = MLFLOW_EXPERIMENT,
    cache_dir: str | Path | None = None,
) -> ComparisonResult:
    """Evaluate every run in ``specs`` and write the comparison into ``out``.

    ``data`` is the data folder for every run (it wins over a sweep's recorded folder);
    runs without one (a checkpoint path, an MLflow run outside a sweep) need it. With
    ``mlflow_uri`` the output folder is also logged as the artifacts of a new MLflow run
    (experiment ``mlflow_experiment``), and ``runs:/`` specs are read from there.
    """
    if not specs:
        raise ValueError("compare needs at least one run")
    out = Path(out)
    resolved = [resolve_run(s, storage=storage, mlflow_uri=mlflow_uri) for s in specs]
    seen: dict[str, int] = {}
    for r in resolved:  # labels are column names: keep them distinct
        seen[r.label] = seen.get(r.label, 0) + 1
        if seen[r.label] > 1:
            r.label = f"{r.label} ({seen[r.label]})"
    evaluations = []
    for r in resolved:
        data_dir = data or r.data_dir
        if not data_dir:
            raise ValueError(f"run {r.spec!r}: no data folder is recorded for it; pass --data DIR")
        if not data and not Path(data_dir).is_dir():
            raise ValueError(
                f"run {r.spec!r}: its data folder {data_dir} (recorded by the sweep) is not on "
                "this machine; pass --data DIR"
            )
        evaluations.append(evaluate_run(r, data_dir, cache_dir=cache_dir))
    report, figures = write_report(evaluations, out)
    run_id = _log_to_mlflow(out, evaluations, mlflow_uri, mlflow_experiment) if mlflow_uri else None
    return ComparisonResult(
        runs=evaluations,
        summary=_summary(evaluations),
        per_class=_per_class_long(evaluations),
        report=report,
        figures=figures,
        mlflow_run_id=run_id,
    )
