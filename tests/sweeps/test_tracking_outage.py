"""A tracking server restarted mid-sweep costs the sweep's MLflow record nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
from mlflow.tracking import MlflowClient

from analysis import read_mlflow
from contract import SWEEP_TAG, TRIAL_ID_TAG

sys.path.insert(0, str(Path(__file__).parent))
from test_sweep_signals import sweep_env, tiny_sweep_argv  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(tmp_path: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{tmp_path / 'server.db'}", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # as cluster.yaml starts it: without MLflow's job runner
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                return server
        except requests.RequestException:
            time.sleep(0.5)
    _stop_server(server)
    raise RuntimeError("mlflow server did not start")


def _stop_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_server_restart_mid_sweep_loses_nothing(tmp_path, reference_dir, cifar_jpeg_dir,
                                                new_mlflow_store):
    new_mlflow_store(tmp_path / "server.db")  # the server's store, its schema made already
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    servers = [_start_server(tmp_path, port)]
    argv = tiny_sweep_argv(tmp_path, reference_dir, cifar_jpeg_dir, "--num-samples", "4",
                           tracking_uri=uri)
    sweep = subprocess.Popen(argv, cwd=tmp_path, env=sweep_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)  # its own group: its Ray ends with it
    lines = []

    def wait_for(text: str) -> None:
        for line in sweep.stdout:
            lines.append(line)
            if text in line:
                return
        pytest.fail(f"the sweep ended before printing {text!r}:\n{''.join(lines)[-3000:]}")

    try:
        wait_for("| best val/acc")  # the server goes away once a trial has reported
        _stop_server(servers[0])
        wait_for("| MLflow tracking behind: ")  # and comes back once the progress line says so
        servers.append(_start_server(tmp_path, port))
        rest, _ = sweep.communicate(timeout=300)
        output = "".join(lines) + rest
        assert sweep.returncode == 0, output[-3000:]
        assert "is unavailable" in output and "is back after" in output
        _assert_complete_record(uri, tmp_path / "ray_results" / "noise_vs_lr-smoke")
    finally:
        if sweep.poll() is None:  # the test failed while the sweep ran
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.wait()
        for server in servers:
            if server.poll() is None:
                _stop_server(server)


def _assert_complete_record(uri: str, sweep_dir: Path) -> None:
    """The record a sweep without an outage leaves: a run per trial of Ray's results, each with
    every epoch Ray recorded once, closed as Ray ended it."""
    table = pq.read_table(sweep_dir / "results.parquet").to_pylist()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ghn-sweep")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    (parent,) = [r for r in runs if SWEEP_TAG in r.data.tags]
    assert parent.info.status == "FINISHED"
    children = {r.data.tags[TRIAL_ID_TAG]: r for r in runs if TRIAL_ID_TAG in r.data.tags}
    assert sorted(children) == sorted(row["trial_id"] for row in table) and len(table) == 4
    for row in table:
        run = children[row["trial_id"]]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")]
        assert steps == list(range(1, row["epochs"] + 1))
        assert run.info.status == ("FINISHED" if row["epochs"] == 2 else "KILLED")
    # The report reads the same record through the server, its histories fetched concurrently.
    report = {t.trial_id: t for t in read_mlflow(tracking_uri=uri, experiment="ghn-sweep").trials}
    assert {tid: sorted(t.history["val/acc"]) for tid, t in report.items()} == {
        row["trial_id"]: list(range(1, row["epochs"] + 1)) for row in table}
