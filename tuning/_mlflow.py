"""MLflow plumbing shared by export, retrain and submit: which tracking URI, whether it is
there, which experiment.

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
from typing import TYPE_CHECKING

from training.errors import PoketuneError

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "ARTIFACTS_DIR",
    "DEFAULT_DB",
    "MlflowUnreachableError",
    "artifact_location_for",
    "default_tracking_uri",
    "ensure_reachable",
    "get_or_create_experiment",
    "normalize_tracking_uri",
    "sqlite_path",
    "tracking",
]

DEFAULT_DB = "mlflow.db"
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


def get_or_create_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The id of experiment ``name``: restored if it was deleted, created if missing (with the
    SQLite artifact location rule above)."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return str(client.create_experiment(name, artifact_location=artifact_location_for(uri, name)))
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # created concurrently by someone else
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        # a deleted experiment still owns its name; bring it back rather than fail
        client.restore_experiment(exp.experiment_id)
    return str(exp.experiment_id)
