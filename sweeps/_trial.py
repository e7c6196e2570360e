"""The function Tune runs in each worker process.

It lives apart from `_run` so that a worker imports only the trial's stack (torch, torchvision,
trainable): not MLflow, Optuna or pyarrow, which only the driver uses. That is ~1.5 s less on every
worker process start, on every node; and that stack is imported with the garbage collector
paused (`_imports.py`), ~0.7 s less again.
"""

from __future__ import annotations

from typing import Any

from ._imports import collector_paused

with collector_paused():
    from trainable import run_trial

    from ._config import SweepConfig
    from ._space import trial_config


def sweep_trial(config: dict[str, Any], sweep: SweepConfig) -> None:
    """A sampled config becomes a full TrialConfig, then one trial."""
    run_trial(trial_config(config, sweep).to_flat())
