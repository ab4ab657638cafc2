"""Finding and writing the MLflow runs of a sweep: tag names, look-ups, chunked batches."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from tuning._mlflow import PARENT_TAG, Tags
from tuning.storage import resolve_storage

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

__all__ = [
    "find_sweep_run",
    "find_trial_runs",
    "log_batch",
    "missing_params",
    "param_value",
    "sweep_key",
]

def sweep_key(name: str, storage: str) -> str:
    """Identity of a sweep across exports: the same name under another storage is another
    sweep. A hash, so the search filter never has to quote a path."""
    return hashlib.sha1(f"{resolve_storage(storage)}/{name}".encode()).hexdigest()[:16]


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    runs: list[Run] = []
    token: str | None = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string, max_results=1000, order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_sweep_run(client: MlflowClient, experiment_id: str, name: str, storage: str) -> Run | None:
    """The parent run an earlier export made for this sweep (the oldest if there are two)."""
    runs = _search_all(client, experiment_id, f"tags.`{Tags.SWEEP_KEY}` = '{sweep_key(name, storage)}'")
    return runs[0] if runs else None


def find_trial_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> dict[str, Run]:
    """trial_id → its run under ``parent_run_id``."""
    runs = _search_all(client, experiment_id, f"tags.`{PARENT_TAG}` = '{parent_run_id}'")
    out: dict[str, Run] = {}
    for run in runs:
        tid = run.data.tags.get(Tags.TRIAL_ID)
        if tid and tid not in out:
            out[tid] = run
    return out


def param_value(value: Any) -> str:
    """Config values as MLflow params: strings as they are, the rest as JSON (lists read
    ``[256, 128]``, None reads ``null``)."""
    return value if isinstance(value, str) else json.dumps(value)


def missing_params(existing: dict[str, str], params: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """(params not yet on the run, keys whose logged value differs).

    MLflow refuses to change a logged param, and logging the same value again is wasted
    work, so a re-export only adds what is new.
    """
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    new: dict[str, str] = {}
    conflicts: list[str] = []
    for key, value in params.items():
        text = param_value(value)
        if len(text) > MAX_PARAM_VAL_LENGTH:
            conflicts.append(f"{key} (value longer than {MAX_PARAM_VAL_LENGTH} characters)")
        elif key not in existing:
            new[key] = text
        elif existing[key] != text:
            conflicts.append(f"{key} (logged {existing[key]!r}, now {text!r})")
    return new, conflicts


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def log_batch(
    client: MlflowClient,
    run_id: str,
    *,
    metrics: Sequence[tuple[str, float, int, int]] = (),
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """``MlflowClient.log_batch`` within MLflow's per-request limits.

    ``metrics`` are (key, value, timestamp_ms, step); non-finite values are left out.
    Params go first; the tags go with the last metrics request, so a tag that records
    what was logged (``poketune.epochs_logged``) is only written once the metrics are.
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

    for part in _chunks(list((params or {}).items()), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=[Param(k, v) for k, v in part])
    metric_objs = [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in metrics if math.isfinite(v)]
    tag_objs = [RunTag(k, v) for k, v in (tags or {}).items()]
    # the last request carries up to MAX_PARAMS_TAGS_PER_BATCH tags next to its metrics
    metric_parts = list(_chunks(metric_objs, MAX_METRICS_PER_BATCH - MAX_PARAMS_TAGS_PER_BATCH)) or [[]]
    tag_parts = list(_chunks(tag_objs, MAX_PARAMS_TAGS_PER_BATCH)) or [[]]
    for part in metric_parts[:-1]:
        client.log_batch(run_id, metrics=list(part))
    for part in tag_parts[:-1]:
        client.log_batch(run_id, tags=list(part))
    if metric_parts[-1] or tag_parts[-1]:
        client.log_batch(run_id, metrics=list(metric_parts[-1]), tags=list(tag_parts[-1]))
