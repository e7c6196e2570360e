"""Shared test fixtures: where the read-only reference data lives (../shared by default)."""

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from sweeps._imports import collector_paused

# Ray started in-process by the tests (CI runs them with RAY_AUTH_MODE=disabled) listens on
# 127.0.0.1 only, as a local sweep's does (sweeps/_loopback.py); set before any test imports Ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GHN_SWEEP_SHARED", REPO.parent / "shared"))
REFERENCE_DIR = Path(os.environ.get("GHN2_REFERENCE_DIR", SHARED / "ghn2" / "reference"))
GHN3_REFERENCE_DIR = Path(os.environ.get("GHN3_REFERENCE_DIR", SHARED / "ghn3" / "reference"))
CIFAR_JPEG_DIR = Path(os.environ.get("CIFAR10_JPEG_DIR", SHARED / "data" / "cifar10-jpeg"))


@pytest.hookimpl(wrapper=True)
def pytest_collection(session):
    """Collection imports torch, torchvision, Ray and MLflow: with the collector paused, as the
    sweep's driver and trials import them."""
    with collector_paused():
        return (yield)


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory) -> Path:
    """The cache (decoded datasets, GHN predictions, trained GHNs) of this session's tests and of
    the drivers they start, never the user's ``~/.cache``: each test process decodes the data and
    predicts a GHN's parameters once. A test of the cache itself sets a directory of its own."""
    path = tmp_path_factory.mktemp("ghn-sweep-cache")
    old = os.environ.get("GHN_SWEEP_CACHE")
    os.environ["GHN_SWEEP_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("GHN_SWEEP_CACHE", None)
    else:
        os.environ["GHN_SWEEP_CACHE"] = old


def _present(path: Path, what: str, variable: str) -> Path:
    if not path.is_dir():
        pytest.skip(f"{what} not found at {path} (set {variable})")
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return _present(REFERENCE_DIR, "GHN-2 reference data", "GHN2_REFERENCE_DIR")


@pytest.fixture(scope="session")
def ghn3_reference_dir() -> Path:
    return _present(GHN3_REFERENCE_DIR, "GHN-3 reference data", "GHN3_REFERENCE_DIR")


@pytest.fixture(scope="session")
def cifar_jpeg_dir() -> Path:
    return _present(CIFAR_JPEG_DIR, "CIFAR-10 ImageFolder tree", "CIFAR10_JPEG_DIR")


@pytest.fixture(scope="session")
def new_mlflow_store(tmp_path_factory) -> Callable[[Path], str]:
    """``new_mlflow_store(path)``: the URI of an empty MLflow SQLite store at ``path``.

    MLflow makes a new store by running its schema migrations, 1-2 s of CPU and many synced
    writes (5-8 s on 2 busy cores); they run once a session, and each store is a copy of that
    one, with the Default experiment's artifacts in ``mlruns/`` beside it, where MLflow puts
    them for a store it makes in that directory.
    """
    from mlflow.tracking import MlflowClient

    template = tmp_path_factory.mktemp("mlflow-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{template}").search_experiments()

    def make(path: Path) -> str:
        shutil.copyfile(template, path)
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                       (str(path.parent / "mlruns" / "0"),))
        return f"sqlite:///{path}"

    return make


def pytest_generate_tests(metafunc):
    """Tests taking `case_file` run once per ppuda reference case found at run time."""
    if "case_file" in metafunc.fixturenames:
        files = sorted(REFERENCE_DIR.glob("case*.json")) if REFERENCE_DIR.is_dir() else []
        metafunc.parametrize("case_file", files or [None], ids=[f.stem for f in files] or ["none"])
    if "ghn3_case_file" in metafunc.fixturenames:  # GHN-3's reference cases, likewise
        d = GHN3_REFERENCE_DIR
        files = sorted(d.glob("case*.json")) if d.is_dir() else []
        metafunc.parametrize("ghn3_case_file", files or [None],
                             ids=[f.stem for f in files] or ["none"], scope="module")


def pytest_configure(config):
    """Under pytest-xdist, each worker's torch (and the drivers and Ray workers its tests start)
    gets its share of the cores: two workers with two threads each on 2 cores spin-wait on each
    other in OpenMP, and the fast tier takes 81 s instead of 58."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        share = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(share)
        os.environ.setdefault("OMP_NUM_THREADS", str(share))


def pytest_collection_modifyitems(config, items):
    """Files with slow tests first, each file's tests kept in order. pytest-xdist hands whole
    files to its workers in this order (`--no-loadscope-reorder` in pyproject.toml; by default it
    hands out the files with the most tests first, which leaves the one-test drills, a minute
    each, to the end, one worker running the last alone); the many short files then even out
    the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
