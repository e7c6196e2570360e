"""End-to-end sweeps on CPU with the shared CIFAR subset, run as a user runs them: the smoke
sweep, whose GHN is a GHN-3 (the drills of faults run GHN-2s), and its report read from MLflow and
from Ray."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from analysis._ray_results import trial_id_of
from analysis.report import main as report_main
from contract import GHN_CONFIG_TAG, GHN_KIND_TAG, SWEEP_TAG, TRIAL_ID_TAG

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "sweeps" / "noise_vs_lr.py"
COLUMNS = ["trial_id", "status", "epochs_run", "best_val_acc", "test_acc_at_best", "lr", "beta",
           "method"]


def _argv(tmp_path, reference_dir, cifar_jpeg_dir, *extra, storage=None):
    return [sys.executable, str(SCRIPT), "--dataset", str(cifar_jpeg_dir),
            "--ghn", str(reference_dir / "ghn2_random_imagenet_seed0.pt"),
            "--storage", storage or str(tmp_path / "ray_results"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--n-shots", "10",
            "--repeats", "0", *extra]


def _env():
    return {**os.environ, "RAY_AUTH_MODE": "disabled"}  # the session's cache


def _runs(tmp_path, experiment="ghn-sweep"):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if SWEEP_TAG in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, exp, parents, children


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory, ghn3_reference_dir, cifar_jpeg_dir):
    """One real smoke sweep, run as a user runs it (CPU, the shared CIFAR subset at 10 shots, a
    random reference GHN-3 of 10 classes, a new MLflow store): 8 search trials of 3 epochs under
    ASHA, then 2 repeat seeds. The tests that share it only read it (or write apart from what
    others read). Fields: ``path`` (the sweep's working directory: ``ray_results/``,
    ``mlflow.db``), ``uri`` (its MLflow store), ``argv`` and ``proc`` (the finished command)."""
    path = tmp_path_factory.mktemp("smoke-sweep")
    uri = f"sqlite:///{path / 'mlflow.db'}"
    argv = [sys.executable, str(SCRIPT), "--dataset", str(cifar_jpeg_dir),
            "--ghn", str(ghn3_reference_dir / "ghn3_h80c10_random_seed0.pt"),
            "--storage", str(path / "ray_results"), "--tracking-uri", uri, "--n-shots", "10",
            "--num-samples", "8", "--max-epochs", "3", "--repeats", "2"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # the session's cache
    proc = subprocess.run(argv, cwd=path, env=env, capture_output=True, text=True, timeout=900)
    return SimpleNamespace(path=path, uri=uri, argv=argv, proc=proc)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_smoke_sweep_end_to_end(smoke_sweep):
    proc, tmp_path = smoke_sweep.proc, smoke_sweep.path  # 8 trials x 3 epochs, then repeats
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best val/acc" in proc.stdout and "mlflow ui --backend-store-uri" in proc.stdout
    assert "analysis.report --experiment ghn-sweep --sweep noise_vs_lr-smoke" in proc.stdout
    client, exp, parents, children = _runs(tmp_path)
    children = [c for c in children if "ghn_sweep.repeat_of" not in c.data.tags]  # the search
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.params["sweep.num_samples"] == "8"
    assert len(children) == 8
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    page = f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs/{parents[0].info.run_id}"
    assert f"The sweep's parent run: {page}" in proc.stdout
    assert all(c.info.status in ("FINISHED", "KILLED") for c in children)
    stopped = [c for c in children if c.info.status == "KILLED"]
    assert stopped and all("ghn_sweep.stopped_early" in c.data.tags for c in stopped)
    for child in children:
        assert child.data.params["data.n_shots"] == "10" and "optim.lr" in child.data.params
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val/acc")]
        assert steps == list(range(1, len(steps) + 1))
        assert "init/mean_abs_cos" in child.data.metrics
    inits = {c.data.tags["init"] for c in children}
    assert inits == {"random", "ghn"}  # the baselines ran
    # The GHN-3's kind and shape on the parent; its predictions initialised the GHN trials.
    assert parents[0].data.tags[GHN_KIND_TAG] == "ghn3"
    assert "layers=" in parents[0].data.tags[GHN_CONFIG_TAG]
    for child in children:
        if child.data.tags["init"] == "ghn":
            assert child.data.tags[GHN_KIND_TAG] == "ghn3"
            assert child.data.tags["ghn.checkpoint"].startswith("ghn3_h80c10_random_seed0-")
    table = pq.read_table(tmp_path / "ray_results" / "noise_vs_lr-smoke" / "results.parquet")
    assert table.num_rows == 8
    artifacts = [a.path for a in client.list_artifacts(parents[0].info.run_id)]
    assert "results.parquet" in artifacts and "best_config.json" in artifacts
    sweep_dir = tmp_path / "ray_results" / "noise_vs_lr-smoke"
    assert (sweep_dir / "optuna.db").exists()
    trial_dirs = [d for d in sweep_dir.iterdir() if (d / "params.json").exists()]
    assert len(trial_dirs) == 8
    staging = sweep_dir / ".staging"  # the trials wrote their checkpoints there, and left none
    assert staging.is_dir() and not any(staging.iterdir())
    # Named by their sampled values, and by the ids their MLflow runs carry.
    assert {trial_id_of(d.name) for d in trial_dirs} == {c.data.tags[TRIAL_ID_TAG]
                                                         for c in children}
    assert all("_resnet18_" in d.name and "_lr=" in d.name for d in trial_dirs)
    for d in trial_dirs:  # Tune's own results stay; no TensorBoard copy of what MLflow holds
        assert (d / "result.json").stat().st_size and (d / "progress.csv").stat().st_size
        assert not list(d.glob("events.out.tfevents*"))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_report_on_a_smoke_sweep(tmp_path, smoke_sweep):
    uri, proc, where = smoke_sweep.uri, smoke_sweep.proc, smoke_sweep.path
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
    assert "The GHN is a GHN-3 (hid=80" in text
    assert report_main(["--results", str(where / "ray_results" / "noise_vs_lr-smoke"),
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


@pytest.mark.slow
def test_two_gpu_nodes_pack_half_gpu_trials(tmp_path, reference_dir, cifar_jpeg_dir):
    import torch
    from ray.cluster_utils import Cluster

    if not torch.cuda.is_available():  # a trial given a GPU trains on CUDA or fails
        pytest.skip("needs CUDA: two simulated nodes share this machine's GPU")

    env = _env()
    os.environ.update({k: env[k] for k in ("GHN_SWEEP_CACHE", "RAY_AUTH_MODE")})
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1})
    cluster.add_node(num_cpus=1, num_gpus=1)
    try:
        proc = subprocess.run(
            _argv(tmp_path, reference_dir, cifar_jpeg_dir, "--num-samples", "4",
                  "--max-epochs", "2", "--grace-period", "2", "--address", cluster.address,
                  "--gpus-per-trial", "0.5",
                  "--cpus-per-trial", "0.5", "--max-concurrent", "4",
                  storage=(tmp_path / "ray_results").as_uri()),  # a path all nodes mount
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    finally:
        cluster.shutdown()
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, _, _, children = _runs(tmp_path)
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert len({c.data.tags["ray.node_id"] for c in children}) == 2  # both nodes ran trials
    assert {c.data.tags["device"] for c in children} == {torch.cuda.get_device_name(0)}
