"""A synthetic MLflow store (built once per module) and the report made from it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from analysis import build_report, read_mlflow
from contract import (
    GHN_CLASS_OVERLAP_TAG,
    GHN_TRAIN_CLASSES_TAG,
    SWEEP_CLASSES_TAG,
    SWEEP_NUM_CLASSES_TAG,
)


def _load_synthetic() -> ModuleType:
    # Loaded by path: the suite runs with --import-mode=importlib, so sibling modules are not on
    # sys.path (and a tests/analysis package would shadow the real `analysis`).
    path = Path(__file__).with_name("synthetic_sweep.py")
    spec = importlib.util.spec_from_file_location("ghn_sweep_tests_synthetic", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


SYNTHETIC = _load_synthetic()
# sweepA's parent run: 5 classes, 3 of which the GHN was trained on (as sweeps._classes tags it)
CLASS_TAGS = {SWEEP_CLASSES_TAG: "bird,cat,frog,ship,truck", SWEEP_NUM_CLASSES_TAG: "5",
              GHN_TRAIN_CLASSES_TAG: "airplane,automobile,bird,cat,deer,dog,frog,horse,x,y",
              GHN_CLASS_OVERLAP_TAG: "3"}


@pytest.fixture(scope="session")
def synthetic() -> ModuleType:
    """tests/analysis/synthetic_sweep.py: TrialSpec, specs(), write_mlflow, write_ray_results."""
    return SYNTHETIC


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_mlflow_store) -> dict:
    """sweepA (the test sweep) and, started later, sweepB with one too-good-to-be-true trial."""
    root = tmp_path_factory.mktemp("store")
    uri = new_mlflow_store(root / "mlflow.db")
    parent = SYNTHETIC.write_mlflow(uri, root / "artifacts", SYNTHETIC.specs(),
                                    parent_tags=CLASS_TAGS)
    other = SYNTHETIC.write_mlflow(uri, root / "artifacts", [
        SYNTHETIC.TrialSpec("x1", "resnet50", "ghn", 0.01, [.99] * 4, [.99] * 4)],
        sweep="sweepB")
    return {"uri": uri, "parent": parent, "other": other, "root": root}


@pytest.fixture(scope="module")
def repeated(tmp_path_factory, new_mlflow_store):
    """The report of sweepA with repeats of resnet50's chosen configurations (seeds 1-3)."""
    root = tmp_path_factory.mktemp("repeated")
    uri = new_mlflow_store(root / "mlflow.db")
    parent = SYNTHETIC.write_mlflow(uri, root / "artifacts",
                                    SYNTHETIC.specs() + SYNTHETIC.repeat_specs())
    return build_report(read_mlflow(tracking_uri=uri, parent_run_id=parent), root / "report")


@pytest.fixture(scope="module")
def report(store):
    """The report of sweepA, read by parent run id."""
    sweep = read_mlflow(tracking_uri=store["uri"], parent_run_id=store["parent"])
    return build_report(sweep, Path(store["root"]) / "report")
