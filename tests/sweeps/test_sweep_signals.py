"""SIGTERM to a sweep's driver stops it as Ctrl-C does, and ``--resume`` finishes it."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from contract import SWEEP_TAG, TRIAL_ID_TAG

SCRIPT = Path(__file__).resolve().parents[2] / "sweeps" / "noise_vs_lr.py"


def tiny_sweep_argv(tmp_path: Path, reference_dir: Path, data_dir: Path, *extra: str,
                    tracking_uri: str | None = None) -> list[str]:
    """A sweep of 3 trials of 2 epochs on 10 images a class, without repeats."""
    return [sys.executable, str(SCRIPT), "--dataset", str(data_dir),
            "--ghn", str(reference_dir / "ghn2_random_imagenet_seed0.pt"),
            "--storage", str(tmp_path / "ray_results"),
            "--tracking-uri", tracking_uri or f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--n-shots", "10", "--repeats", "0", "--num-samples", "3", "--max-epochs", "2",
            "--grace-period", "2", "--max-concurrent", "1", *extra]


def sweep_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "GHN_SWEEP_CACHE": str(tmp_path / "cache"), "RAY_AUTH_MODE": "disabled"}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigterm_stops_like_ctrl_c_and_resume_finishes(tmp_path, reference_dir, cifar_jpeg_dir):
    argv = tiny_sweep_argv(tmp_path, reference_dir, cifar_jpeg_dir)
    proc = subprocess.Popen(argv, cwd=tmp_path, env=sweep_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    seen = []
    for line in proc.stdout:  # SIGTERM once a trial has reported an epoch
        seen.append(line)
        if "| best val/acc" in line or time.time() > deadline:
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=180)
    output = "".join(seen) + rest
    assert proc.returncode == 143, output[-3000:]
    assert "SIGTERM received" not in output and "Aborted" not in output
    (line,) = [ln for ln in output.splitlines() if "Continue it: " in ln]
    python, *command = shlex.split(line.split("Continue it: ", 1)[1])
    assert command == [*argv[1:], "--resume"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ghn-sweep")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert runs and not [r for r in runs if r.info.status == "RUNNING"]
    (parent,) = [r for r in runs if SWEEP_TAG in r.data.tags]
    assert parent.info.status == "KILLED" and "ghn_sweep.interrupted" in parent.data.tags

    resumed = subprocess.run([sys.executable, *command], cwd=tmp_path, env=sweep_env(tmp_path),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = client.search_runs([exp.experiment_id], max_results=100)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len({c.data.tags[TRIAL_ID_TAG] for c in children}) == len(children) == 3
    assert all(r.info.status != "RUNNING" for r in runs)
