"""Where a number came from: the code, the package versions and the device, as run tags.

The sweep's driver tags its parent run with ``provenance()`` and every trial sends
``provenance(device)`` with its first report, so each MLflow run says which code, which
packages and which hardware produced it. On a cluster the project arrives by rsync without
``.git``, so the commit is then unknown and the hash of the sources says which code ran.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ghn", "postproc", "trainable", "sweeps", "analysis")  # the project's own code
VERSIONS = ("ray", "optuna", "mlflow")  # and torch, torchvision: their own, with the CUDA build
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # MLflow's own tag: its UI shows it


def provenance(device: torch.device | None = None) -> dict[str, str]:
    """Tags naming the code (``code.*``), package versions (``version.*``) and ``device.*``:
    ``device`` for a trial, None for the machine itself (a sweep's driver, which uses no GPU)."""
    tags = {"code.version": _version("ghn-sweep"), "code.sources": sources_hash()}
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


def sources_hash() -> str:
    """Hash of the project's ``.py`` sources, whatever git knows of them."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            digest.update(path.relative_to(REPO).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


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
