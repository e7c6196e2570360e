"""A local sweep listens on this machine's loopback only: Ray's processes, and MLflow (a SQLite
file, no server). A Ray imported too early keeps token authentication on and says so."""

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# The driver's start, as sweeps/noise_vs_lr.py and sweeps._run.run do it, then every listening
# socket of the driver and of the processes it started (GCS, raylet, agents, workers).
SCRIPT = """
import json, logging, os, sys
from sweeps._config import parse_args
cfg = parse_args(["--storage", sys.argv[2], "--tracking-uri", sys.argv[3]])
if sys.argv[1] == "script-order":
    from sweeps._loopback import listen_on_loopback
    listen_on_loopback()
else:
    import ray  # imported before the switch: too late for it
logging.basicConfig()
from sweeps._run import start_ray
from sweeps.tracking import MlflowTrackingCallback
tracking = MlflowTrackingCallback(tracking_uri=cfg.tracking_uri, experiment="e", sweep="s")
tracking.setup()
tracking.flush()  # the store and the parent run exist, as in a sweep
start_ray(cfg)
import psutil  # after ray: Ray ships it
import ray

ray.get(ray.remote(lambda: 1).remote())  # a worker process is up too
me = psutil.Process()
listening = [[p.name(), c.laddr.ip, c.laddr.port] for p in [me, *me.children(recursive=True)]
             for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
print("AUTH", os.environ.get("RAY_AUTH_MODE"))
print("LISTEN", json.dumps(listening))
"""


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or bool(mapped and mapped.is_loopback)


def _start(tmp_path, order, new_mlflow_store):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONPATH=str(REPO), HOME=str(tmp_path))  # a token goes to $HOME/.ray
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, order, str(tmp_path / "ray"),
         new_mlflow_store(tmp_path / "mlflow.db")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines()
                 if line.startswith(("AUTH ", "LISTEN ")))
    return lines["AUTH"], json.loads(lines["LISTEN"]), proc.stderr


@pytest.mark.slow
def test_local_sweep_listens_on_loopback_only(tmp_path, new_mlflow_store):
    auth, listening, _ = _start(tmp_path, "script-order", new_mlflow_store)
    names = {name for name, _, _ in listening}
    assert {"gcs_server", "raylet"} <= names, listening  # the check sees Ray's servers
    assert all(_loopback(ip) for _, ip, _ in listening), listening
    assert auth == "disabled"  # nothing off this machine can reach it


@pytest.mark.slow
def test_ray_imported_too_early_keeps_token_auth_on(tmp_path, new_mlflow_store):
    auth, listening, stderr = _start(tmp_path, "ray-first", new_mlflow_store)
    if all(_loopback(ip) for _, ip, _ in listening):
        pytest.skip("this machine has no network address besides loopback")
    assert auth == "token"
    assert "in-process Ray will listen on" in stderr
    assert (tmp_path / ".ray" / "auth_token").is_file()  # Ray made a token and requires it


def test_local_sweep_starts_its_own_ray_never_one_found_on_the_machine(monkeypatch, tmp_path):
    """ray.init() without an address joins the cluster a `ray start` recorded in /tmp/ray (an
    unrelated one, on a shared machine); a local sweep asks for a new one."""
    import ray

    from sweeps._config import parse_args
    from sweeps._run import start_ray

    calls = []
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "127.0.0.1")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    start_ray(parse_args(["--storage", str(tmp_path)]))
    assert calls[0]["address"] == "local"
