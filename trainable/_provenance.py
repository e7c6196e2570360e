"""Where a number came from: the code, the package versions and the device, as run tags.

The sweep's driver tags its parent run with ``provenance()`` and every trial sends
``provenance(device)`` with its first report, so each MLflow run says which code, which
packages and which hardware produced it. On a cluster the project arrives by rsync without
``.git``, so the commit is then unknown and the hash of the sources says which code ran.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from ._cache import source_hash

REPO = Path(__file__).resolve().parents[1]
# the project's own code
PACKAGES = ("contract", "ghn", "ghntrain", "postproc", "trainable", "sweeps", "analysis")
VERSIONS = ("ray", "optuna", "mlflow")  # and torch, torchvision: their own, with the CUDA build
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # MLflow's own tag: its UI shows it


def provenance(device: torch.device | None = None) -> dict[str, str]:
    """Tags naming the code (``code.*``), package versions (``version.*``) and ``device.*``:
    ``device`` for a trial, None for the machine itself (a sweep's driver, which uses no GPU)."""
    tags = {"code.version": _version("ghn-sweep"),
            "code.sources": source_hash(*(REPO / p for p in PACKAGES))}
    commit = _git_commit()
    tags["code.commit"] = commit or "unknown (not a git checkout)"
    if commit:
        tags[GIT_COMMIT_TAG] = commit.removesuffix("+dirty")
    import torchvision

    tags["version.torch"], tags["version.torchvision"] = torch.__version__, torchvision.__version__
    tags.update({f"version.{name}": _version(name) for name in VERSIONS})
    tags["version.python"] = platform.python_version()
    cuda = device is not None and device.type == "cuda"
    tags["device.name"] = torch.cuda.get_device_name(device) if cuda else _cpu_name()
    tags["device.cuda"] = torch.version.cuda or "none" if cuda else "none"
    return tags


def _git_commit() -> str | None:
    """HEAD of the checkout the code runs from, ``+dirty`` with uncommitted edits; None
    outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", *PACKAGES)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_name() -> str:
    """``cpu: <model name>`` from /proc/cpuinfo on Linux, else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "cpu: " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu: " + (platform.processor() or platform.machine() or "unknown")
