"""A model spec → the :class:`Checkpoint`\\ s behind it: one resolver for predict, submit and
compare.

Specs:

* a checkpoint file, or a folder holding ``checkpoint.pt`` (``poketune train``/``retrain``
  output, a Tune trial checkpoint) or a downloaded pyfunc model;
* several local forms separated by commas (an ensemble);
* ``sweep:NAME`` — the best trial of a sweep (``sweep:NAME/TRIAL_ID`` for another);
* ``runs:/RUN_ID[/PATH]`` — an MLflow run holding ``checkpoint.pt`` (what ``poketune
  export`` logs);
* ``models:/NAME/VERSION`` (``/latest``, ``@alias``) — a registered model; an ensemble
  resolves to its members, in order.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.checkpoint import CHECKPOINT_FILE, Checkpoint
from training.errors import PoketuneError
from tuning._mlflow import MEMBER_PREFIX, PARENT_TAG, Tags

__all__ = [
    "ModelURIError",
    "ResolvedCheckpoint",
    "checkpoint_files",
    "is_mlflow_uri",
    "resolve",
]

#: artifact keys of the pyfunc model's members: member_0, member_1, ...
_MLMODEL = "MLmodel"


class ModelURIError(PoketuneError, FileNotFoundError):
    """A model spec that does not resolve; the message names it."""


@dataclass
class ResolvedCheckpoint:
    """A checkpoint, where it was read from, a short label and (when known) its data folder."""

    checkpoint: Checkpoint
    source: str
    label: str
    data_dir: str | None = None


def is_mlflow_uri(uri: str) -> bool:
    return uri.startswith(("models:/", "runs:/"))


def resolve(
    spec: str,
    *,
    storage: str | None = None,
    mlflow_uri: str | None = None,
) -> list[ResolvedCheckpoint]:
    """Every checkpoint ``spec`` names (see the module docstring), loaded onto the CPU."""
    spec = spec.strip()
    if spec.startswith("sweep:"):
        return [_from_sweep(spec, storage)]
    if spec.startswith("runs:/") and "," not in spec:
        return [_from_run(spec, mlflow_uri)]
    if spec.startswith("models:/") and "," not in spec:
        with tempfile.TemporaryDirectory(prefix="poketune-model-") as tmp:
            files = _checkpoints_in(_download(spec, mlflow_uri, Path(tmp)))
            if not files:
                raise ModelURIError(f"model URI {spec!r} holds no {CHECKPOINT_FILE}")
            return [
                ResolvedCheckpoint(Checkpoint.load(f), f"{spec} [{i}]", f"{spec} [{i}]")
                for i, f in enumerate(files)
            ]
    return [
        ResolvedCheckpoint(Checkpoint.load(f), str(f), _path_label(f)) for f in checkpoint_files(spec)
    ]


# ------------------------------------------------------------------------------ local paths
def checkpoint_files(spec: str) -> list[Path]:
    """The local ``checkpoint.pt`` files behind a path or a comma-separated list of paths."""
    paths: list[Path] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if is_mlflow_uri(part) or part.startswith("sweep:"):
            raise ModelURIError(f"{part!r}: URIs cannot be mixed into a comma-separated list")
        path = Path(part).expanduser()
        if path.is_file():
            paths.append(path)
        elif path.is_dir():
            inside = (
                [path / CHECKPOINT_FILE]
                if (path / CHECKPOINT_FILE).is_file()
                else _checkpoints_in(path)
                if (path / _MLMODEL).is_file()
                else []
            )
            if not inside:
                raise ModelURIError(f"model path {path} holds no {CHECKPOINT_FILE}")
            paths.extend(inside)
        else:
            raise ModelURIError(
                f"model path {path} does not exist (expected a checkpoint path, sweep:NAME, "
                "runs:/RUN_ID or models:/NAME/VERSION)"
            )
    if not paths:
        raise ModelURIError(f"no model given ({spec!r})")
    return paths


def _path_label(file: Path) -> str:
    # Tune names checkpoint folders checkpoint_000012: the trial folder above says more
    folder = file.parent
    label = folder.parent.name if folder.name.startswith("checkpoint_") else folder.name
    return label or file.stem


def _checkpoints_in(folder: Path) -> list[Path]:
    """The members of a downloaded pyfunc model (MLmodel order) or every checkpoint.pt inside."""
    mlmodels = sorted(folder.rglob(_MLMODEL))
    if mlmodels:
        from mlflow.models import Model

        root = mlmodels[0].parent
        conf = Model.load(str(mlmodels[0])).flavors.get("python_function", {})
        artifacts: dict[str, Any] = conf.get("artifacts") or {}
        members = sorted(
            (k for k in artifacts if k.startswith(MEMBER_PREFIX)),
            key=lambda k: int(k[len(MEMBER_PREFIX) :]),
        )
        if members:
            return [as_checkpoint_file(root / artifacts[k]["path"]) for k in members]
    return sorted(folder.rglob(CHECKPOINT_FILE))


def as_checkpoint_file(path: Path) -> Path:
    return path / CHECKPOINT_FILE if path.is_dir() else path


# ------------------------------------------------------------------------------ sweeps
def _from_sweep(spec: str, storage: str | None) -> ResolvedCheckpoint:
    from training.ray_session import default_storage
    from tuning import results
    from tuning.storage import is_remote, local_copy

    storage = storage or default_storage()
    name, _, trial = spec.removeprefix("sweep:").partition("/")
    sweep = results.Sweep.open(name, storage)
    frame = sweep.trials()
    usable = frame[frame["checkpoint"].notna()] if not frame.empty else frame
    if trial:
        usable = usable[usable["trial_id"].astype(str) == trial]
    if usable.empty:
        which = f"trial {trial!r}" if trial else "any trial"
        raise ModelURIError(f"{spec!r}: sweep {name!r} has no checkpoint for {which}")
    row = usable.iloc[0]  # Sweep.trials sorts the best trial first
    ckpt = str(row["checkpoint"])
    local = local_copy(ckpt) if is_remote(ckpt) else Path(ckpt)
    return ResolvedCheckpoint(
        Checkpoint.load(local), ckpt, f"{name}/{row['trial_id']}", data_dir=sweep.meta.data
    )


# ------------------------------------------------------------------------------ MLflow
def _tracking_uri(mlflow_uri: str | None) -> str:
    from tuning._mlflow import default_tracking_uri, normalize_tracking_uri

    return normalize_tracking_uri(mlflow_uri) if mlflow_uri else default_tracking_uri()


def _from_run(spec: str, mlflow_uri: str | None) -> ResolvedCheckpoint:
    """``runs:/ID`` (the checkpoint the run's tag names), or ``runs:/ID/PATH``: the checkpoint
    under PATH, else the run's own (``runs:/ID/model`` of an exported trial is a PyTorch
    model whose raw checkpoint is elsewhere in the same run)."""
    from mlflow.exceptions import MlflowException

    from tuning._mlflow import tracking

    run_id, _, artifact = spec.removeprefix("runs:/").partition("/")
    uri = _tracking_uri(mlflow_uri)
    with tracking(uri) as client, tempfile.TemporaryDirectory(prefix="poketune-run-") as tmp:
        try:
            run = client.get_run(run_id)
            found: list[Path] = []
            if artifact.strip("/"):
                found = _checkpoints_in(Path(client.download_artifacts(run_id, artifact, tmp)))
            if not found:
                path = _checkpoint_artifact(client, run_id, run.data.tags)
                found = [Path(client.download_artifacts(run_id, path, f"{tmp}/run"))]
        except MlflowException as exc:
            raise ModelURIError(f"{spec!r} in {uri}: {exc.message}") from None
        ckpt = Checkpoint.load(found[0])
        label = run.info.run_name or f"mlflow-{run_id[:8]}"
        return ResolvedCheckpoint(ckpt, f"{uri} {spec}", label, _sweep_data(client, run))


def _checkpoint_artifact(client: Any, run_id: str, tags: dict[str, str]) -> str:
    """The tag ``poketune export`` sets, else the shallowest ``checkpoint.pt`` artifact."""

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
    raise ModelURIError(f"MLflow run {run_id} has no {CHECKPOINT_FILE} artifact")


def _sweep_data(client: Any, run: Any) -> str | None:
    """An exported trial's data folder, from its sweep's metadata (when still reachable)."""
    from tuning import results

    tags = run.data.tags
    parent_id = tags.get(PARENT_TAG)
    if not (tags.get(Tags.SWEEP) and parent_id):
        return None
    try:
        storage = client.get_run(parent_id).data.tags.get(Tags.STORAGE)
        return results.Sweep.open(tags[Tags.SWEEP], storage).meta.data if storage else None
    except (OSError, ValueError, KeyError):  # the sweep folder is gone or elsewhere: use --data
        return None


def _describe_registered(uri: str, tracking_uri: str) -> str:
    """Why ``models:/NAME/VERSION`` does not resolve, naming what does exist."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name = uri[len("models:/") :].split("/", 1)[0].split("@", 1)[0]
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        known = [m.name for m in client.search_registered_models(max_results=50)]
        return f"no registered model named {name!r}; registered models: {', '.join(known) or 'none'}"
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    return f"registered model {name!r} has versions {versions}"


def _download(uri: str, mlflow_uri: str | None, dst: Path) -> Path:
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from tuning._mlflow import tracking

    tracking_uri = _tracking_uri(mlflow_uri)
    try:
        # the explicit URIs are not enough: resolving models:/NAME/latest goes through the
        # global registry URI
        with tracking(tracking_uri):
            return Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, dst_path=str(dst), tracking_uri=tracking_uri, registry_uri=tracking_uri
                )
            )
    except MlflowException as exc:
        hint = "; " + _describe_registered(uri, tracking_uri) if uri.startswith("models:/") else ""
        raise ModelURIError(f"model URI {uri!r} does not resolve: {exc.message}{hint}") from None
