"""Sweeps whose ASHA decisions are certain, and ASHA's rule replayed on what a sweep recorded.

Why a stop is certain (not a matter of luck in training):

* The data are three solid colours with a little noise (:func:`make_colour_data`): a CNN at
  ``LEARNING_LR`` separates them within one epoch (val_f1 1.0), while at ``FROZEN_LR``
  (1e-12) its weights do not move, so it stays the untrained net, which tells nothing apart
  (it answers one class: val_f1 1/6, whatever the other searched values). The space offers
  ``optim.lr: {choice: [FROZEN_LR, LEARNING_LR]}``.
* ``max_concurrent=1``: trials run one after another, in the order the searcher proposes
  them, so each trial's rung sees exactly the trials before it.
* Ray's ASHA (``grace_period`` 1, ``reduction_factor`` 2) stops a trial at rung ``t`` when
  its metric at epoch ``t`` is *strictly* below the median (the ``1 - 1/2`` quantile) of
  the values the earlier trials recorded at ``t``.  A frozen trial that comes when at least
  as many learners as frozen trials ran before it (and at least one learner) sits below
  that median and must be stopped after epoch 1.  Which trials come first is the seeded
  searcher's (the preset point, whose lr is not among the choices and so is drawn, then
  TPE's seeded random start-up draws: no result involved): the tests' seeds put such a
  frozen trial in the sweep, and the tests check it on the replay (failing with the order)
  rather than trusting it.  No space makes a stop certain whatever the order: trials whose
  values never fall below the median of the ones before them are never stopped.

:func:`asha_replay` is Ray's rule written out independently of poketune (which only
configures the scheduler); a test compares it with the statuses the results frame reports.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

__all__ = ["FROZEN_LR", "LEARNING_LR", "asha_replay", "make_colour_data", "trial_order"]

FROZEN_LR = 1.0e-12
LEARNING_LR = 1.0e-2
COLOURS = {"blue": (40, 40, 220), "green": (40, 200, 40), "red": (220, 40, 40)}


def make_colour_data(root: Path, per_class: int = 30, seed: int = 0) -> Path:
    """A Kaggle-layout set (``train.csv`` + ``train/<id>.png``): 16 px squares of one colour
    each, ±25 noise per pixel and channel; the label is the colour's name."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, rgb in COLOURS.items():
        for i in range(per_class):
            noise = rng.integers(-25, 26, (16, 16, 3))
            px = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / "train" / f"{name}{i}.png")
            rows.append((f"{name}{i}", name))
    pd.DataFrame(rows, columns=["id", "label"]).to_csv(root / "train.csv", index=False)
    return root


def trial_order(sweep_dir: Path) -> list[str]:
    """Trial ids in the order Tune created them (its newest experiment state lists them so);
    with one trial at a time, the order they ran in."""
    states = sorted(Path(sweep_dir).glob("experiment_state-*.json"))
    assert states, f"{sweep_dir}: no experiment_state-*.json"
    trials = json.loads(states[-1].read_text())["trial_data"]
    return [json.loads(t[0] if isinstance(t, list) else t)["trial_id"] for t in trials]


def asha_replay(
    history: pd.DataFrame, order: list[str], *, max_epochs: int, grace: int, rf: int,
    metric: str = "val_f1",
) -> dict[str, int | None]:
    """``{trial_id: epoch ASHA stops it after, or None if it may run to max_epochs}``, for
    trials run one at a time in ``order`` (mode max), from their recorded metric values."""
    rungs = [grace * rf**k for k in range(64) if grace * rf**k < max_epochs]
    recorded: dict[int, list[float]] = {r: [] for r in rungs}
    stops: dict[str, int | None] = {}
    for tid in order:
        values = history[history["trial_id"] == tid].set_index("epoch")[metric]
        stops[tid] = None
        for rung in rungs:
            if rung not in values.index:
                break
            value = float(values[rung])
            earlier = recorded[rung]
            below = bool(earlier) and value < np.nanpercentile(earlier, (1 - 1 / rf) * 100)
            earlier.append(value)
            if below:
                stops[tid] = rung
                break
    return stops
