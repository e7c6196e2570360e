"""The function Tune runs in each worker process.

It lives apart from `_run` so that a worker imports only the trial's stack (torch, torchvision,
trainable): not MLflow, Optuna or pyarrow, which only the driver uses. That is ~1.5 s less on every
worker process start, on every node; and that stack is imported with the garbage collector
paused (`_imports.py`), ~0.7 s less again.
"""

from __future__ import annotations

import shutil
from typing import Any

from ._imports import collector_paused

with collector_paused():
    from trainable import run_trial

    from ._config import SweepConfig
    from ._space import trial_config

STAGING_DIR = ".staging"  # in the sweep's results directory: checkpoints being written


def sweep_trial(config: dict[str, Any], sweep: SweepConfig) -> None:
    """A sampled config becomes a full TrialConfig, then one trial. With local storage, its
    checkpoints are written in the sweep's ``.staging/``, on the storage's filesystem: linked
    into storage, not copied, whatever filesystem ``/tmp`` is on."""
    staging = str(sweep.results_dir / STAGING_DIR) if sweep.results_dir else None
    run_trial(trial_config(config, sweep).to_flat(), staging_dir=staging)


def clear_staging(sweep: SweepConfig) -> None:
    """Remove what the trials of a killed driver left half written in ``.staging/`` (no trial of
    the sweep runs while its driver starts)."""
    if sweep.results_dir:
        shutil.rmtree(sweep.results_dir / STAGING_DIR, ignore_errors=True)
