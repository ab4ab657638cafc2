"""A real ``mlflow server`` on 127.0.0.1 for tests (export, retrain, submit).

Usage in a test module::

    from mlflow_server import mlflow_server_fixture  # tests/ is on sys.path (conftest.py)
    mlflow_server = mlflow_server_fixture()          # module-scoped fixture → MlflowServer

    def test_x(mlflow_server): ... mlflow_server.uri ...

or ``with start_mlflow_server(tmp_dir) as server:`` anywhere. The server uses a temporary
SQLite backend and serves artifacts itself (``--artifacts-destination``), so the client
uploads through HTTP like it would to a remote server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# no usage reporting from the client or the server in tests (and no network here anyway)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

__all__ = [
    "MlflowServer",
    "PendingServer",
    "free_port",
    "launch_mlflow_server",
    "mlflow_server_fixture",
    "start_mlflow_server",
]


@dataclass(frozen=True)
class MlflowServer:
    uri: str  # http://127.0.0.1:PORT
    backend_db: Path
    artifacts: Path
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _mlflow_exe() -> list[str]:
    exe = Path(sys.executable).with_name("mlflow")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "mlflow"]


class PendingServer:
    """A launched ``mlflow server`` that may still be starting (see :func:`launch_mlflow_server`)."""

    def __init__(self, server: MlflowServer, proc: subprocess.Popen[Any], timeout_s: float) -> None:
        self.server = server
        self.proc = proc
        self.deadline = time.monotonic() + timeout_s

    def ready(self) -> MlflowServer:
        """Wait until ``/health`` answers; raise with the server's log if it never does."""
        while not _healthy(self.server.uri):
            log = self.server.log.read_text(errors="replace")[-3000:]
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.proc.returncode}):\n{log}")
            if time.monotonic() > self.deadline:
                raise RuntimeError(f"mlflow server not healthy in time:\n{log}")
            time.sleep(0.3)
        return self.server


@contextmanager
def launch_mlflow_server(
    workdir: Path, *, startup_timeout_s: float = 90.0, port: int | None = None
) -> Iterator[PendingServer]:
    """Start ``mlflow server`` (one worker) in ``workdir`` without waiting for it (it takes
    a while to start: do other set-up meanwhile, then call ``.ready()``); stop it (its whole
    process group) when the block ends. A ``workdir`` used before keeps its runs; ``port``
    brings a server back where it was."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    server = MlflowServer(
        uri=f"http://127.0.0.1:{port}",
        backend_db=workdir / "backend.db",
        artifacts=workdir / "artifacts",
        log=workdir / "server.log",
    )
    cmd = [
        *_mlflow_exe(), "server",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
        "--backend-store-uri", f"sqlite:///{server.backend_db}",
        "--artifacts-destination", str(server.artifacts),
    ]
    # no background job runner: it forks half a dozen extra Python processes (a slow start
    # on a small CI machine) for features these tests do not use
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(server.log, "wb") as log:
        # own session: stopping it also stops the uvicorn workers it forks
        proc = subprocess.Popen(
            cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield PendingServer(server, proc, startup_timeout_s)
    finally:
        _stop(proc)


@contextmanager
def start_mlflow_server(workdir: Path, *, startup_timeout_s: float = 90.0) -> Iterator[MlflowServer]:
    """Start ``mlflow server`` in ``workdir`` and wait until it answers; stop it afterwards."""
    with launch_mlflow_server(workdir, startup_timeout_s=startup_timeout_s) as pending:
        yield pending.ready()


def _stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM the server's process group, SIGKILL whatever is left after a few seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # workers that outlived the leader, if any
    proc.wait(timeout=10)


def mlflow_server_fixture(scope: Any = "module") -> Callable[..., Iterator[MlflowServer]]:
    """A pytest fixture (default: one server per test module) to assign at module level."""

    @pytest.fixture(scope=scope)
    def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
        with start_mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as server:
            yield server

    return mlflow_server
