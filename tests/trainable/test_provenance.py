"""Every run says which code, packages and machine produced it."""

import subprocess

import pytest
import torch
import torchvision

from contract import TAGS_KEY
from trainable import TrialConfig, _provenance, provenance, train


def test_names_the_commit_versions_and_device():
    tags = provenance(torch.device("cpu"))
    head = subprocess.run(["git", "-C", str(_provenance.REPO), "rev-parse", "HEAD"],
                          capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert tags["code.commit"].removesuffix("+dirty") == head.stdout.strip()
    assert tags["mlflow.source.git.commit"] == head.stdout.strip()  # shown by MLflow's UI
    assert tags["version.torch"] == torch.__version__
    assert tags["version.torchvision"] == torchvision.__version__
    for name in ("ray", "optuna", "mlflow"):
        assert tags[f"version.{name}"][0].isdigit(), name
    assert tags["device.name"].startswith("cpu: ") and tags["device.cuda"] == "none"


def test_outside_a_git_checkout_the_sources_hash_names_the_code(tmp_path, monkeypatch):
    """On a cluster the tree arrives by rsync without .git."""
    for package in _provenance.PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(f"# {package}\n")
    monkeypatch.setattr(_provenance, "REPO", tmp_path)
    tags = provenance()
    assert tags["code.commit"].startswith("unknown") and "mlflow.source.git.commit" not in tags
    before = tags["code.sources"]
    (tmp_path / "ghn" / "__init__.py").write_text("# edited\n")
    assert provenance()["code.sources"] != before


@pytest.mark.slow
def test_a_trials_first_report_carries_its_provenance(tiny):
    seen = []
    train(TrialConfig.from_flat(tiny(**{"optim.epochs": 1})), report=seen.append)
    tags = seen[0][TAGS_KEY]
    assert tags["version.torch"] == torch.__version__ and tags["device"] == "cpu"
    assert {"code.commit", "code.sources", "device.name", "device.cuda"} <= set(tags)
