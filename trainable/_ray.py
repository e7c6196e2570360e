"""The Ray Tune edge: the only module of trainable/ that imports ray.tune.

``run_trial`` is a function trainable: flat dotted config in, one ``tune.report`` per epoch out,
with a ``tune.Checkpoint`` on checkpoint epochs. A restored trial picks up ``tune.get_checkpoint()``
and continues at the next epoch. The checkpoint records the trial id and name, the key by which the
driver-side tracking callback finds the trial's MLflow run again. Checkpoints come back from shared
storage, so they are read with ``weights_only=True``: tensors, dicts and primitives, no code.
A trial that Ray gave a GPU trains on CUDA or fails saying why.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from ._config import TrialConfig
from ._loop import STATE_FILE, TAGS_KEY, fit
from ._storage import local_storage_filesystem

__all__ = ["run_trial"]


def run_trial(config: dict[str, Any], staging_dir: str | None = None) -> None:
    """Ray Tune function trainable; ``config`` is a (partial) ``TrialConfig.to_flat()`` dict.

    ``staging_dir``: where each checkpoint is written before Tune puts it into storage (default:
    the system's temporary directory). A directory on the storage's filesystem makes that a link
    wherever ``/tmp`` is (see `local_storage_filesystem`)."""
    cfg = TrialConfig.from_flat(config)
    if cfg.device == "auto" and ray.is_initialized() and ray.get_gpu_ids():
        # Ray gave this trial a GPU (gpus_per_trial > 0): it trains there or fails with the
        # reason, never on the CPU of a node whose CUDA is broken, 50-100x slower.
        cfg = dataclasses.replace(cfg, device="cuda")
    ctx = tune.get_context()
    identity = {"trial_id": ctx.get_trial_id(), "trial_name": ctx.get_trial_name()}
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            resume = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
    fit(cfg, report=functools.partial(_report, staging_dir=staging_dir), resume=resume,
        run_identity=identity, gpu_fraction=_gpu_share())


def _gpu_share() -> float:
    """The share of one GPU Ray gave this trial (``--gpus-per-trial 0.25``: 0.25); 1 for whole
    GPUs or none."""
    gpus = ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)
    return gpus if 0 < gpus < 1 else 1.0


def _report(metrics: dict[str, Any], state: dict[str, Any] | None,
            staging_dir: str | None = None) -> None:
    if TAGS_KEY in metrics:  # provenance of a fresh trial: where it ran
        node = ray.get_runtime_context().get_node_id()
        metrics[TAGS_KEY] = {**metrics[TAGS_KEY], "ray.node_id": node}
    if state is None:
        tune.report(metrics)
        return
    # Ray puts the directory into the run's storage before report returns: a hard link where the
    # storage is local_storage_filesystem (sweeps' local storage) on the same device, a copy
    # elsewhere.
    if staging_dir:
        os.makedirs(staging_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=staging_dir, prefix="checkpoint-") as d:
        torch.save(state, Path(d) / STATE_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint(d, filesystem=local_storage_filesystem()))

