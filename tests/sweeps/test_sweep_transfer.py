"""The transfer preset end to end at seconds-scale sizes: the first sweep trains its GHN on Ray
and caches it, the second reuses the cached file, and the parent run says the GHN saw none of
the sweep's classes and how far each architecture is from those it trained on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from contract import (
    GHN_ARCH_FAMILY_SEEN_PREFIX,
    GHN_ARCH_TOP1_PREFIX,
    GHN_CLASS_OVERLAP_TAG,
    GHN_TRAIN_CLASSES_TAG,
    SWEEP_TAG,
)

SCRIPT = Path(__file__).resolve().parents[2] / "sweeps" / "noise_vs_lr.py"
TINY = ["--preset", "transfer", "--ghn-train-steps", "3", "--ghn-train-hid", "8",
        "--archs", "resnet18,convnext_tiny", "--n-shots", "5", "--num-samples", "2",
        "--max-epochs", "1", "--grace-period", "1", "--checkpoint-every", "1", "--repeats", "0",
        "--ghn-distance-per-class", "4"]


def _sweep(tmp_path: Path, data: Path, name: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(SCRIPT), *TINY, "--dataset", str(data), "--name", name,
            "--storage", str(tmp_path / "ray_results"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    env = {**os.environ, "GHN_SWEEP_CACHE": str(tmp_path / "cache"),
           "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _parent_tags(tmp_path: Path, name: str) -> dict[str, str]:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ghn-sweep").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get(SWEEP_TAG) == name]
    return parent.data.tags


@pytest.mark.slow
def test_a_transfer_sweep_trains_its_ghn_once_and_the_next_reuses_it(tmp_path, cifar_jpeg_dir,
                                                                      new_mlflow_store):
    new_mlflow_store(tmp_path / "mlflow.db")
    first = _sweep(tmp_path, cifar_jpeg_dir, "first")
    assert "training the GHN first" in first.stdout
    assert "python -m ghn train" in first.stdout
    (cached,) = (tmp_path / "cache" / "ghns").glob("*.pt")
    mtime = cached.stat().st_mtime_ns

    second = _sweep(tmp_path, cifar_jpeg_dir, "second")
    assert "reusing the GHN trained with" in second.stdout
    assert "training the GHN first" not in second.stdout
    assert cached.stat().st_mtime_ns == mtime

    for name in ("first", "second"):
        tags = _parent_tags(tmp_path, name)
        assert tags[GHN_CLASS_OVERLAP_TAG] == "0"
        assert tags[GHN_TRAIN_CLASSES_TAG] == "airplane,automobile,bird,cat,deer"
        assert tags[GHN_ARCH_FAMILY_SEEN_PREFIX + "resnet18"] == "true"
        assert tags[GHN_ARCH_FAMILY_SEEN_PREFIX + "convnext_tiny"] == "false"
        for arch in ("resnet18", "convnext_tiny"):
            assert 0.0 <= float(tags[GHN_ARCH_TOP1_PREFIX + arch]) <= 1.0
