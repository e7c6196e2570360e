"""`python analysis/report.py` as users run it: sources, MLflow artifacts, odd and partial data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from analysis.report import main

REPO = Path(__file__).resolve().parents[2]
FILES = {"trials.parquet", "curves.parquet", "heatmaps.png", "noise_vs_beta.png",
         "learning_curves.png", "gains.png", "asha.png", "report.md"}


def test_experiment_and_sweep_name_log_artifacts_to_the_parent(store, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["--experiment", "ghn-sweep", "--sweep", "sweepA", "--tracking-uri", store["uri"],
               "--out", str(out)])
    assert rc == 0
    assert {p.name for p in out.iterdir()} == FILES
    printed = capsys.readouterr().out
    assert "sweep sweepA: 11 trials, finished" in printed and "beats random init by 4.1" in printed
    client = MlflowClient(store["uri"])
    logged = {a.path for a in client.list_artifacts(store["parent"], "analysis")}
    assert logged == {f"analysis/{name}" for name in FILES}
    assert not client.list_artifacts(store["other"])


def test_latest_sweep_is_chosen_and_the_others_named(store, tmp_path):
    out = tmp_path / "out"
    assert main(["--experiment", "ghn-sweep", "--tracking-uri", store["uri"], "--out", str(out),
                 "--no-log"]) == 0
    text = (out / "report.md").read_text()
    assert "# Sweep report: sweepB" in text and "Others (choose with --sweep" in text
    assert pq.read_table(out / "trials.parquet").column("trial_id").to_pylist() == ["x1"]


def test_snapshot_without_any_finished_trial(synthetic, tmp_path, new_mlflow_store):
    uri = new_mlflow_store(tmp_path / "mlflow.db")
    T = synthetic.TrialSpec
    parent = synthetic.write_mlflow(uri, tmp_path / "art", [
        T("a", "resnet50", "ghn", 0.01, [.3], [.3], beta=1e-4, end="running"),
        T("b", "resnet50", "ghn", 0.02, [], [], end="running"),  # started, nothing reported
    ], parent_status="RUNNING")
    out = tmp_path / "out"
    assert main(["--parent-run", parent, "--tracking-uri", uri, "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "**State: snapshot**" in text and "2 running" in text
    assert "No trial has run to its last epoch yet" in text and "b (running)" in text
    assert "no random-init trial has an accuracy yet" in text
    assert {p.name for p in out.iterdir()} == FILES


def test_empty_sweep_and_missing_metrics(synthetic, tmp_path, new_mlflow_store):
    uri = new_mlflow_store(tmp_path / "mlflow.db")
    empty = synthetic.write_mlflow(uri, tmp_path / "art", [], sweep="empty")
    assert main(["--parent-run", empty, "--tracking-uri", uri, "--out",
                 str(tmp_path / "e"), "--no-log"]) == 0
    assert "Trials: 0 (none yet)" in (tmp_path / "e" / "report.md").read_text()
    # A run whose test/acc and params were never logged: gaps, not a crash or a made-up number.
    parent = synthetic.write_mlflow(uri, tmp_path / "art", [], sweep="odd")
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ghn-sweep").experiment_id
    run = client.create_run(exp, tags={"mlflow.parentRunId": parent, "ray.trial_id": "z"})
    client.log_metric(run.info.run_id, "val/acc", 0.4, step=1)
    client.set_terminated(run.info.run_id)
    assert main(["--parent-run", parent, "--tracking-uri", uri, "--out", str(tmp_path / "o"),
                 "--no-log"]) == 0
    row = pq.read_table(tmp_path / "o" / "trials.parquet").to_pylist()[0]
    assert (row["best_val_acc"], row["test_acc_at_best"], row["lr"]) == (0.4, None, None)
    assert "have no `lr` in their params" in (tmp_path / "o" / "report.md").read_text()


def test_bad_input_is_a_clear_error(store, tmp_path, capsys):
    missing = f"sqlite:///{tmp_path / 'nope.db'}"
    assert main(["--experiment", "ghn-sweep", "--tracking-uri", missing]) == 2
    assert "no MLflow store at" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()
    assert main(["--experiment", "nope", "--tracking-uri", store["uri"]]) == 2
    assert "no MLflow experiment 'nope'" in capsys.readouterr().err
    assert main(["--experiment", "ghn-sweep", "--sweep", "nope", "--tracking-uri",
                 store["uri"]]) == 2
    assert "has no sweep named 'nope'" in capsys.readouterr().err
    assert main(["--parent-run", "0" * 32, "--tracking-uri", store["uri"]]) == 2
    assert main(["--results", str(tmp_path / "none")]) == 2


def test_runs_as_a_script(store, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "analysis" / "report.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--parent-run" in proc.stdout
