"""Everything poketune says to MLflow, in one place: which tracking URI and whether it is
there, the experiment and registered-model names, the tag vocabulary, and the one way a
model is logged (:func:`log_model`, used by ``export`` for a trial and by ``retrain`` for
its ensemble alike).

Tracking URIs: ``http(s)://host:port`` (a tracking server) or ``sqlite:///path/mlflow.db``
(an embedded store; a bare ``*.db`` path works too). Experiments made in a SQLite store keep
their artifacts in ``mlartifacts/`` next to the database file, not wherever the process
happened to start.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.errors import PoketuneError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    from mlflow import MlflowClient

    from training.data import Preprocessing

__all__ = [
    "ARTIFACTS_DIR",
    "DEFAULT_DB",
    "MEMBER_PREFIX",
    "MODEL_ARTIFACT",
    "PARENT_TAG",
    "MlflowUnreachableError",
    "Tags",
    "artifact_location_for",
    "default_tracking_uri",
    "ensure_reachable",
    "experiment_name",
    "get_or_create_experiment",
    "log_model",
    "normalize_tracking_uri",
    "registered_model_name",
    "sqlite_path",
    "tracking",
]

DEFAULT_DB = "mlflow.db"
#: the logged model's artifact path in its run (``runs:/ID/model``)
MODEL_ARTIFACT = "model"
#: the logged model's checkpoint artifacts are ``member_0``, ``member_1``, …
MEMBER_PREFIX = "member_"
PARENT_TAG = "mlflow.parentRunId"
# MLflow's models-from-code entry for tuning.predict.EnsembleModel
_PYFUNC_ENTRY = Path(__file__).with_name("_pyfunc_entry.py")
ARTIFACTS_DIR = "mlartifacts"
_SQLITE = "sqlite:///"
_DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")


class MlflowUnreachableError(PoketuneError, RuntimeError):
    """The tracking store cannot be reached or written; nothing was exported."""


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else a SQLite store ``./mlflow.db`` in the working directory."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    return normalize_tracking_uri(env) if env else f"{_SQLITE}{Path(DEFAULT_DB).resolve()}"


def normalize_tracking_uri(uri: str) -> str:
    """Absolute SQLite URIs (a relative one would depend on the working directory of every
    later command); ``path/x.db`` → ``sqlite:///abs/path/x.db``; other URIs unchanged."""
    uri = uri.strip()
    if not uri:
        raise ValueError("empty MLflow tracking URI; pass e.g. http://127.0.0.1:5000 or sqlite:///mlflow.db")
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    if uri.startswith(_SQLITE):
        rest = uri[len(_SQLITE) :]
        path, sep, query = rest.partition("?")
        if path.startswith("/"):  # sqlite:////abs/path
            return uri
        return f"{_SQLITE}{Path(path).expanduser().resolve()}{sep}{query}"
    if "://" not in uri and ":" not in uri.split("/")[0]:
        if uri.endswith(_DB_SUFFIXES):
            return f"{_SQLITE}{Path(uri).expanduser().resolve()}"
        raise ValueError(
            f"MLflow tracking URI {uri!r} is a plain path; pass a tracking server "
            f"(http://host:port) or a SQLite store (sqlite:///{uri.rstrip('/')}/{DEFAULT_DB})"
        )
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    uri = normalize_tracking_uri(uri)
    if not uri.startswith(_SQLITE):
        return None
    return Path(uri[len(_SQLITE) :].partition("?")[0])


def artifact_location_for(uri: str, experiment: str) -> str | None:
    """Where a new experiment's artifacts go: ``mlartifacts/<experiment>/`` beside a SQLite
    database; None (the server's own default, usually its proxied artifact store) otherwise."""
    db = sqlite_path(uri)
    if db is None:
        return None
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._") or "experiment"
    return (db.parent / ARTIFACTS_DIR / folder).as_uri()


def _http_reason(base: str, timeout_s: float) -> str | None:
    """None when an MLflow server answers at ``base``, else why not."""
    reason = "no answer"
    for endpoint in ("/health", "/api/2.0/mlflow/experiments/search?max_results=1"):
        try:
            with urllib.request.urlopen(base + endpoint, timeout=timeout_s) as resp:
                if resp.status < 300:
                    return None
                reason = f"HTTP {resp.status} from {endpoint}"
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                return None  # it is there; credentials are MLflow's business (MLFLOW_TRACKING_*)
            reason = f"HTTP {exc.code} from {endpoint}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            # a refused connection or a timeout will not get better on the next endpoint
            return str(getattr(exc, "reason", exc))
    return reason


def _sqlite_reason(db: Path) -> str | None:
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create {db.parent}: {exc.strerror or exc}"
    if not os.access(db.parent, os.W_OK):
        return f"folder {db.parent} is not writable"
    if db.exists() and not os.access(db, os.W_OK):
        return f"database {db} is not writable"
    return None


def ensure_reachable(uri: str, *, timeout_s: float = 5.0, hint: str | None = None) -> str:
    """Check the tracking store before any work; return the normalised URI.

    HTTP(S): one quick request (``timeout_s``), without MLflow's client, whose retries and
    back-off would take minutes to give up on a server that is down. SQLite: the database's
    folder exists (it is created) and is writable. Other schemes are not checked.
    Raises :class:`MlflowUnreachableError` with ``hint`` (what to do instead) appended.
    """
    uri = normalize_tracking_uri(uri)
    db = sqlite_path(uri)
    if uri.startswith(("http://", "https://")):
        reason = _http_reason(uri, timeout_s)
        what = f"MLflow tracking server at {uri} is unreachable"
    elif db is not None:
        reason = _sqlite_reason(db)
        what = f"MLflow tracking store {uri} is not usable"
    else:
        reason = None
        what = ""
    if reason is not None:
        raise MlflowUnreachableError(f"{what} ({reason})" + (f"; {hint}" if hint else ""))
    return uri


@contextmanager
def tracking(uri: str) -> Iterator[MlflowClient]:
    """Point MLflow's fluent API (``mlflow.pytorch.log_model`` needs it) at ``uri`` for the
    block and yield a client for it; the previous tracking URI comes back afterwards."""
    import mlflow
    from mlflow import MlflowClient

    uri = normalize_tracking_uri(uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield MlflowClient(tracking_uri=uri)
    finally:
        mlflow.set_tracking_uri(previous)


#: MLflow's experiment-kind tag: poketune's experiments are model training, not GenAI
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def runs_url(server: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's page of an experiment's runs (or one run). MLflow 3.17's UI opens an
    experiment on its GenAI overview unless the URL asks for the model-training workflow;
    the experiment-kind tag alone does not change that in a fresh browser."""
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"


def get_or_create_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The id of experiment ``name``: restored if it was deleted, created if missing (with the
    SQLite artifact location rule above), tagged as a model-training experiment."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return str(client.create_experiment(
                name, artifact_location=artifact_location_for(uri, name), tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            ))
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # created concurrently by someone else
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        # a deleted experiment still owns its name; bring it back rather than fail
        client.restore_experiment(exp.experiment_id)
    if EXPERIMENT_KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return str(exp.experiment_id)


# ---------------------------------------------------------------------------------- names
class Tags:
    """Tag keys on poketune's runs and model versions (retrain, compare and submit look runs
    up by them)."""

    SWEEP = "sweep"  # sweep name, on the parent, every trial run and every retrain
    STORAGE = "storage"  # the sweep's storage (folder or URI), on the parent
    SWEEP_KEY = "poketune.sweep_key"  # hash of storage/name: the parent's identity
    KIND = "poketune.kind"  # "sweep" | "trial" | "retrain"
    TRIAL_ID = "trial_id"
    STATUS = "status"  # tuning.results status: completed, stopped_asha, ...
    ASHA_STOP_EPOCH = "asha_stop_epoch"  # only on trials ASHA stopped
    TASK = "task"
    DATA_HASH = "data_hash"
    SEARCHED = "poketune.searched_params"  # comma-separated dotted keys the sweep searched
    EPOCHS_LOGGED = "poketune.epochs_logged"  # metric steps 1..N are in the run
    MODEL_EPOCHS = "poketune.model_epochs"  # trial epochs when its model was logged
    CHECKPOINT_ARTIFACT = "poketune.checkpoint_artifact"  # artifact path of checkpoint.pt


def experiment_name(task: str) -> str:
    """The experiment a task's sweeps, retrains and comparisons go to by default."""
    return f"poketune-{task}"


def registered_model_name(task: str) -> str:
    """The registered model a task's retrains become versions of by default."""
    return f"poketune-{task}"


# ---------------------------------------------------------------------------------- models
def pip_requirements() -> list[str]:
    """The installed versions of what the logged model needs to load."""
    import importlib.metadata as md

    pkgs = ("torch", "torchvision", "numpy", "pandas", "scikit-learn", "pillow", "pyyaml", "mlflow")
    out = []
    for p in pkgs:
        try:
            out.append(f"{p}=={md.version(p)}")
        except md.PackageNotFoundError:
            out.append(p)
    return out


def model_signature(prep: Preprocessing, num_classes: int) -> Any:
    """Normalised float32 N×C×H×W in, class probabilities out, ``tta`` as a parameter."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    shape = (-1, prep.channels, prep.image_size, prep.image_size)
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), shape)]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))]),
        params=ParamSchema([ParamSpec("tta", "boolean", False)]),
    )


def log_model(
    checkpoints: Sequence[Path],
    *,
    preprocessing: Preprocessing,
    class_names: list[str],
    example: np.ndarray,
    registered_name: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """Log inference ``checkpoints`` as ONE ``mlflow.pyfunc`` model (probabilities averaged
    over them: :class:`tuning.predict.EnsembleModel`) to the active run, under
    :data:`MODEL_ARTIFACT`; registered as a new version of ``registered_name`` if given.

    Models from code: MLflow runs ``_pyfunc_entry.py`` at load time, so nothing is unpickled
    (the loading environment needs ``training``/``tuning`` importable). Returns MLflow's
    ``ModelInfo``.
    """
    import mlflow

    return mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=str(_PYFUNC_ENTRY),
        artifacts={f"{MEMBER_PREFIX}{i}": str(p) for i, p in enumerate(checkpoints)},
        signature=model_signature(preprocessing, len(class_names)),
        input_example=example,
        registered_model_name=registered_name,
        pip_requirements=pip_requirements(),
        metadata={
            "class_names": list(class_names),
            "preprocessing": preprocessing.to_dict(),
            "members": len(checkpoints),
            "input": "normalised float32 N×C×H×W (uint8 images: unwrap_python_model())",
            **(metadata or {}),
        },
    )
