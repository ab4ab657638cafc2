"""A real multi-process Ray cluster on this machine, for tests: ``ray start`` head + workers.

Each node is one ``ray start --block`` process started in its own session with its own
``--temp-dir`` and its own ports, so several clusters (other test runs, other people's Ray)
coexist on one machine. Nodes are stopped by killing every process of their session —
never with ``ray stop``, which stops *all* Ray processes on the machine.

Ray turns token authentication on for the clusters it starts. The cluster gets its own
token file (``RAY_AUTH_TOKEN_PATH``) instead of the user's ``~/.ray/auth_token``; every
process that talks to it (nodes, drivers, ``ray job submit``) runs with :meth:`LocalCluster.env`
and HTTP clients send :meth:`LocalCluster.auth_headers`.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ClusterError", "LocalCluster", "LocalNode", "local_cluster"]

_VENV_BIN = Path(sys.executable).parent
_RAY = str(_VENV_BIN / "ray")
#: each node gets this many worker ports of its own
_WORKER_PORTS = 60


class ClusterError(RuntimeError):
    pass


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports that are free right now (held open together so none repeats)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_range(n: int, avoid: set[int]) -> tuple[int, int]:
    """``n`` consecutive free ports below Linux's ephemeral range (where ``_free_ports``'
    picks come from) and above Ray's default worker ports; Ray refuses overlapping ports."""
    for _ in range(100):
        lo = random.randrange(20000, 32000 - n)
        ports = range(lo, lo + n)
        if not avoid.intersection(ports) and all(_port_free(p) for p in ports):
            return lo, lo + n - 1
    raise ClusterError(f"no {n} consecutive free ports for Ray workers")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _session_pids(sid: int, marker: str) -> list[int]:
    """The live processes of session ``sid`` whose environment contains ``marker`` (Linux).

    Killing the process group is not enough: Ray worker processes (the trials) put
    themselves in process groups of their own, but they stay in the node's session. The
    marker (the cluster's token path, inherited by every process of the node) guards
    against a session id that was reused after all of the node's processes were gone.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == sid and marker.encode() in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            continue
    return pids


@dataclass
class LocalNode:
    name: str
    process: subprocess.Popen[bytes]  # `ray start --block`; its pid is the session id
    temp_dir: Path
    log: Path
    resource: str  # a custom resource only this node has: how tests find its node id
    marker: str  # in the environment of every process of the node
    node_id: str | None = None
    killed: bool = False

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL every process of the node at once: what a lost machine looks like."""
        if self.killed:
            return
        self.killed = True
        sid = self.process.pid
        pids = _session_pids(sid, self.marker) if Path("/proc").is_dir() else []
        if self.process.poll() is None:  # else the group id may belong to someone else now
            with suppress(ProcessLookupError):
                os.killpg(sid, signal.SIGKILL)
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while pids := [p for p in pids if _alive(p)]:
            if time.monotonic() > deadline:
                raise ClusterError(f"node {self.name!r}: processes {pids} survived SIGKILL")
            time.sleep(0.1)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.is_file() else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a killed child of ours stays a zombie until reaped; it no longer runs anything
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass
class LocalCluster:
    root: Path
    cpus_per_node: int = 1
    head_cpus: int = 0  # like cluster.yaml: the head runs the driver, trials go to workers
    object_store_bytes: int = 150 * 1024**2
    gcs_port: int = 0
    dashboard_port: int = 0
    nodes: dict[str, LocalNode] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # sockets live under --temp-dir and AF_UNIX paths are limited to 107 bytes: pytest's
        # tmp_path is too deep for them
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="ptray-"))
        self.token_file = self.root / "auth_token"
        if not self.token_file.is_file():
            self.token_file.write_text(secrets.token_hex(32))
            self.token_file.chmod(0o600)

    # ---- how to talk to it -------------------------------------------------------------

    @property
    def address(self) -> str:
        """GCS address for ``ray.init(address=...)`` / ``poketune tune --address``."""
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """Jobs API / ``ray job submit --address``."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def env(self) -> dict[str, str]:
        """Environment for any process that joins or talks to the cluster."""
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=str(self.token_file),
            RAY_USAGE_STATS_ENABLED="0",
            # trials, job drivers and `ray` find the project's console scripts
            PATH=f"{_VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            # Tune warns on every epoch of a short trial that checkpoints each epoch
            TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0",
        )
        return env

    def _node_env(self) -> dict[str, str]:
        # Ray's own processes look their cluster up with address="auto" in places (Train V2's
        # placement-group cleaner, state API clients); with several Ray instances on one
        # machine that finds all of them and fails, so point them at theirs
        return {**self.env(), "RAY_ADDRESS": self.address}

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}

    def api(self, path: str) -> Any:
        req = urllib.request.Request(self.dashboard_url + path, headers=self.auth_headers())
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def alive_nodes(self) -> list[dict[str, Any]]:
        """The state API's view of the cluster's live nodes."""
        data = self.api("/api/v0/nodes?detail=1&limit=100")
        return [n for n in data["data"]["result"]["result"] if n["state"] == "ALIVE"]

    # ---- nodes ---------------------------------------------------------------------------

    def _start(self, name: str, head: bool) -> LocalNode:
        if name in self.nodes:
            raise ClusterError(f"node {name!r} exists already")
        temp_dir = self.ray_tmp / name
        temp_dir.mkdir(parents=True, exist_ok=True)
        agent, grpc, runtime_env, metrics, client, gcs, dashboard = _free_ports(7)
        lo, hi = _free_port_range(_WORKER_PORTS, {agent, grpc, runtime_env, metrics, client, gcs, dashboard})
        resource = f"poketune_test_{name}"
        args = [
            _RAY, "start", "--block", "--disable-usage-stats",
            "--temp-dir", str(temp_dir),
            "--num-cpus", str(self.head_cpus if head else self.cpus_per_node),
            "--num-gpus", "0",
            "--resources", json.dumps({resource: 1}),
            "--object-store-memory", str(self.object_store_bytes),
            "--dashboard-agent-listen-port", str(agent),
            "--dashboard-agent-grpc-port", str(grpc),
            "--runtime-env-agent-port", str(runtime_env),
            "--metrics-export-port", str(metrics),
            "--min-worker-port", str(lo),
            "--max-worker-port", str(hi),
        ]  # fmt: skip
        if head:
            self.gcs_port, self.dashboard_port = gcs, dashboard
            args += [
                "--head", "--port", str(self.gcs_port),
                "--include-dashboard", "true",
                "--dashboard-host", "127.0.0.1",
                "--dashboard-port", str(self.dashboard_port),
                "--ray-client-server-port", str(client),
            ]  # fmt: skip
        else:
            args += ["--address", self.address]
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args, env=self._node_env(), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        node = LocalNode(name, proc, temp_dir, log, resource, marker=str(self.token_file))
        self.nodes[name] = node
        return node

    def _wait_registered(self, node: LocalNode, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise ClusterError(
                    f"`ray start` for node {node.name!r} exited with {node.process.returncode}:\n"
                    f"{node.log_tail()}"
                )
            try:
                for n in self.alive_nodes():
                    if node.resource in n["resources_total"]:
                        node.node_id = n["node_id"]
                        return
            except OSError as exc:  # dashboard not up yet
                last_error = exc
            time.sleep(0.5)
        raise ClusterError(
            f"node {node.name!r} did not register within {timeout:.0f}s ({last_error}):\n"
            f"{node.log_tail()}"
        )

    def start_head(self, timeout: float = 90) -> LocalNode:
        node = self._start("head", head=True)
        self._wait_registered(node, timeout)
        return node

    def add_worker(self, name: str, timeout: float = 60) -> LocalNode:
        node = self._start(name, head=False)
        self._wait_registered(node, timeout)
        return node

    def start(self, workers: int, timeout: float = 120) -> None:
        """Head and ``workers`` worker nodes, the workers started as soon as the GCS listens
        (the dashboard, which answers "is it registered", comes up much later)."""
        head = self._start("head", head=True)
        deadline = time.monotonic() + timeout
        while not _listening(self.gcs_port):
            if head.process.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"the head's GCS never listened:\n{head.log_tail()}")
            time.sleep(0.2)
        started = [head] + [self._start(f"worker{i + 1}", head=False) for i in range(workers)]
        for node in started:
            self._wait_registered(node, max(1.0, deadline - time.monotonic()))

    def workers(self) -> list[LocalNode]:
        """Worker nodes whose ``ray start`` still runs."""
        return [n for name, n in self.nodes.items() if name != "head" and n.running]

    def kill_node(self, name: str) -> None:
        self.nodes[name].kill()

    def wait_node_dead(self, name: str, timeout: float = 60) -> None:
        """Until the cluster (GCS) itself has marked the node dead."""
        node_id = self.nodes[name].node_id
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(n["node_id"] != node_id for n in self.alive_nodes()):
                return
            time.sleep(0.5)
        raise ClusterError(f"node {name!r} still alive after {timeout:.0f}s")

    def shutdown(self) -> None:
        """Kill worker nodes first: a worker outliving the GCS retries for a while."""
        for name in sorted(self.nodes, key=lambda n: n == "head"):
            self.nodes[name].kill()
        self.nodes.clear()
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


@contextmanager
def local_cluster(
    root: Path, workers: int = 1, cpus_per_node: int = 1, head_cpus: int = 0
) -> Iterator[LocalCluster]:
    """A head plus ``workers`` worker nodes (``worker1``, ...); killed on exit, even on error."""
    cluster = LocalCluster(root, cpus_per_node=cpus_per_node, head_cpus=head_cpus)
    try:
        cluster.start(workers)
        yield cluster
    finally:
        cluster.shutdown()
