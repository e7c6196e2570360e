"""cluster.yaml and cluster-local.yaml: Ray's own validation, offline, plus our invariants.

`validate_offline` does what `ray up` does to a config before it talks to a cloud
(ray.autoscaler._private.commands._bootstrap_config): `prepare_config` (merge with the provider's
defaults.yaml; for `local`, build the node type from head_ip/worker_ips), then Ray's
`validate_config` (jsonschema against ray-schema.json plus its own checks). For the local provider
it also runs the provider's own resource fill-out and bootstrap, which need no network. The AWS
provider's fill-out and bootstrap call AWS through boto3 (instance types, IAM, security groups,
subnets), so for cluster.yaml only the schema part runs; its worker resources are therefore
written out in the file, which the schema then checks.
"""

import copy
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.providers import _NODE_PROVIDERS
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[2]
AWS_FILE = REPO / "cluster.yaml"
LOCAL_FILE = REPO / "cluster-local.yaml"
FILES = [AWS_FILE, LOCAL_FILE]

SECRET_PATTERNS = [
    r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids (long-term, temporary)
    r"(?i)aws_secret_access_key|aws_access_key_id|aws_session_token",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    # the shape of an AWS secret key: 40 base64 characters, both cases (a git SHA has one case)
    r"(?<![A-Za-z0-9/+])(?=[A-Za-z0-9/+]{0,39}[A-Z])(?=[A-Za-z0-9/+]{0,39}[a-z])"
    r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])",
]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def validate_offline(config: dict) -> dict:
    """Ray's config preparation and validation as `ray up` runs them, minus cloud calls."""
    config = prepare_config(copy.deepcopy(config))
    if config["provider"]["type"] == "local":
        provider_cls = _NODE_PROVIDERS["local"](config["provider"])
        config = provider_cls.fillout_available_node_types_resources(config)
        validate_config(config)
        return provider_cls.bootstrap_config(config)
    validate_config(config)
    return config


def commands(config: dict, *keys: str) -> list[str]:
    return [cmd for key in keys for cmd in config.get(key, [])]


def mlflow_start(config: dict) -> str:
    """The head's command that starts `mlflow server` (exactly one)."""
    starts = [c for c in commands(config, "head_setup_commands", "head_start_ray_commands")
              if "mlflow server" in c]
    assert len(starts) == 1, f"expected one `mlflow server` on the head, got {starts}"
    return starts[0]


def mlflow_server_args(config: dict) -> list[str]:
    """The argument list of the `mlflow server` started on the head."""
    return shlex.split(re.split(r"[&;']", mlflow_start(config).split("mlflow server", 1)[1])[0])


def option(args: list[str], name: str) -> str:
    assert name in args, f"`mlflow server` lacks {name}: {args}"
    return args[args.index(name) + 1]


def worker_types(config: dict) -> dict:
    return {name: t for name, t in config["available_node_types"].items()
            if name != config["head_node_type"]}


# ---- Ray's validation ---------------------------------------------------------------------


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_ray_accepts_the_file(path):
    validate_offline(load(path))


def test_local_file_becomes_one_node_type_over_the_listed_machines():
    config = load(LOCAL_FILE)
    prepared = validate_offline(config)
    (node_type,) = prepared["available_node_types"].values()  # head and workers share it
    assert node_type["max_workers"] == len(config["provider"]["worker_ips"])
    assert node_type["min_workers"] == len(config["provider"]["worker_ips"])


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
@pytest.mark.parametrize("breakage", [
    lambda c: c.update(not_a_ray_key=1),                   # unknown top-level key
    lambda c: c.update(upscaling_speed="fast"),            # wrong type
    lambda c: c.update(head_start_ray_commands="ray start --head"),  # str, not a list
    lambda c: c.update(rsync_filter=".gitignore"),         # str, not a list
], ids=["unknown-key", "wrong-type", "commands-not-list", "filter-not-list"])
def test_ray_rejects_a_broken_copy(path, breakage):
    config = load(path)
    breakage(config)
    with pytest.raises(jsonschema.ValidationError):
        validate_offline(config)


def test_ray_rejects_fractional_node_resources():
    config = load(AWS_FILE)
    next(iter(worker_types(config).values()))["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        validate_offline(config)


def test_ray_rejects_a_head_type_that_does_not_exist():
    config = load(AWS_FILE)
    config["head_node_type"] = "no-such-type"
    with pytest.raises((ValueError, KeyError)):
        validate_offline(config)


# ---- our invariants -----------------------------------------------------------------------


def test_aws_head_runs_no_trials():
    config = load(AWS_FILE)
    assert config["available_node_types"][config["head_node_type"]]["resources"]["CPU"] == 0
    head_start = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert head_start and all("--num-cpus=0" in c for c in head_start)


def test_local_head_runs_no_trials():
    config = load(LOCAL_FILE)
    head_start = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert head_start and all("--num-cpus=0" in c for c in head_start)
    assert not any("--num-gpus=0" in c for c in config["worker_start_ray_commands"])


def test_aws_workers_are_spot_gpus_that_scale_from_zero():
    config = load(AWS_FILE)
    prepared = validate_offline(config)
    workers = worker_types(config)
    assert workers
    for name, node_type in workers.items():
        assert node_type["resources"].get("GPU", 0) >= 1, name
        assert re.match(r"(g|p)\d", node_type["node_config"]["InstanceType"]), name
        assert node_type["min_workers"] == 0, name
        assert prepared["available_node_types"][name]["min_workers"] == 0, name
        assert node_type["max_workers"] >= 1, name
        market = node_type["node_config"]["InstanceMarketOptions"]
        assert market["MarketType"] == "spot", name
    assert config["max_workers"] >= max(t["max_workers"] for t in workers.values())


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_mlflow_server_on_the_head_only(path):
    config = load(path)
    args = mlflow_server_args(config)
    assert re.match(r"(sqlite:////?|postgresql(\+\w+)?://)", option(args, "--backend-store-uri"))
    assert option(args, "--port") == "5000"
    common = commands(config, "setup_commands", "worker_setup_commands",
                      "worker_start_ray_commands", "initialization_commands")
    assert not any("mlflow server" in c for c in common), "workers must not run MLflow"


def test_aws_mlflow_artifacts_go_to_s3_and_its_port_stays_private():
    config = load(AWS_FILE)
    args = mlflow_server_args(config)
    assert option(args, "--artifacts-destination").startswith("s3://")
    assert option(args, "--host") == "127.0.0.1"  # the driver runs on the head; nobody else
    for rule in config["provider"].get("security_group", {}).get("IpPermissions", []):
        ranges = rule.get("IpRanges", []) + rule.get("Ipv6Ranges", [])
        assert not any(r.get("CidrIp") == "0.0.0.0/0" or r.get("CidrIpv6") == "::/0"
                       for r in ranges), f"public ingress rule: {rule}"


def test_local_mlflow_listens_on_loopback():
    args = mlflow_server_args(load(LOCAL_FILE))
    assert option(args, "--host") == "127.0.0.1"
    assert option(args, "--artifacts-destination")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_mlflow_starts_after_ray_and_is_watched_by_the_same_code(path):
    config = load(path)
    starts = config["head_start_ray_commands"]
    ray_start = next(i for i, c in enumerate(starts) if "ray start --head" in c)
    assert starts.index(mlflow_start(config)) > ray_start  # the watcher needs the GCS running
    watcher = mlflow_start(config).split("--workers 1", 1)[1]
    assert watcher == mlflow_start(load(LOCAL_FILE)).split("--workers 1", 1)[1]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_install_steps_are_pinned(path):
    config = load(path)
    setup = commands(config, "initialization_commands", "setup_commands", "head_setup_commands",
                     "worker_setup_commands")
    for cmd in setup:
        for url in re.findall(r"https?://\S+(?=\s*\|\s*(?:ba)?sh)", cmd):
            assert re.search(r"/\d+\.\d+\.\d+/", url), f"unpinned installer: {cmd}"
        if re.search(r"\bpip install\b", cmd):
            words = shlex.split(cmd.split("pip install", 1)[1])
            packages = [w for w in words if not w.startswith(("-", "~", "/"))
                        and not w.endswith("python")]
            assert packages and all("==" in w for w in packages), f"unpinned: {cmd}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_token_authentication_stays_on(path):
    text = path.read_text()
    assert not re.search(r"RAY_AUTH_MODE\s*[=:]\s*['\"]?disabled", text, re.IGNORECASE)
    config = load(path)
    starts = [c for c in commands(config, "head_start_ray_commands", "worker_start_ray_commands")
              if "ray start" in c]
    assert len(starts) >= 2
    assert all("RAY_AUTH_MODE=token" in c for c in starts), "every ray start needs token mode"
    # The token reaches the nodes as a file copied from the laptop, never as text in the config.
    assert "~/.ray/auth_token" in config["file_mounts"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_start_commands_follow_the_launcher_contract(path):
    config = load(path)
    head = " ".join(config["head_start_ray_commands"])
    worker = " ".join(config["worker_start_ray_commands"])
    assert config["head_start_ray_commands"][0] == "ray stop"
    assert config["worker_start_ray_commands"][0] == "ray stop"
    assert "--head" in head and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "$RAY_HEAD_IP:6379" in worker


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_project_is_shipped_and_installed(path):
    config = load(path)
    assert config["file_mounts"]["~/ghn-sweep"] == "."
    assert ".gitignore" in config["rsync_filter"] and (REPO / ".gitignore").is_file()
    assert any("-e ~/ghn-sweep" in c and "ray[default" in c for c in config["setup_commands"])


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_secrets_in_the_file(path):
    text = path.read_text()
    for pattern in SECRET_PATTERNS:
        assert not re.search(pattern, text), f"{path.name} matches {pattern}"


def test_secret_patterns_catch_a_planted_key():
    planted = ("aws_access_key_id: AKIAABCDEFGHIJKLMNOP\n"
               "key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    assert re.search(SECRET_PATTERNS[0], planted)
    assert re.search(SECRET_PATTERNS[-1], planted)
    assert not re.search(SECRET_PATTERNS[-1], "pip install git+https://x@" + "0123abcd" * 5)


def string_leaves(node, key=""):
    """(key, value) for every string in a loaded YAML tree; list items report their list's key."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from string_leaves(v, str(k))
    elif isinstance(node, list):
        for v in node:
            yield from string_leaves(v, key)
    elif isinstance(node, str):
        yield key, node


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_placeholder_is_documented_in_the_header(path):
    lines = path.read_text().splitlines()
    header = "\n".join(line for line in lines[:next(i for i, line in enumerate(lines)
                                                     if line and not line.startswith("#"))])
    found = [(k, v) for k, v in string_leaves(load(path)) if "CHANGE-ME" in v]
    assert found, "placeholders are expected; a filled-in copy belongs outside the repo"
    for key, value in found:
        tokens = re.findall(r"[\w.-]*CHANGE-ME[\w.-]*", value)
        assert key in header or all(t in header for t in tokens), f"{key}: {value} undocumented"
