"""A smoke sweep whose GHN is a GHN-3: trials are initialised with its predictions, tagged with
its kind, and the report says which GHN it was."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from analysis.report import main as report
from contract import GHN_CONFIG_TAG, GHN_KIND_TAG, SWEEP_TAG

SCRIPT = Path(__file__).resolve().parents[2] / "sweeps" / "noise_vs_lr.py"


@pytest.mark.slow
def test_smoke_sweep_with_a_ghn3_runs_to_its_report(tmp_path, ghn3_reference_dir,
                                                     cifar_jpeg_dir, new_mlflow_store):
    ghn = ghn3_reference_dir / "ghn3_h80c10_random_seed0.pt"  # 10 classes, as CIFAR-10
    argv = [sys.executable, str(SCRIPT), "--dataset", str(cifar_jpeg_dir), "--ghn", str(ghn),
            "--storage", str(tmp_path / "ray_results"),
            "--tracking-uri", new_mlflow_store(tmp_path / "mlflow.db"), "--n-shots", "10",
            "--repeats", "0", "--num-samples", "2", "--max-epochs", "1"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # the session's cache
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ghn-sweep").experiment_id])
    parents = [r for r in runs if SWEEP_TAG in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    (parent,) = parents
    assert parent.data.tags[GHN_KIND_TAG] == "ghn3"
    assert "layers=" in parent.data.tags[GHN_CONFIG_TAG]
    ghn_trials = [c for c in children if c.data.tags.get("init") == "ghn"]
    assert ghn_trials, [c.data.tags.get("init") for c in children]
    for trial in ghn_trials:  # initialised by the GHN-3's predictions
        assert trial.data.tags[GHN_KIND_TAG] == "ghn3"
        assert trial.data.tags["ghn.checkpoint"].startswith("ghn3_h80c10_random_seed0-")
        assert "init/mean_abs_cos" in trial.data.metrics
    assert report(["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                   "--experiment", "ghn-sweep", "--sweep", "noise_vs_lr-smoke",
                   "--out", str(tmp_path / "m")]) == 0
    text = (tmp_path / "m" / "report.md").read_text()
    assert "The GHN is a GHN-3 (hid=80" in text
