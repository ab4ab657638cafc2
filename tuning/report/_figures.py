"""The report's figures, as plotly figures: drawn from the sweep record's frames, from Optuna's
own ``optuna.visualization`` on the sweep's study, and from the best trial's evaluation.

Each builder returns a figure, or raises :class:`NotDrawn` with the reason the page shows in
its place (too few finished trials, no checkpoint, …).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from training.evaluation import CheckpointEval
    from tuning.results import Sweep

__all__ = [
    "NotDrawn",
    "asha_rungs",
    "best_so_far",
    "confusion",
    "learning_curves",
    "optuna_figure",
    "pareto_front",
    "per_class_f1",
]

#: how each status ends a trial's curve: marker symbol, and the legend's words
STOP_MARKERS = {
    "completed": ("circle", "ran every epoch"),
    "stopped_asha": ("x", "stopped by the scheduler"),
    "stopped_budget": ("square", "stopped by the budget"),
    "early_stopped": ("diamond", "early-stopped"),
    "errored": ("triangle-down", "errored"),
    "running": ("triangle-right", "still running"),
    "pending": ("circle-open", "pending"),
}


class NotDrawn(Exception):
    """A figure that cannot be drawn for this sweep (the message says why)."""


def _layout(fig: go.Figure, title: str, **axes: str) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50},
                      legend={"font": {"size": 10}}, **{f"{k}_title": v for k, v in axes.items()})
    return fig


def asha_rungs(max_epochs: int, grace_period: int, reduction_factor: float) -> list[int]:
    """The epochs at which ASHA compares trials: grace·rf^k below max_epochs (Tune's
    ``_Bracket`` milestones with one bracket)."""
    if grace_period >= max_epochs or reduction_factor <= 1:
        return []
    count = int(math.log(max_epochs / grace_period) / math.log(reduction_factor) + 1)
    rungs = [round(grace_period * reduction_factor**k) for k in range(count)]
    return [r for r in rungs if r < max_epochs]


def _scored(history: pd.DataFrame, metric: str) -> pd.DataFrame:
    if metric not in history or history.empty:
        raise NotDrawn(f"no trial has reported {metric} yet")
    scored = history[history[metric].notna()]
    if scored.empty:
        raise NotDrawn(f"no trial has reported {metric} yet")
    return scored


def best_so_far(history: pd.DataFrame, metric: str, mode: str, started: float | None) -> go.Figure:
    """Best-so-far against wall time since the sweep started and against epochs trained in
    total, over every trial's reported epochs."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    scored = _scored(history, metric)
    order = scored.sort_values(["timestamp", "trial_id", "epoch"], kind="stable") if "timestamp" in scored else scored
    values = order[metric].to_numpy(dtype=float)
    best = np.maximum.accumulate(values) if mode == "max" else np.minimum.accumulate(values)
    if "timestamp" in order:
        stamps = order["timestamp"].to_numpy(dtype=float)
        origin = started if started else float(np.min(stamps - order.get("time_total_s", 0).to_numpy(dtype=float)))
        minutes = (stamps - origin) / 60.0
    else:
        minutes = np.full(len(order), np.nan)
    epochs = np.arange(1, len(order) + 1)
    ids = order["trial_id"].astype(str).to_numpy()
    fig = make_subplots(rows=1, cols=2, subplot_titles=("against wall time", "against epochs trained in total"))
    for col, x, label in ((1, minutes, "minutes since the sweep started"), (2, epochs, "epochs trained (all trials)")):
        fig.add_trace(go.Scatter(x=x, y=values, mode="markers", name=f"{metric} of an epoch", showlegend=col == 1,
                                 marker={"size": 5, "color": "lightgrey"}, text=ids,
                                 hovertemplate="trial %{text}<br>%{y:.4f}<extra></extra>"), row=1, col=col)
        fig.add_trace(go.Scatter(x=x, y=best, mode="lines", line={"shape": "hv", "width": 2}, name="best so far",
                                 showlegend=col == 1, marker={"color": "#1f77b4"}), row=1, col=col)
        fig.update_xaxes(title_text=label, row=1, col=col)
    fig.update_yaxes(title_text=metric, row=1, col=1)
    return _layout(fig, f"best {metric} so far")


def learning_curves(history: pd.DataFrame, trials: pd.DataFrame, metric: str, rungs: list[int]) -> go.Figure:
    """Every trial's metric per epoch, the scheduler's rungs as dotted lines, and a marker
    where (and how) each trial ended."""
    import plotly.graph_objects as go

    scored = _scored(history, metric)
    status = dict(zip(trials["trial_id"].astype(str), trials["status"].astype(str), strict=True)) if len(trials) else {}
    fig = go.Figure()
    for tid, rows in scored.groupby("trial_id", sort=False):
        rows = rows.sort_values("epoch")
        tid = str(tid)
        fig.add_trace(go.Scatter(x=rows["epoch"], y=rows[metric], mode="lines", name=tid, legendgroup=tid,
                                 line={"width": 1.5}, hovertemplate=f"trial {tid}<br>epoch %{{x}}: %{{y:.4f}}<extra></extra>"))
        symbol, words = STOP_MARKERS.get(status.get(tid, ""), ("circle", status.get(tid, "")))
        last = rows.iloc[-1]
        fig.add_trace(go.Scatter(x=[last["epoch"]], y=[last[metric]], mode="markers", legendgroup=tid, showlegend=False,
                                 marker={"symbol": symbol, "size": 10, "color": "black"},
                                 hovertemplate=f"trial {tid}: {words} after epoch %{{x}}<extra></extra>"))
    for rung in rungs:
        fig.add_vline(x=rung, line={"dash": "dot", "color": "grey"}, annotation_text=f"rung {rung}",
                      annotation_position="top")
    return _layout(fig, f"learning curves ({metric} per epoch; markers: where each trial ended)",
                   xaxis="epoch", yaxis=metric)


#: report section id → ``optuna.visualization`` function name
OPTUNA_PLOTS = {
    "parallel-coordinates": "plot_parallel_coordinate",
    "importance": "plot_param_importances",
    "slice": "plot_slice",
}


def optuna_figure(kind: str, sweep: Sweep) -> go.Figure:
    """One of Optuna's own plots of the sweep's study (its finished trials; Tune tells the
    study each trial's last reported value)."""
    import optuna
    from optuna.visualization import plot_param_importances

    from tuning.results import SweepStateError

    try:
        study = sweep.study()
    except SweepStateError as exc:
        raise NotDrawn(str(exc)) from None
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    need = 2 if kind in ("importance", "parallel-coordinates") else 1
    if len(done) < need:
        raise NotDrawn(f"needs at least {need} finished trials, the study has {len(done)}")
    params = sorted({p for t in done for p in t.params})
    if not params:
        raise NotDrawn("the sweep searched no parameters")
    plot = getattr(optuna.visualization, OPTUNA_PLOTS[kind])
    if plot is plot_param_importances and len({tuple(sorted(t.params.items())) for t in done}) < 2:
        raise NotDrawn("every finished trial had the same parameters")
    # several objectives: Optuna's plots take one; they show the first (what ASHA pruned on).
    # Its importance evaluator (PED-ANOVA) ranks by what makes a target *low*: a maximised
    # first objective goes in negated there
    target: dict[str, Any] = {}
    if len(study.directions) > 1:
        sign = -1.0 if kind == "importance" and sweep.space.mode == "max" else 1.0
        target = {"target": lambda t: sign * t.values[0], "target_name": sweep.space.metric}
    fig: go.Figure = plot(study, params=params, **target) if kind != "importance" else plot(study, **target)
    fig.update_layout(template="plotly_white")
    return fig


def confusion(ev: CheckpointEval, title: str) -> go.Figure:
    """The best trial's validation confusion matrix (rows: true class), counts annotated."""
    import plotly.express as px

    matrix = ev.confusion()
    fig = px.imshow(matrix, x=ev.class_names, y=ev.class_names, text_auto=True, color_continuous_scale="Blues",
                    labels={"x": "predicted", "y": "true", "color": "images"}, aspect="equal")
    return _layout(fig, f"confusion matrix: {title} (macro-F1 {ev.macro_f1:.3f})")


def per_class_f1(ev: CheckpointEval, title: str) -> go.Figure:
    """Precision, recall and F1 per class, with each class's support in the hover."""
    import plotly.graph_objects as go

    table = ev.per_class()
    fig = go.Figure()
    for col in ("precision", "recall", "f1"):
        fig.add_trace(go.Bar(x=list(table.index), y=table[col], name=col, customdata=table["support"],
                             hovertemplate="%{x}: %{y:.3f} (%{customdata} images)<extra>" + col + "</extra>"))
    fig.update_yaxes(range=[0, 1])
    return _layout(fig, f"per-class scores: {title}", yaxis="score (validation)")



def pareto_front(trials: pd.DataFrame, front: pd.DataFrame, objectives: list[tuple[str, str]]) -> go.Figure:
    """Every finished trial on the first two objectives, the Pareto front joined up."""
    import plotly.graph_objects as go

    (first, _), (second, _) = objectives[:2]
    x, y = second, f"best_{first}"
    if trials.empty or x not in trials or y not in trials:
        raise NotDrawn(f"no trial has reported {first} and {second} yet")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=trials[x], y=trials[y], mode="markers", name="trials", text=trials["trial_id"],
                             marker={"color": "lightgray", "size": 8},
                             hovertemplate="%{text}: %{x:.4g}, %{y:.4f}<extra></extra>"))  # fmt: skip
    line = front.sort_values(x)
    fig.add_trace(go.Scatter(x=line[x], y=line[y], mode="lines+markers", name="Pareto front", text=line["trial_id"],
                             marker={"size": 10}, hovertemplate="%{text}: %{x:.4g}, %{y:.4f}<extra></extra>"))  # fmt: skip
    return _layout(fig, f"{first} against {second}: the trials that ran every epoch", xaxis=second, yaxis=y)
