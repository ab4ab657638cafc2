"""``poketune score``: macro-F1, accuracy and the per-class report of a submission."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("submission", help="submission CSV")
    p.add_argument("--answers", required=True, help="CSV with the true labels (e.g. test_labels.csv)")
    p.add_argument("--id-col", default="id")
    p.add_argument("--label-col", default="label")


def run(args: argparse.Namespace) -> int:
    from tuning.submission import score_submission

    res = score_submission(args.submission, args.answers, id_col=args.id_col, label_col=args.label_col)
    print(res.report)
    print(f"macro-F1 {res.macro_f1:.4f}  accuracy {res.accuracy:.4f}  ({res.n} images)")
    return 0
