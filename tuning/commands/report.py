"""``poketune report NAME``: the sweep's HTML report (and its figures as PNGs); works on a
sweep that is still running (it reads what has been written so far)."""

from __future__ import annotations

import argparse

from tuning.commands._common import add_storage


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="sweep name")
    add_storage(p)
    p.add_argument("--out", help="folder for report.html and png/ (default: the sweep's report/ folder; "
                   "./poketune_reports/NAME for remote storage)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("--no-png", action="store_true", help="only the HTML (the PNG export starts Chromium)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tuning.report import build_report
    from tuning.results import Sweep

    report = build_report(Sweep.open(args.name, args.storage), Path(args.out) if args.out else None,
                          pngs=not args.no_png)
    print(report)
    if args.open:
        import webbrowser

        webbrowser.open(report.html.resolve().as_uri())
    return 0
