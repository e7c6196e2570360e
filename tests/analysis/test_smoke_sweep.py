"""The report on a real smoke sweep (CPU, shared CIFAR subset), read from MLflow and from Ray."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from analysis.report import main

REPO = Path(__file__).resolve().parents[2]
COLUMNS = ["trial_id", "status", "epochs_run", "best_val_acc", "test_acc_at_best", "lr", "beta",
           "method"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_report_on_a_smoke_sweep(tmp_path, smoke_sweep):
    uri, proc, where = smoke_sweep.uri, smoke_sweep.proc, smoke_sweep.path  # tests/conftest.py
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The report command the sweep prints at its end, run as printed, where the sweep ran.
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("Report it: ")]
    python, *args = shlex.split(line.removeprefix("Report it: "))
    assert python == "python" and args[:2] == ["-m", "analysis.report"]
    report = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "m")], cwd=where,
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    # The repeats: S = 2 further seeds of each chosen configuration, as children of the parent.
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ghn-sweep")
    children = client.search_runs([exp.experiment_id],
                                  filter_string="tags.`mlflow.parentRunId` != ''")
    repeats = [c for c in children if "ghn_sweep.repeat_of" in c.data.tags]
    originals = {c.data.tags["ray.trial_id"]: c for c in children if c not in repeats}
    assert len(originals) == 8 and repeats
    by_original: dict[str, list[str]] = {}
    for c in repeats:
        by_original.setdefault(c.data.tags["ghn_sweep.repeat_of"], []).append(c.data.params["seed"])
    assert all(sorted(seeds) == ["1", "2"] for seeds in by_original.values())
    assert set(by_original) <= set(originals) and len(by_original) >= 3  # >= the 3 baselines
    for c in repeats:  # the same configuration as its original, another seed
        original = originals[c.data.tags["ghn_sweep.repeat_of"]].data.params
        assert {k: v for k, v in c.data.params.items() if k != "seed"} == {
            k: v for k, v in original.items() if k != "seed"}
        assert c.info.status == "FINISHED"
    n = 8 + len(repeats)
    assert f"sweep noise_vs_lr-smoke: {n} trials, finished" in report.stdout
    text = (tmp_path / "m" / "report.md").read_text()
    assert "± " in text and "95% interval" in text and "paired over 2 seeds" in text
    assert main(["--results", str(where / "ray_results" / "noise_vs_lr-smoke"),
                 "--out", str(tmp_path / "r")]) == 0
    from_mlflow, from_ray = (  # the search's trials: Ray's results dir holds only those
        pq.read_table(tmp_path / d / "trials.parquet").to_pandas().query("repeat_of.isna()")
        [COLUMNS].sort_values("trial_id").reset_index(drop=True) for d in ("m", "r"))
    pd.testing.assert_frame_equal(from_mlflow, from_ray)
    assert set(from_mlflow["method"]) >= {"random", "ghn"}  # the baselines ran
    client = MlflowClient(uri)
    parent = client.search_runs([client.get_experiment_by_name("ghn-sweep").experiment_id],
                                filter_string="tags.`ghn_sweep.sweep` = 'noise_vs_lr-smoke'")[0]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "analysis")}
    assert {"analysis/report.md", "analysis/trials.parquet", "analysis/heatmaps.png"} <= logged
