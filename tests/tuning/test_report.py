"""``poketune report`` and ``tune --report`` on a tiny real sweep: every section with the
sweep's own trial ids and values, the PNGs, the page rewritten as trials finish (a running
sweep's page), and the page in a real browser (Chromium: plots drawn, no console errors)."""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from asha_check import FROZEN_LR, LEARNING_LR, make_colour_data
from PIL import Image

import tuning.report as report_module
import tuning.report._live as live_module
from training.config import TrainConfig
from tuning import results
from tuning.cli import main
from tuning.report import REPORT_FILE, SECTIONS, Report
from tuning.report._figures import asha_rungs

SPACE = f"""
task: task2
asha: {{max_epochs: 3, grace_period: 1, reduction_factor: 2}}
fixed: {{data.image_size: 16, model.channels: 8, model.stages: 2}}
params:
  optim.lr: {{choice: [{FROZEN_LR}, {LEARNING_LR}]}}
  model.dropout: {{uniform: [0.0, 0.3]}}
"""
NAME = "report-sweep"
SAMPLES = 4
#: screenshots for people to look at after CI (the folder is gitignored)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class Rewrites:
    """Each page ``tune --report`` wrote while the sweep ran: what it said and its HTML."""

    reports: list[Report] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)


@dataclass
class Swept:
    storage: str
    data: Path
    result: Any
    live: Rewrites
    planted: str  # the id of the image relabelled from red to blue, in the validation split


def _plant_label_error(data: Path, space: Path) -> str:
    """Relabel one red square as blue and place its row where the sweep's own split (seed 0)
    puts it in the validation set: the error report judges the validation images. (The split
    is a seeded permutation within each class, so the row's position decides.)"""
    import pandas as pd

    from training.config import TrainConfig
    from training.engine import prepare_data
    from tuning.space import load_space

    cfg = TrainConfig.from_flat({**load_space(space).base_config(), "seed": 0})
    labels = pd.read_csv(data / "train.csv")
    planted = str(labels.loc[labels["label"] == "red", "id"].iloc[0])
    labels.loc[labels["id"] == planted, "label"] = "blue"
    row, others = labels[labels["id"] == planted], labels[labels["id"] != planted]
    for position in range(len(others) + 1):
        pd.concat([others.iloc[:position], row, others.iloc[position:]]).to_csv(data / "train.csv", index=False)
        if planted in prepare_data(data, cfg)[0].val_ids:
            return planted
    raise AssertionError("no position puts the planted image in the validation split")


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Swept:
    import ray

    from tuning.sweep import SweepOptions, init_ray, run_sweep

    tmp = tmp_path_factory.mktemp("report_sweep")
    data = make_colour_data(tmp / "colours")
    space = tmp / "tiny.yaml"
    space.write_text(SPACE)
    storage = str(tmp / "runs")
    planted = _plant_label_error(data, space)
    live = Rewrites()
    real = report_module.build_report

    def recording(sweep: results.Sweep, out: Path | None = None, **kw: Any) -> Report:
        page = real(sweep, out, **kw)
        if not kw.get("pngs", True):  # the live rewrites; the final report has PNGs
            live.reports.append(page)
            live.pages.append(page.html.read_text())
        return page

    init_ray(None, num_cpus=2)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(report_module, "build_report", recording)
            # look at Tune's saved state at every controller step (the product looks once a
            # second): these trials take well under a second each
            mp.setattr(live_module, "POLL_S", 0.0)
            result = run_sweep(SweepOptions(space=str(space), data=str(data), samples=SAMPLES, name=NAME,
                                            storage=storage, seed=0, max_concurrent=1, report=True))
    finally:
        ray.shutdown()
    return Swept(storage, data, result, live, planted)


def _tune_results(trial_dir: Path) -> list[dict[str, Any]]:
    """What Tune wrote for one trial, read straight from its result.json (not via poketune)."""
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


def _trial_dirs(swept: Swept) -> dict[str, Path]:
    root = Path(swept.storage) / NAME
    return {p.name: p for p in root.iterdir() if (p / "result.json").is_file()}


def _plot(page: str, section: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The traces and layout plotly draws in ``section``'s div (Plotly.newPlot's arguments)."""
    call = re.search(r'Plotly\.newPlot\(\s*"plot-' + re.escape(section) + r'",\s*', page)
    assert call, f"no plot for section {section}"
    decoder = json.JSONDecoder()
    data, end = decoder.raw_decode(page, call.end())
    layout, _ = decoder.raw_decode(page, page.index("{", end))
    return list(data), layout


def _plot_data(page: str, section: str) -> list[dict[str, Any]]:
    return _plot(page, section)[0]


def _values(arr: Any) -> list[Any]:
    """A trace's values: plotly writes numpy arrays as typed arrays ({dtype, bdata[, shape]})."""
    if isinstance(arr, dict) and "bdata" in arr:
        out = np.frombuffer(base64.b64decode(arr["bdata"]), dtype=arr["dtype"])
        return out.reshape([int(n) for n in str(arr["shape"]).split(",")]).tolist() if "shape" in arr else out.tolist()
    return list(arr)


def test_final_report_has_every_section_with_the_sweeps_values(swept: Swept) -> None:
    report = swept.result.report
    assert report is not None and report.html.name == REPORT_FILE
    assert report.not_drawn == {}, report.not_drawn
    page = report.html.read_text()
    for sid in (*SECTIONS, "header", "trials"):
        assert f'<section id="{sid}">' in page, sid
    dirs = _trial_dirs(swept)
    assert len(dirs) == SAMPLES
    # the sortable table: one row per trial, with its id and its best val_f1 as Tune recorded it
    table = page[page.index('id="trials-table"'):]
    assert table.count("<tr>") == SAMPLES + 1  # header + trials
    for tid, folder in dirs.items():
        best = max(r["val_f1"] for r in _tune_results(folder))
        row = re.search(r"<tr><td>" + tid + r"</td>.*?</tr>", table)
        assert row, tid
        assert f"<td>{best:.4g}</td>" in row.group(0)
    # the learning curves draw each trial's reported val_f1 per epoch
    curves = {t["name"]: t for t in _plot_data(page, "learning-curves") if t.get("mode") == "lines"}
    assert set(curves) == set(dirs)
    for tid, folder in dirs.items():
        rows = _tune_results(folder)
        assert _values(curves[tid]["y"]) == pytest.approx([r["val_f1"] for r in rows])
        assert _values(curves[tid]["x"]) == [r["epoch"] for r in rows]
    # ASHA's rungs (grace 1, factor 2, 3 epochs: 1 and 2) are on the curves
    assert asha_rungs(3, 1, 2) == [1, 2]
    assert "rung 1" in page and "rung 2" in page
    # best-so-far ends at the sweep's best, which is what Tune recorded
    best_all = max(r["val_f1"] for folder in dirs.values() for r in _tune_results(folder))
    steps = [t for t in _plot_data(page, "best-so-far") if t.get("name") == "best so far"]
    assert steps and _values(steps[0]["y"])[-1] == pytest.approx(best_all)
    # the header names the data's hash and counts the trials
    meta = results.Sweep.open(NAME, swept.storage).meta
    assert meta.data_hash in page and f"{SAMPLES}: " in page
    # parallel coordinates cover the searched parameters
    _, layout = _plot(page, "parallel-coordinates")
    assert set(layout["xaxis"]["ticktext"]) >= {"optim.lr", "model.dropout"}


def test_confusion_matrix_is_the_best_trials_validation_predictions(swept: Swept) -> None:
    page = swept.result.report.html.read_text()
    matrix = _plot_data(page, "confusion")[0]
    z = _values(matrix["z"])
    counts = [v for row in z for v in row]
    frame = results.Sweep.open(NAME, swept.storage).trials()
    best = frame.iloc[0]
    # every validation image counted once: val_fraction of the 3 × 30 images, stratified
    assert sum(counts) == round(TrainConfig().data.val_fraction * 90)
    # the best trial learned the colours: the only miss is the planted red square labelled
    # blue (rows: true label, columns: predicted; blue, green, red in sorted order)
    if best["best_val_f1"] > 0.9:
        assert [(i, j) for i in range(3) for j in range(3) if i != j and z[i][j]] == [(0, 2)]
    assert best["trial_id"] in page[page.index('id="confusion"'):page.index('id="per-class"')]


def test_pngs_are_written_for_each_figure(swept: Swept) -> None:
    report = swept.result.report
    if report.png_note:  # no Chromium here: said in one line, the page is still there
        assert "PNGs skipped" in report.png_note
        pytest.skip(report.png_note)
    assert set(report.pngs) == set(SECTIONS)
    for path in report.pngs.values():
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width >= 800


def test_tune_report_rewrote_the_page_as_trials_finished(swept: Swept) -> None:
    live = swept.live
    assert live.reports, "tune --report never rewrote the page while the sweep ran"
    finished_then = [set(r.finished_trials) for r in live.reports]
    # each rewrite knows at least what the one before did
    assert all(a <= b for a, b in itertools.pairwise(finished_then))
    # a running sweep's page: it says so, and lists its finished trials as finished
    # (a rewrite can come from a state save that lands before the finished trial's last result
    # is readable: its page lists no finished trial yet, and the next rewrite catches up)
    first, page = next((r, p) for r, p in zip(live.reports, live.pages, strict=True) if r.finished_trials)
    assert first.running and first.finished_trials
    assert "(running)" in page
    frame = results.Sweep.open(NAME, swept.storage).trials()
    for tid in first.finished_trials:
        row = re.search(r"<tr><td>" + tid + r"</td>(.*?)</tr>", page)
        assert row and not re.search(r"<td>(running|pending)</td>", row.group(1))
    # every trial but the last to finish was on a page before the sweep ended (the last one
    # is on the final report, written after Tuner.fit returns)
    by_order = frame.sort_values("order")["trial_id"].tolist()
    assert set(by_order[:-1]) <= finished_then[-1]
    assert set(swept.result.report.finished_trials) == set(by_order)
    assert 'http-equiv="refresh"' in page and 'http-equiv="refresh"' not in swept.result.report.html.read_text()


def test_report_command_on_a_copy_of_the_sweep(swept: Swept, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "page"
    assert main(["report", NAME, "--storage", swept.storage, "--out", str(out), "--no-png"]) == 0
    assert (out / REPORT_FILE).is_file() and not (out / "png").exists()
    assert f"report: {out / REPORT_FILE}" in capsys.readouterr().out
    assert main(["report", "no-such-sweep", "--storage", swept.storage]) == 2
    assert "no sweep named 'no-such-sweep'" in capsys.readouterr().err


def test_report_in_a_real_browser(swept: Swept) -> None:
    from browser import visit

    shot = ARTIFACTS / "report.png"
    html = swept.result.report.html
    copy = ARTIFACTS / "report.html"
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(html, copy)
    plots = "Array.from(document.querySelectorAll('.js-plotly-plot'))"
    seen = visit(
        html.as_uri(),
        ready=f"{plots}.length === {len(SECTIONS)} && {plots}.every(d => d._fullLayout && d.querySelector('.main-svg'))",
        probe=f"""(() => {{
            const paths = Object.fromEntries({plots}.map(d => [d.id, d.querySelectorAll('path').length]));
            const heads = Array.from(document.querySelectorAll('#trials-table th'));
            const column = i => Array.from(document.querySelectorAll('#trials-table tbody tr')).map(r => r.cells[i].textContent);
            heads[0].click();
            const asc = column(0);
            heads[0].click();
            const desc = column(0);
            const f1 = heads.findIndex(h => h.textContent === 'best_val_f1');
            heads[f1].click();
            return {{paths, asc, desc, f1: column(f1)}};
        }})()""",
        screenshot=shot,
    )
    assert seen.errors == []
    assert set(seen.probe["paths"]) == {f"plot-{s}" for s in SECTIONS}
    assert all(n > 0 for n in seen.probe["paths"].values()), seen.probe["paths"]
    # trial ids sort as text, even when one of them is all digits
    ids = sorted(_trial_dirs(swept))
    assert seen.probe["asc"] == ids and seen.probe["desc"] == ids[::-1]
    # a column of numbers sorts as numbers
    assert [float(v) for v in seen.probe["f1"]] == sorted(float(v) for v in seen.probe["f1"])
    with Image.open(shot) as img:
        assert img.format == "PNG" and img.height > 900


def test_error_report_finds_the_planted_label_error(swept: Swept, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tuning.error_report import build_error_report

    sweep = results.Sweep.open(NAME, swept.storage)
    report = build_error_report(sweep, tmp_path / "errors")
    # the planted image is the one the model disputes most (every other label is right)
    assert report.suspects["id"].iloc[0] == swept.planted, report.suspects.head(10)
    row = report.suspects[report.suspects["id"] == swept.planted].iloc[0]
    assert (row["given"], row["predicted"]) == ("blue", "red") and row["p_given"] < 0.5
    # the planted image is the best model's one confusion: blue (its label) taken for red
    assert report.confused.iloc[0][["true", "predicted", "images"]].tolist() == ["blue", "red", 1]
    assert set(report.per_class.index) == {"blue", "green", "red"}
    assert "validation images (no --cv" in report.source
    for f in report.files:
        assert f.is_file() and f.stat().st_size > 0, f
    with Image.open(tmp_path / "errors" / "label_issues.png") as img:
        assert img.format == "PNG"
    listed = (tmp_path / "errors" / "label_issues.csv").read_text()
    assert swept.planted in listed
    # the command says the same in one summary
    assert main(["errors", NAME, "--storage", swept.storage, "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert f"{swept.planted}: labelled blue" in out and "disputed labels" in out


def test_each_sweep_has_its_own_report_and_errors_folders() -> None:
    from types import SimpleNamespace

    from tuning.report import default_report_dir

    local = SimpleNamespace(name="a", storage="/runs", path=Path("/runs/a"))
    assert default_report_dir(local) == Path("/runs/a/report")  # type: ignore[arg-type]
    assert default_report_dir(local, "errors") == Path("/runs/a/errors")  # type: ignore[arg-type]
    # remote storage: the local copy is a cache, so the pages go under ./poketune_reports/NAME
    remote = [SimpleNamespace(name=n, storage="s3://bucket/runs", path=Path(f"/tmp/sync/{n}")) for n in ("a", "b")]
    folders = {default_report_dir(s, kind) for s in remote for kind in ("report", "errors")}  # type: ignore[arg-type]
    assert folders == {Path("poketune_reports") / n / k for n in ("a", "b") for k in ("report", "errors")}


def test_the_trial_table_sorts_ids_as_text_and_numbers_as_numbers(tmp_path: Path) -> None:
    """Tune's trial ids are 8 hex digits: one may be all digits (83641186) beside 1def2e92,
    and the column must still sort as text. A column of numbers sorts by value (10 > 9)."""
    import pandas as pd
    from browser import visit

    from tuning.report._page import render_page

    frame = pd.DataFrame({"trial_id": ["83641186", "1def2e92", "0a1b2c3d"], "best_val_f1": [0.5, 10.0, 9.0]})
    page = tmp_path / "table.html"
    page.write_text(render_page("t", {}, [], frame))
    seen = visit(
        page.as_uri(),
        ready="document.querySelector('#trials-table') !== null",
        probe="""(() => {
            const heads = document.querySelectorAll('#trials-table th');
            const column = i => Array.from(document.querySelectorAll('#trials-table tbody tr')).map(r => r.cells[i].textContent);
            heads[0].click();
            const ids = column(0);
            heads[1].click();
            return {ids, f1: column(1)};
        })()""",
    )
    assert seen.errors == []
    assert seen.probe["ids"] == ["0a1b2c3d", "1def2e92", "83641186"]
    assert seen.probe["f1"] == ["0.5", "9", "10"]
