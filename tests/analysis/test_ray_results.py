"""`--results DIR`: the same report from Ray Tune's results directory, without MLflow."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from analysis import ReportError, read_ray_results, trials_table
from analysis._ray_results import trial_id_of
from analysis.report import main

COLUMNS = ("trial_id", "arch", "method", "lr", "beta", "orth", "status", "epochs_run",
           "best_val_acc", "best_epoch", "test_acc_at_best", "final_val_acc", "train_time_s")


def test_same_numbers_as_from_mlflow(synthetic, report, tmp_path, capsys):
    sweep_dir = synthetic.write_ray_results(tmp_path, synthetic.specs())
    out = tmp_path / "out"
    assert main(["--results", str(sweep_dir), "--out", str(out)]) == 0
    assert "sweep sweepA: 11 trials, finished" in capsys.readouterr().out
    ray_rows = {r["trial_id"]: {c: r[c] for c in COLUMNS}
                for r in pq.read_table(out / "trials.parquet").to_pylist()}
    mlflow_rows = {r["trial_id"]: {c: r[c] for c in COLUMNS}
                   for r in pq.read_table(report.out / "trials.parquet").to_pylist()}
    failed = ray_rows.pop("sweep_trial_p4_6_arch=resnet50")  # no report: id from the dir name
    assert failed["status"] == "failed" and failed["lr"] == 0.05
    mlflow_rows.pop("p4")
    assert ray_rows == mlflow_rows
    text = (out / "report.md").read_text()
    assert "beats random init by 4.1 points" in text and "Source: Ray results" in text
    assert pq.read_table(out / "curves.parquet").num_rows == 34


def test_trial_id_from_ray_directory_name():
    name = "sweep_trial_a1b2c_00006_6_arch=resnet50,init=ghn_2026-11-28_15-00-00"
    assert trial_id_of(name) == "a1b2c_00006"
    name = "sweep_trial_30334f19_10_arch=mobilenet_v2,data_n_shots=10_2026-11-28_15-19-56"
    assert trial_id_of(name) == "30334f19"
    assert trial_id_of("something_else") == "something_else"


def test_snapshot_while_the_sweep_runs(synthetic, tmp_path):
    sweep_dir = synthetic.write_ray_results(tmp_path, synthetic.specs(), ended=False)
    with open(next(sweep_dir.glob("*_r1_*")) / "result.json", "a") as f:
        f.write('{"epoch": 5, "val/ac')  # a line being written right now
    sweep = read_ray_results(sweep_dir)
    assert sweep.in_progress
    status = dict(zip(*trials_table(sweep).select(["trial_id", "status"]).to_pydict().values()))
    assert status["r2"] == "running" and status["r1"] == "finished"
    assert status["sweep_trial_p4_6_arch=resnet50"] == "failed"
    assert any("not JSON" in note for note in sweep.notes)


def test_storage_root_with_several_sweeps_is_refused(synthetic, tmp_path):
    synthetic.write_ray_results(tmp_path, synthetic.specs()[:1])
    with pytest.raises(ReportError, match="pass one of them"):
        read_ray_results(tmp_path)
    params = next((tmp_path / "sweepA").glob("*/params.json"))  # a trial's, not the table's
    params.write_text("{")  # garbled: a gap, not a crash
    sweep = read_ray_results(tmp_path / "sweepA")
    assert json.loads(trials_table(sweep).column("config_json")[0].as_py())["arch"] == "resnet50"
