"""The head's MLflow command from cluster-local.yaml, run for real: it listens on 127.0.0.1
only, starts no job runner, and it stops when Ray's GCS on the head stops (`ray stop`, which
`ray down` runs there).

A stand-in plays the GCS: a process named like it, with its port argument. The command itself is
the file's, with the ports moved off 5000 and 6379 so that nothing else on the machine matters.
"""

import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session(leader: int, psutil) -> list:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == leader:
                out.append(p)
        except (ProcessLookupError, PermissionError):
            pass
    return out


def _listening(procs, psutil) -> list[tuple[str, int]]:
    found = []
    for p in procs:
        try:
            found += [(c.laddr.ip, c.laddr.port) for c in p.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            pass
    return found


@pytest.mark.skipif(shutil.which("mlflow") is None or shutil.which("pgrep") is None,
                    reason="needs the mlflow CLI and pgrep")
@pytest.mark.slow
def test_head_mlflow_listens_on_loopback_and_stops_with_ray(tmp_path):
    import ray  # noqa: F401 - Ray ships psutil (in its thirdparty_files)

    psutil = pytest.importorskip("psutil")

    config = yaml.safe_load((REPO / "cluster-local.yaml").read_text())
    (start,) = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    port, gcs_port = _free_port(), _free_port()
    start = start.replace("--port 5000", f"--port {port}").replace("6379", str(gcs_port))
    env = {**os.environ, "HOME": str(tmp_path),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for cmd in config["head_setup_commands"]:
        subprocess.run(cmd, shell=True, executable="/bin/bash", env=env, check=True)
    gcs = subprocess.Popen(["bash", "-c", f'exec -a gcs_server "{sys.executable}" -c '
                            f'"import time; time.sleep(600)" --gcs_server_port={gcs_port}'])
    leader = None
    try:
        subprocess.run(start, shell=True, executable="/bin/bash", env=env, check=True)
        pid_file = tmp_path / "mlflow" / "server.pid"
        deadline = time.time() + 120
        while time.time() < deadline and not (pid_file.is_file() and pid_file.read_text()):
            time.sleep(0.2)
        leader = int(pid_file.read_text())
        while time.time() < deadline and port not in [p for _, p in
                                                      _listening(_session(leader, psutil),
                                                                 psutil)]:
            time.sleep(0.5)
        session = _session(leader, psutil)
        listening = _listening(session, psutil)
        assert port in [p for _, p in listening], (tmp_path / "mlflow" / "server.log").read_text()
        assert all(ipaddress.ip_address(ip).is_loopback for ip, _ in listening), listening
        commands = []
        for p in session:
            try:
                commands.append(" ".join(p.cmdline()))
            except psutil.Error:  # ended since
                pass
        assert not [c for c in commands if "mlflow.server.jobs" in c], commands  # no job runner

        gcs.terminate()  # what `ray stop` does to the head's GCS
        gcs.wait(timeout=10)
        deadline = time.time() + 30
        while time.time() < deadline and _session(leader, psutil):
            time.sleep(0.5)
        assert not _session(leader, psutil), "MLflow outlived Ray on the head"
        assert "stopping MLflow" in (tmp_path / "mlflow" / "server.log").read_text()
    finally:
        gcs.kill()
        if leader is not None:
            for p in _session(leader, psutil):
                p.kill()
