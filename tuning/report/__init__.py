"""A sweep's report: one self-contained HTML page (and its figures as PNGs), read through the
sweep record (:class:`tuning.results.Sweep`) and drawn with plotly and Optuna's own
``optuna.visualization``.

``build_report(sweep, out)`` writes ``out/report.html`` with: the sweep's header (space,
data, budget, trials by status, wall time), best-so-far against wall time and against epochs
trained, every trial's learning curve with the scheduler's rungs and where each trial ended,
Optuna's parallel-coordinate, importance and slice plots, the best trial's confusion matrix
and per-class scores (the one evaluation path, :mod:`tuning.validation`), and the sortable
trial table. It reads only what the sweep has written, so it works on a running sweep too.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tuning.report._figures import (
    OPTUNA_PLOTS,
    NotDrawn,
    asha_rungs,
    best_so_far,
    confusion,
    learning_curves,
    optuna_figure,
    pareto_front,
    per_class_f1,
)
from tuning.report._page import Section, render_page
from tuning.report._png import write_pngs

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from training.evaluation import CheckpointEval
    from tuning.results import Sweep
    from tuning.validation import ValidationData

__all__ = ["REPORT_FILE", "SECTIONS", "Report", "build_report", "default_report_dir"]

log = logging.getLogger("poketune")

REPORT_FILE = "report.html"
#: section id → title, in page order
SECTIONS = {
    "best-so-far": "best so far",
    "learning-curves": "learning curves",
    "parallel-coordinates": "parallel coordinates (Optuna)",
    "importance": "parameter importance (Optuna)",
    "slice": "slice plots (Optuna)",
    "confusion": "best trial: confusion matrix",
    "per-class": "best trial: per-class scores",
}
#: sections only some sweeps have: a space with ``objectives:``
OPTIONAL_SECTIONS = {"pareto": "accuracy against cost: the Pareto front"}
_TITLES = {**SECTIONS, **OPTIONAL_SECTIONS}


@dataclass
class Report:
    html: Path
    pngs: dict[str, Path] = field(default_factory=dict)
    #: why the PNGs were skipped (None: written, or not asked for)
    png_note: str | None = None
    #: section id → why it was not drawn
    not_drawn: dict[str, str] = field(default_factory=dict)
    finished_trials: list[str] = field(default_factory=list)
    running: bool = False

    def __str__(self) -> str:
        lines = [f"report: {self.html}"]
        if self.pngs:
            lines.append(f"  PNGs: {len(self.pngs)} in {next(iter(self.pngs.values())).parent}")
        if self.png_note:
            lines.append(f"  {self.png_note}")
        lines += [f"  not drawn: {SECTIONS.get(k, k)}: {v}" for k, v in self.not_drawn.items()]
        return "\n".join(lines)


def default_report_dir(sweep: Sweep, kind: str = "report") -> Path:
    """Where a sweep's ``kind`` pages go (``report``, ``errors``): in the sweep's folder for
    local storage; under ./poketune_reports/NAME for remote storage (its local copy is a cache)."""
    from tuning.storage import is_remote

    base = Path("poketune_reports") / sweep.name if is_remote(sweep.storage) else sweep.path
    return base / kind


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def _facts(sweep: Sweep, trials: pd.DataFrame, running: bool) -> dict[str, str]:
    meta, space, ledger = sweep.meta, sweep.space, sweep.ledger
    opts = meta.options
    metric = space.metric
    facts = {
        "sweep": f"{sweep.name} ({'running' if running else 'finished'})",
        "space": meta.space_file,
        "task": meta.task,
        "search / scheduler": f"{opts.get('search') or space.search or 'tpe'} / "
        f"{opts.get('scheduler') or space.scheduler or 'asha'}",
        "data": f"{meta.data} (hash {meta.data_hash})",
        "budget": _duration(ledger.budget_s) if ledger.budget_s else f"none ({opts.get('samples')} samples)",
        "validation": f"{meta.cv}-fold cross-validation: {metric} is the mean over the folds"
        if meta.cv
        else "one split",
    }
    counts = trials["status"].value_counts() if len(trials) else {}
    facts["trials"] = f"{len(trials)}: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none yet")
    if ledger.started:
        end = ledger.finished or time.time()
        facts["wall time"] = _duration(end - ledger.started) + ("" if ledger.finished else " so far")
    best_col = f"best_{metric}"
    scored = trials[trials[best_col].notna()] if len(trials) and best_col in trials else trials.iloc[0:0]
    if len(scored):
        best = scored.iloc[0]
        facts["best trial"] = f"{best['trial_id']}: {metric} {best[best_col]:.4f} at epoch {best['best_epoch']}"
        preset = scored[scored["preset"]] if "preset" in scored else scored.iloc[0:0]
        spread = best.get(f"{metric}_std")
        if spread is not None and spread == spread:  # a --cv trial's std (NaN elsewhere)
            facts["best trial"] += f" (± {spread:.4f} across folds)"
        if len(preset):
            gain = best[best_col] - preset.iloc[0][best_col]
            facts["preset trial"] = (
                f"{preset.iloc[0]['trial_id']}: {metric} {preset.iloc[0][best_col]:.4f} "
                f"(tuning gained {gain:+.4f} on the same {'folds' if meta.cv else 'validation split'})"
            )
    facts["generated"] = _dt.datetime.now().isoformat(timespec="seconds")
    return facts


def _draw(sections: list[Section], not_drawn: dict[str, str], sid: str, make: Callable[[], go.Figure], note: str = "") -> None:
    try:
        sections.append(Section(sid, _TITLES[sid], make(), note))
    except NotDrawn as exc:
        not_drawn[sid] = str(exc)
        sections.append(Section(sid, _TITLES[sid], None, f"not drawn: {exc}"))


def _of_best(draw: Callable[[CheckpointEval, str], go.Figure], evaluation: CheckpointEval | None, why: str) -> go.Figure:
    if evaluation is None:
        raise NotDrawn(why)
    return draw(evaluation, why)


def build_report(
    sweep: Sweep, out: Path | None = None, *, pngs: bool = True, refresh_s: int | None = None,
    val: ValidationData | None = None,
) -> Report:
    """Write the report of ``sweep`` into folder ``out`` (default :func:`default_report_dir`)
    and return what was written. ``pngs=False`` skips the PNG export (a live rewrite);
    ``refresh_s`` makes the page reload itself in the browser that often; ``val``: the
    sweep's validation splits when the caller has them already (export)."""
    from tuning.validation import ValidationData, evaluate_trial

    out = out or default_report_dir(sweep)
    out.mkdir(parents=True, exist_ok=True)
    trials, history = sweep.trials(), sweep.history()
    space, metric = sweep.space, sweep.space.metric
    running = sweep.ledger.finished is None
    sections: list[Section] = []
    not_drawn: dict[str, str] = {}
    _draw(sections, not_drawn, "best-so-far", lambda: best_so_far(history, metric, space.mode, sweep.ledger.started or None))
    scheduler = sweep.meta.options.get("scheduler") or space.scheduler or "asha"
    rungs = asha_rungs(space.max_epochs, space.grace_period, space.reduction_factor) if scheduler == "asha" else []
    _draw(sections, not_drawn, "learning-curves", lambda: learning_curves(history, trials, metric, rungs),
          f"dotted lines: ASHA's rungs at epochs {', '.join(map(str, rungs))}" if rungs else "")
    for sid in OPTUNA_PLOTS:
        _draw(sections, not_drawn, sid, lambda sid=sid: optuna_figure(sid, sweep),  # type: ignore[misc]
              "Optuna's record: each finished trial's last reported value")
    best_col = f"best_{metric}"
    scored = trials[trials[best_col].notna()] if len(trials) and best_col in trials else None
    evaluation, why = None, f"no trial has reported {metric} yet"
    if scored is not None and len(scored):
        trial_eval, why = evaluate_trial(scored.iloc[0].to_dict(), val or ValidationData.of(sweep))
        evaluation = trial_eval.eval if trial_eval else None

    if space.objectives:  # several objectives: the front, from the finished trials
        done = trials[(trials["status"] == "completed") & (trials["epochs"] >= space.max_epochs)] if len(trials) else trials
        _draw(sections, not_drawn, "pareto", lambda: pareto_front(done, sweep.pareto(), space.objectives))
    for sid, draw in (("confusion", confusion), ("per-class", per_class_f1)):
        _draw(sections, not_drawn, sid, lambda draw=draw: _of_best(draw, evaluation, why))  # type: ignore[misc]
    page = render_page(f"poketune sweep {sweep.name}", _facts(sweep, trials, running), sections, trials, refresh_s=refresh_s)
    html = out / REPORT_FILE
    tmp = html.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(html)  # a browser reloading a live report never reads half a page
    finished = [str(t) for t, s in zip(trials.get("trial_id", []), trials.get("status", []), strict=True)
                if s not in ("running", "pending")]
    report = Report(html=html, not_drawn=not_drawn, finished_trials=finished, running=running)
    if pngs:
        figures = {s.id: s.figure for s in sections if s.figure is not None}
        report.pngs, report.png_note = write_pngs(figures, out / "png")
    return report
