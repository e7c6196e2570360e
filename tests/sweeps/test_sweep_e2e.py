"""End-to-end sweeps on CPU with the shared CIFAR subset, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from analysis._ray_results import trial_id_of
from contract import SWEEP_TAG, TRIAL_ID_TAG

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "sweeps" / "noise_vs_lr.py"


def _argv(tmp_path, reference_dir, cifar_jpeg_dir, *extra, storage=None):
    return [sys.executable, str(SCRIPT), "--dataset", str(cifar_jpeg_dir),
            "--ghn", str(reference_dir / "ghn2_random_imagenet_seed0.pt"),
            "--storage", storage or str(tmp_path / "ray_results"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--n-shots", "10",
            "--repeats", "0", *extra]


def _env(tmp_path):
    return {**os.environ, "GHN_SWEEP_CACHE": str(tmp_path / "cache"), "RAY_AUTH_MODE": "disabled"}


def _runs(tmp_path, experiment="ghn-sweep"):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if SWEEP_TAG in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, exp, parents, children


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
    table = pq.read_table(tmp_path / "ray_results" / "noise_vs_lr-smoke" / "results.parquet")
    assert table.num_rows == 8
    artifacts = [a.path for a in client.list_artifacts(parents[0].info.run_id)]
    assert "results.parquet" in artifacts and "best_config.json" in artifacts
    sweep_dir = tmp_path / "ray_results" / "noise_vs_lr-smoke"
    assert (sweep_dir / "optuna.db").exists()
    trial_dirs = [d for d in sweep_dir.iterdir() if (d / "params.json").exists()]
    assert len(trial_dirs) == 8
    # Named by their sampled values, and by the ids their MLflow runs carry.
    assert {trial_id_of(d.name) for d in trial_dirs} == {c.data.tags[TRIAL_ID_TAG]
                                                         for c in children}
    assert all("_resnet18_" in d.name and "_lr=" in d.name for d in trial_dirs)
    for d in trial_dirs:  # Tune's own results stay; no TensorBoard copy of what MLflow holds
        assert (d / "result.json").stat().st_size and (d / "progress.csv").stat().st_size
        assert not list(d.glob("events.out.tfevents*"))


@pytest.mark.slow
def test_two_gpu_nodes_pack_half_gpu_trials(tmp_path, reference_dir, cifar_jpeg_dir):
    import torch
    from ray.cluster_utils import Cluster

    if not torch.cuda.is_available():  # a trial given a GPU trains on CUDA or fails
        pytest.skip("needs CUDA: two simulated nodes share this machine's GPU")

    env = _env(tmp_path)
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
