"""cluster.yaml, checked without any cloud call.

Ray's own checks first: ``prepare_config`` (merge with the provider's defaults.yaml) and
``validate_config`` (jsonschema ``ray-schema.json`` plus its cross-field checks) are what
``ray up`` runs before it touches the provider; the provider bootstrap after them (boto3:
IAM, subnets, AMI) is left out. Then the project's own invariants, which the schema cannot
see: constrained installs, a localhost-only dashboard, token auth, GPU resources, no secrets.
Every check is also run on a broken copy, so each one is shown able to fail.
"""

from __future__ import annotations

import copy
import importlib.metadata
import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.version import Version
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
CONSTRAINTS = REPO / "constraints.txt"

#: remote path of the project on every node, and the constraints file inside it
REMOTE_PROJECT = "~/poketune"
REMOTE_CONSTRAINTS = f"{REMOTE_PROJECT}/constraints.txt"
AUTH_TOKEN_PATH = "~/.ray/auth_token"
#: what every node needs from the repo to install and run poketune: rsync must not drop these
SHIPPED = ("pyproject.toml", "constraints.txt", "training", "tuning", "search_spaces")
#: packages whose versions must be identical on every node and in this venv
PINNED_EVERYWHERE = ("torch", "torchvision", "ray")

#: (vCPUs, GPUs) of the EC2 types a node type may use; declared resources must match them
EC2_HARDWARE: dict[str, tuple[int, int]] = {
    "m5.large": (2, 0),
    "m5.xlarge": (4, 0),
    "m5.2xlarge": (8, 0),
    "g4dn.xlarge": (4, 1),
    "g4dn.2xlarge": (8, 1),
    "g4dn.12xlarge": (48, 4),
    "g5.xlarge": (4, 1),
    "g5.2xlarge": (8, 1),
    "g5.12xlarge": (48, 4),
    "g6.xlarge": (4, 1),
}

SECRET_PATTERNS: dict[str, re.Pattern[str]] = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS credential key": re.compile(
        r"aws_(?:secret_access_key|access_key_id|session_token)", re.IGNORECASE
    ),
    "AWS credential env var": re.compile(r"AWS_(?:SECRET_ACCESS_KEY|ACCESS_KEY_ID|SESSION_TOKEN)"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "Ray auth token (64 hex chars)": re.compile(r"\b[0-9a-f]{64}\b"),
    "password in a URI": re.compile(r"://[^/\s:@]+:[^/\s@]+@"),
    "MLflow credential": re.compile(r"MLFLOW_TRACKING_(?:PASSWORD|TOKEN)\s*[:=]\s*\S"),
}

_BEGIN = re.compile(r"^# ---- BEGIN ALTERNATIVE (\w+) \(replaces: ([\w, ]+)\)\s*$")
_END = re.compile(r"^# ---- END ALTERNATIVE (\w+)\s*$")


# --- helpers -------------------------------------------------------------------------------


def load_text() -> str:
    return CLUSTER_YAML.read_text()


def load_config(text: str | None = None) -> dict[str, Any]:
    cfg = yaml.safe_load(load_text() if text is None else text)
    assert isinstance(cfg, dict), f"{CLUSTER_YAML}: top level is not a mapping"
    return cfg


def ray_validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """What ``ray up`` does to the file before its first cloud call; returns the prepared config."""
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def alternatives(text: str) -> dict[str, tuple[list[str], dict[str, Any]]]:
    """The commented-out alternative blocks: name -> (sections they replace, uncommented YAML)."""
    found: dict[str, tuple[list[str], dict[str, Any]]] = {}
    current: tuple[str, list[str], int] | None = None
    body: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if (m := _BEGIN.match(line)) is not None:
            if current is not None:
                raise ValueError(f"line {lineno}: BEGIN {m[1]} inside open block {current[0]}")
            current = (m[1], [s.strip() for s in m[2].split(",")], lineno)
            body = []
        elif (m := _END.match(line)) is not None:
            if current is None or m[1] != current[0]:
                raise ValueError(f"line {lineno}: END {m[1]} without a matching BEGIN")
            if not all(b == "#" or b.startswith("# ") for b in body):
                raise ValueError(f"block {current[0]}: every line must be commented with '# '")
            uncommented = "\n".join(b[2:] for b in body)
            parsed = yaml.safe_load(uncommented)
            if not isinstance(parsed, dict):
                raise ValueError(f"block {current[0]} (line {current[2]}): not a YAML mapping")
            found[current[0]] = (current[1], parsed)
            current = None
        elif current is not None:
            body.append(line)
    if current is not None:
        raise ValueError(f"block {current[0]} (line {current[2]}): no END line")
    return found


def apply_alternative(
    base: dict[str, Any], replaces: list[str], block: dict[str, Any]
) -> dict[str, Any]:
    """Delete the sections a block replaces, then add the block: what its header tells users."""
    extra = sorted(set(block) - set(replaces))
    if extra:
        raise ValueError(f"block sets {extra} but its BEGIN line does not list them in replaces")
    merged = {k: v for k, v in copy.deepcopy(base).items() if k not in replaces}
    merged.update(copy.deepcopy(block))
    return merged


def rsync_excludes(pattern: str, relpath: str) -> bool:
    """Whether ``rsync --exclude PATTERN`` drops ``relpath`` (relative to the transfer root).

    rsync(1), "PATTERN MATCHING RULES": a leading "/" anchors at the root; a pattern with "/"
    or "**" is matched against the end of the full path; otherwise only against the last
    component. fnmatch's "*" also crosses "/", so this errs towards "excluded".
    """
    pat = pattern.rstrip("/")
    if pat.startswith("/"):
        return fnmatchcase(relpath, pat[1:])
    if "/" in pat or "**" in pat:
        return fnmatchcase(relpath, pat) or fnmatchcase(relpath, "*/" + pat)
    return fnmatchcase(relpath.rsplit("/", 1)[-1], pat)


def shipped_paths() -> list[str]:
    """Every path (files and the folders above them) that must reach the nodes."""
    paths: set[str] = set()
    for top in SHIPPED:
        root = REPO / top
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for f in files:
            rel = f.relative_to(REPO)
            if "__pycache__" in rel.parts:
                continue
            paths.update("/".join(rel.parts[: i + 1]) for i in range(len(rel.parts)))
    return sorted(paths)


def _start_commands(cfg: dict[str, Any], key: str) -> list[str]:
    return [c for c in cfg.get(key, []) if "ray start" in c]


def project_problems(cfg: dict[str, Any]) -> list[str]:
    """Invariants of this project that Ray's schema cannot check; empty when all hold."""
    problems: list[str] = []

    if cfg.get("file_mounts", {}).get(REMOTE_PROJECT) != ".":
        problems.append(f"file_mounts must map {REMOTE_PROJECT} to '.' (the repo root)")

    shipped = shipped_paths()
    for pattern in cfg.get("rsync_exclude", []):
        dropped = [p for p in shipped if rsync_excludes(pattern, p)]
        if dropped:
            problems.append(f"rsync_exclude {pattern!r} drops project files, e.g. {dropped[0]}")

    setup = cfg.get("setup_commands", [])
    pip_cmds = [
        c
        for key in ("setup_commands", "head_setup_commands", "worker_setup_commands")
        for c in cfg.get(key, [])
        if "pip install" in c
    ]
    if not any(f"-e {REMOTE_PROJECT}" in c and f"-c {REMOTE_CONSTRAINTS}" in c for c in setup):
        problems.append(
            f"setup_commands must pip install -c {REMOTE_CONSTRAINTS} -e {REMOTE_PROJECT}"
        )
    for c in pip_cmds:
        if f"-c {REMOTE_CONSTRAINTS}" not in c:
            problems.append(f"pip install without the constraints file: {c!r}")

    head_start = _start_commands(cfg, "head_start_ray_commands")
    worker_start = _start_commands(cfg, "worker_start_ray_commands")
    if len(head_start) != 1 or "--head" not in head_start[0]:
        problems.append("head_start_ray_commands must run exactly one `ray start --head`")
    else:
        cmd = head_start[0]
        if "--autoscaling-config=~/ray_bootstrap_config.yaml" not in cmd:
            problems.append(
                "head `ray start` must pass --autoscaling-config=~/ray_bootstrap_config.yaml"
            )
        hosts = re.findall(r"--dashboard-host[= ](\S+)", cmd)
        if hosts != ["127.0.0.1"] and hosts != ["localhost"]:
            problems.append(
                f"dashboard must listen on localhost only, got {hosts or 'the default'}"
            )
    if len(worker_start) != 1:
        problems.append("worker_start_ray_commands must run exactly one `ray start`")
    for cmd in head_start + worker_start:
        if "0.0.0.0" in cmd:
            problems.append(f"`ray start` binds 0.0.0.0: {cmd!r}")
        if "RAY_AUTH_MODE=token" not in cmd:
            problems.append(f"`ray start` without RAY_AUTH_MODE=token: {cmd!r}")
    if not any("export RAY_AUTH_MODE=token" in c and "~/.bashrc" in c for c in setup):
        problems.append("setup_commands must export RAY_AUTH_MODE=token in ~/.bashrc")
    if not any("get-auth-token --generate" in c for c in cfg.get("head_setup_commands", [])):
        problems.append("head_setup_commands must create the token (ray get-auth-token --generate)")
    if AUTH_TOKEN_PATH not in cfg.get("cluster_synced_files", []):
        problems.append(f"cluster_synced_files must copy {AUTH_TOKEN_PATH} to the workers")

    types: dict[str, Any] = cfg.get("available_node_types", {})
    head = cfg.get("head_node_type")
    images = {t.get("node_config", {}).get("ImageId") for t in types.values()}
    if len(images) != 1:
        problems.append(f"node types use different images {sorted(map(str, images))}")
    for name, t in types.items():
        res = t.get("resources", {})
        node_cfg = t.get("node_config", {})
        itype = node_cfg.get("InstanceType")
        if itype not in EC2_HARDWARE:
            problems.append(f"{name}: unknown InstanceType {itype!r}; add it to EC2_HARDWARE")
            continue
        vcpus, gpus = EC2_HARDWARE[itype]
        if name == head:
            if res.get("CPU") != 0 or res.get("GPU", 0) != 0:
                problems.append(f"{name}: the head must declare CPU: 0 and no GPU (no trials)")
            if "InstanceMarketOptions" in node_cfg:
                problems.append(f"{name}: the head must not be spot (it runs the driver)")
            continue
        if gpus == 0 or res.get("GPU") != gpus or res.get("CPU") != vcpus:
            problems.append(
                f"{name}: {itype} has {vcpus} vCPU / {gpus} GPU but declares "
                f"CPU={res.get('CPU')} GPU={res.get('GPU')}"
            )
    if cfg.get("provider", {}).get("cache_stopped_nodes") is not False:
        problems.append("provider.cache_stopped_nodes must be false (stopped nodes keep billing)")
    return problems


def find_secrets(text: str) -> list[str]:
    return [
        f"line {n}: {what}"
        for n, line in enumerate(text.splitlines(), start=1)
        for what, pattern in SECRET_PATTERNS.items()
        if pattern.search(line)
    ]


def parse_pins(text: str) -> dict[str, list[str]]:
    """constraints.txt lines -> {normalised name: [specifier, ...]}."""
    pins: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*(.*)$", line)
        assert m is not None, f"{CONSTRAINTS}: cannot parse line {raw!r}"
        name = re.sub(r"[-_.]+", "-", m[1]).lower()
        pins.setdefault(name, []).append(m[2].replace(" ", ""))
    return pins


# --- Ray's own validation ------------------------------------------------------------------


def test_cluster_yaml_passes_rays_schema_and_config_checks() -> None:
    prepared = ray_validate(load_config())
    # prepare_config merged the AWS defaults and the per-type worker limits Ray will use
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]
    assert prepared["available_node_types"]["gpu_t4"]["max_workers"] == 4
    assert prepared["available_node_types"][prepared["head_node_type"]]["max_workers"] == 0
    # setup_commands were merged in front of the head's own, as `ray up` runs them
    assert (
        prepared["head_setup_commands"][: len(prepared["setup_commands"])]
        == prepared["setup_commands"]
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.__setitem__("max_workers", "many"), "'many' is not of type 'integer'"),
        (lambda c: c.__setitem__("max_wrokers", 4), "'max_wrokers' was unexpected"),
        (
            lambda c: c["available_node_types"]["gpu_t4"]["resources"].__setitem__("GPU", 0.5),
            "0.5 is not of type 'integer'",
        ),
        (
            lambda c: c["available_node_types"]["gpu_t4"].pop("resources"),
            "'resources' is a required",
        ),
    ],
    ids=["max_workers-not-int", "unknown-top-level-key", "fractional-resource", "no-resources"],
)
def test_broken_copies_fail_rays_schema(mutate: Any, message: str) -> None:
    cfg = load_config()
    mutate(cfg)
    with pytest.raises(jsonschema.ValidationError, match=re.escape(message)):
        ray_validate(cfg)


def test_min_workers_over_global_max_fails_rays_cross_check() -> None:
    cfg = load_config()
    cfg["available_node_types"]["gpu_t4"]["min_workers"] = cfg["max_workers"] + 1
    with pytest.raises(ValueError, match="smaller than the sum of `min_workers`"):
        ray_validate(cfg)


# --- commented alternatives ----------------------------------------------------------------


def test_alternatives_are_present_and_parse() -> None:
    alts = alternatives(load_text())
    assert set(alts) == {"gcp", "local"}
    assert alts["gcp"][1]["provider"]["type"] == "gcp"
    assert alts["local"][1]["provider"]["type"] == "local"


@pytest.mark.parametrize("name", ["gcp", "local"])
def test_uncommented_alternative_passes_rays_schema(name: str) -> None:
    base = load_config()
    replaces, block = alternatives(load_text())[name]
    prepared = ray_validate(apply_alternative(base, replaces, block))
    assert prepared["provider"]["type"] == name
    # the parts every variant shares survive the swap
    assert prepared["file_mounts"] == base["file_mounts"]
    assert prepared["head_start_ray_commands"] == base["head_start_ray_commands"]


def test_gcp_alternative_declares_gpus_and_keeps_trials_off_the_head() -> None:
    _, block = alternatives(load_text())["gcp"]
    types = block["available_node_types"]
    assert types[block["head_node_type"]]["resources"] == {"CPU": 0}
    workers = [t for n, t in types.items() if n != block["head_node_type"]]
    assert workers
    for t in workers:
        accelerators = t["node_config"]["guestAccelerators"]
        assert t["resources"]["GPU"] == sum(a["acceleratorCount"] for a in accelerators)


def test_local_alternative_lists_the_machines() -> None:
    base = load_config()
    replaces, block = alternatives(load_text())["local"]
    prepared = ray_validate(apply_alternative(base, replaces, block))
    (node_type,) = prepared["available_node_types"].values()
    # the manual on-prem provider caps the cluster at the listed machines
    assert node_type["max_workers"] == len(block["provider"]["worker_ips"])
    assert any("get-auth-token --generate" in c for c in prepared["head_setup_commands"])


def test_alternative_parser_rejects_bad_blocks() -> None:
    head = "# ---- BEGIN ALTERNATIVE x (replaces: provider)\n"
    with pytest.raises(ValueError, match="no END line"):
        alternatives(head + "# provider: {type: local}\n")
    with pytest.raises(ValueError, match="commented"):
        alternatives(head + "provider: {type: local}\n# ---- END ALTERNATIVE x\n")
    replaces, block = alternatives(head + "# auth: {}\n# ---- END ALTERNATIVE x\n")["x"]
    with pytest.raises(ValueError, match=r"\['auth'\]"):
        apply_alternative(load_config(), replaces, block)


# --- project invariants --------------------------------------------------------------------


def test_project_invariants_hold() -> None:
    assert project_problems(load_config()) == []


def _set_head_start(c: dict[str, Any], old: str, new: str) -> None:
    c["head_start_ray_commands"] = [s.replace(old, new) for s in c["head_start_ray_commands"]]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: _set_head_start(c, "--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0"),
            "dashboard must listen on localhost only",
        ),
        (
            lambda c: _set_head_start(c, " --dashboard-host=127.0.0.1", ""),
            "got the default",
        ),
        (
            lambda c: _set_head_start(c, "RAY_AUTH_MODE=token ", ""),
            "without RAY_AUTH_MODE=token",
        ),
        (lambda c: c.__setitem__("cluster_synced_files", []), "cluster_synced_files must copy"),
        (
            lambda c: c.__setitem__(
                "setup_commands", [s for s in c["setup_commands"] if "RAY_AUTH_MODE" not in s]
            ),
            "export RAY_AUTH_MODE=token",
        ),
        (
            lambda c: c.__setitem__(
                "setup_commands",
                [s.replace(f" -c {REMOTE_CONSTRAINTS}", "") for s in c["setup_commands"]],
            ),
            "setup_commands must pip install -c",
        ),
        (
            lambda c: c["head_setup_commands"].append("~/venv/bin/pip install boto3"),
            "pip install without the constraints file",
        ),
        (
            lambda c: c["available_node_types"]["gpu_t4"]["resources"].pop("GPU"),
            "gpu_t4: g4dn.xlarge has 4 vCPU / 1 GPU",
        ),
        (
            lambda c: c["available_node_types"]["gpu_t4"]["node_config"].__setitem__(
                "InstanceType", "g4dn.12xlarge"
            ),
            "g4dn.12xlarge has 48 vCPU / 4 GPU",
        ),
        (
            lambda c: c["available_node_types"]["head"]["resources"].__setitem__("CPU", 4),
            "head must declare CPU: 0",
        ),
        (
            lambda c: c["available_node_types"]["gpu_a10g"]["node_config"].__setitem__(
                "ImageId", "ami-0other"
            ),
            "different images",
        ),
        (lambda c: c["file_mounts"].__setitem__(REMOTE_PROJECT, "./training"), "file_mounts"),
        (
            lambda c: c["rsync_exclude"].append("data"),
            "'data' drops project files, e.g. training/data",
        ),
        (lambda c: c["rsync_exclude"].append("**/data"), "'**/data' drops project files"),
        (lambda c: c["rsync_exclude"].append("*.yaml"), "drops project files, e.g. search_spaces/"),
        (
            lambda c: c["provider"].__setitem__("cache_stopped_nodes", True),
            "cache_stopped_nodes",
        ),
    ],
)
def test_broken_copies_violate_project_invariants(mutate: Any, expected: str) -> None:
    cfg = load_config()
    mutate(cfg)
    problems = project_problems(cfg)
    assert any(expected in p for p in problems), problems


# --- secrets ---------------------------------------------------------------------------------


def test_no_credentials_in_cluster_yaml() -> None:
    assert find_secrets(load_text()) == []


@pytest.mark.parametrize(
    "planted",
    [
        "AKIA" + "QWERTYUIOPASDFGH",  # split so this file itself holds no key-shaped string
        "aws_secret_" + "access_key: x",
        "MLFLOW_TRACKING_URI: https://alice:" + "hunter2@mlflow.example.com",
        "token: " + "ab12" * 16,
    ],
    ids=["access-key-id", "secret-key-name", "uri-password", "ray-token"],
)
def test_secret_scan_catches_planted_secrets(planted: str) -> None:
    text = load_text() + f"\n# {planted}\n"
    assert find_secrets(text), planted
    # and the planted line is the one reported
    assert all(f"line {len(text.splitlines())}" in s for s in find_secrets(text))


def test_auth_is_never_disabled() -> None:
    assert not re.search(r"RAY_AUTH_MODE\s*=\s*disabled", load_text(), re.IGNORECASE)


# --- constraints.txt -------------------------------------------------------------------------


def test_constraints_file_pins_exactly_what_this_venv_runs() -> None:
    assert CONSTRAINTS.is_file(), f"{CONSTRAINTS} is missing: every node installs with it"
    pins = parse_pins(CONSTRAINTS.read_text())
    loose = {
        name: specs for name, specs in pins.items() if not all(s.startswith("==") for s in specs)
    }
    assert loose == {}, f"{CONSTRAINTS}: every line must be an exact == pin"
    for name in PINNED_EVERYWHERE:
        assert len(pins.get(name, [])) == 1, f"{CONSTRAINTS}: need exactly one {name}== line"
        pinned = Version(pins[name][0][2:])
        installed = Version(importlib.metadata.version(name))
        # a local build tag (+cpu, +cu130) is the same release
        assert pinned == Version(installed.public), (
            f"{CONSTRAINTS} pins {name}=={pinned} but this venv runs {installed}: "
            "cluster nodes would run something the tests never saw"
        )


@pytest.mark.parametrize(
    ("pattern", "path", "excluded"),
    [
        ("/data", "data", True),
        ("/data", "training/data", False),
        ("data", "training/data", True),
        ("__pycache__", "training/models/__pycache__", True),
        ("**/data", "training/data", True),
        ("/.venv", ".venv", True),
        ("/.venv", "tuning/space/_yaml.py", False),
    ],
)
def test_rsync_pattern_model(pattern: str, path: str, excluded: bool) -> None:
    assert rsync_excludes(pattern, path) is excluded


def test_shipped_paths_cover_the_packages() -> None:
    paths = shipped_paths()
    assert {"constraints.txt", "pyproject.toml", "training/data", "tuning"} <= set(paths)
    assert not any("__pycache__" in p for p in paths)


def test_parse_pins_flags_loose_specifiers() -> None:
    pins = parse_pins("# comment\ntorch==2.14.1\nRay[default] >= 2.0  # note\nfoo_bar==1\n")
    assert pins == {"torch": ["==2.14.1"], "ray": [">=2.0"], "foo-bar": ["==1"]}
