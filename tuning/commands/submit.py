"""``poketune submit``: predict every test image and write a validated submission CSV."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="models:/NAME/VERSION (or /latest), runs:/RUN_ID/PATH, a checkpoint file or folder, or several comma-separated (ensemble)")
    p.add_argument("--data", required=True, help="dataset folder with test/ (and sample_submission.csv)")
    p.add_argument("--out", default="submission.csv", help="CSV to write (default submission.csv)")
    p.add_argument("--tta", action="store_true", help="average with horizontally flipped images")
    p.add_argument("--mlflow-uri", help="tracking server/registry for models:/ and runs:/ URIs (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")


def run(args: argparse.Namespace) -> int:
    from tuning.submission import make_submission

    res = make_submission(args.model, args.data, args.out, tta=args.tta, mlflow_uri=args.mlflow_uri)
    members = len(res.sources)
    print(f"model: {args.model} ({members} member{'s' if members > 1 else ''})")
    prep = res.preprocessing
    print(
        f"preprocessing (from the model): {prep['image_size']}px, crop {prep['crop']}, "
        f"rgba {prep['rgba']}, normalize {prep['normalize']}"
        + (f"; crop fell back to the whole image on {res.crop_fallbacks}" if res.crop_fallbacks else "")
    )
    print("predicted classes: " + ", ".join(f"{k} {v}" for k, v in res.class_counts.items()))
    shape = f"shape of {res.template}" if res.template else "sorted by id"
    print(f"wrote {res.rows} rows ({', '.join(res.columns)}; {shape}) to {res.path}")
    return 0
