"""The report's HTML: one self-contained page (plotly.js inlined once), a header, one section
per figure and a sortable trial table."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["Section", "render_page"]


@dataclass
class Section:
    """One part of the page: a figure, or the reason it was not drawn."""

    id: str
    title: str
    figure: go.Figure | None = None
    note: str = ""  # shown under the title; the whole content when there is no figure


# clicking a column header sorts the table by it (again: reversed). A column sorts as numbers
# only when every filled cell in it is a number: trial ids such as 83641186 and 1def2e92
# share a column and must sort as text, both of them
_SORT_JS = """
document.querySelectorAll("table.sortable th").forEach((th, col) => {
  th.addEventListener("click", () => {
    const body = th.closest("table").tBodies[0];
    const asc = th.dataset.order !== "asc";
    th.closest("tr").querySelectorAll("th").forEach(h => delete h.dataset.order);
    th.dataset.order = asc ? "asc" : "desc";
    const rows = Array.from(body.rows);
    const text = r => r.cells[col].textContent.trim();
    const numeric = rows.every(r => text(r) === "" || isFinite(text(r)));
    const key = r => numeric ? (text(r) === "" ? Infinity : parseFloat(text(r))) : text(r);
    rows.sort((a, b) => { const x = key(a), y = key(b);
      const c = x < y ? -1 : x > y ? 1 : 0;
      return asc ? c : -c; });
    rows.forEach(r => body.appendChild(r));
  });
});
"""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: left; }
table.sortable th { cursor: pointer; background: #f4f4f4; position: sticky; top: 0; }
table.sortable th[data-order="asc"]::after { content: " ▲"; }
table.sortable th[data-order="desc"]::after { content: " ▼"; }
.note { color: #666; font-size: 0.9em; } .notdrawn { color: #a60; }
nav a { margin-right: 1em; font-size: 0.9em; }
.tablewrap { max-height: 600px; overflow: auto; }
/* Optuna's slice plot is 300 px per parameter: wide figures scroll inside their section */
.figure { overflow-x: auto; }
"""


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trial_table(frame: pd.DataFrame) -> str:
    """The trials frame as a sortable HTML table (one row per trial, best first)."""
    if frame.empty:
        return '<p class="note">no trials yet</p>'
    show = frame.drop(columns=[c for c in ("trial_dir", "checkpoint") if c in frame.columns])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in show.columns)
    rows = []
    for rec in show.itertuples(index=False):
        cells = "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in rec)
        rows.append(f"<tr>{cells}</tr>")
    return (
        f'<div class="tablewrap"><table class="sortable" id="trials-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def header_table(facts: dict[str, str]) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts.items())
    return f'<table id="sweep-facts">{rows}</table>'


def render_page(title: str, facts: dict[str, str], sections: list[Section], trials: pd.DataFrame,
                *, refresh_s: int | None = None) -> str:
    """The whole page. ``refresh_s``: the browser reloads it this often (a live report)."""
    from plotly.offline import get_plotlyjs

    parts = []
    for s in sections:
        body = ""
        if s.figure is not None:
            body = '<div class="figure">' + s.figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{s.id}",
                                    config={"displaylogo": False, "responsive": True}) + "</div>"
        note_class = "note" if s.figure is not None else "note notdrawn"
        note = f'<p class="{note_class}">{html.escape(s.note)}</p>' if s.note else ""
        parts.append(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>{note}{body}</section>')
    nav = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections) + '<a href="#trials">trials</a>'
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">{refresh}
<title>{html.escape(title)}</title>
<style>{_CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>{html.escape(title)}</h1>
<section id="header">{header_table(facts)}</section>
<nav>{nav}</nav>
{"".join(parts)}
<section id="trials"><h2>trials ({len(trials)})</h2><p class="note">click a column to sort</p>{trial_table(trials)}</section>
<script>{_SORT_JS}</script>
</body></html>
"""
