"""A phase of the sweep as a Ray Tune ``Tuner``: a new one, or with ``--resume`` the restored one.

The search runs TPE under ASHA; the repeats run a fixed list of configs, every trial to its last
epoch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from pyarrow import fs
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler

from contract import METRIC, MODE
from trainable import local_storage_filesystem

from . import _internals
from ._config import SweepConfig
from ._progress import short_config
from ._resume import SchedulerState, apply_harmless, heal_checkpoints
from ._retention import CheckpointRetention
from ._searchers import repeats_algorithm, search_algorithm
from ._trial import sweep_trial

log = logging.getLogger(__name__)


def quiet_tune() -> None:
    """Tune's settings for a sweep, as environment variables, before Ray starts."""
    # Checkpointing every epoch (--checkpoint-every 1) is deliberate; don't warn about it.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # MLflow is the sweep's record: no third copy of the metrics as TensorBoard events (with
    # tensorboardX installed they cost the driver ~70 ms per trial, between trials).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


def trial_dirname(trial: Trial) -> str:
    """``sweep_trial_<id>_<n>_resnet18_ghn_lr=0.0015_orth=True``: the trial's sampled values.

    Tune's default name lists every config key alphabetically, the sweep's constants
    (checkpoint_every, data_dataset, ...) first, and cuts it at 130 characters, before them.
    """
    number = trial.experiment_tag.split("_", 1)[0]  # Tune's tag: "<n>_<key=value,...>"
    return "_".join([trial.trainable_name, trial.trial_id, number,
                     *short_config(trial.config).split()])


class ReportsKeptOnRetry(tune.Callback):
    """Puts a retried trial's ``result.json`` in storage before the trial restarts.

    The driver appends each report to the file in its staging directory and copies it to
    storage with Tune's snapshots, every 10 s or so. A trial that restarts from a checkpoint
    first gets the file back from storage, over the driver's: without this, the reports that
    arrived since the last snapshot were lost (a trial whose node died 5 s after its epoch-2
    checkpoint resumed at epoch 3, and its result.json had no epoch 2). ``progress.csv`` stays
    open across a retry and loses nothing.
    """

    def on_trial_recover(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        local = Path(trial.local_path, "result.json")
        if not local.is_file():
            return
        storage, trial_dir = _internals.trial_storage(trial)
        try:
            storage.create_dir(trial_dir, recursive=True)
            fs.copy_files(str(local), f"{trial_dir}/result.json", destination_filesystem=storage)
        except OSError as e:  # the storage is unreachable: the retry goes on, as Tune's would
            log.warning("could not save the result.json of trial %s before its retry (%s); it "
                        "may lose the reports since Tune's last snapshot", trial.trial_id, e)


def build_tuner(cfg: SweepConfig, callbacks: list, trial_fn: Callable = sweep_trial,
                repeats: list[dict] | None = None) -> tune.Tuner:
    """A new Tuner, or with `cfg.resume` the interrupted one; `trial_fn(config, sweep)`.

    ``repeats``: instead of the search, run exactly these configs (the repeats phase: every
    trial to its last epoch, no scheduler). A restored Tuner runs the callbacks it saved with
    the sweep, not `callbacks`.
    """
    trainable = tune.with_resources(
        tune.with_parameters(trial_fn, sweep=cfg),
        {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial})
    path = cfg.sweep_path if repeats is None else cfg.repeats_path
    if cfg.resume and tune.Tuner.can_restore(path):
        return _restore(cfg, path, trainable)
    # Tune's per-trial result.json and progress.csv, which the ResultGrid reads, whatever
    # TUNE_DISABLE_AUTO_CALLBACK_LOGGERS says (`quiet_tune` sets it), all reports kept.
    callbacks = [*callbacks, CSVLoggerCallback(), JsonLoggerCallback(), ReportsKeptOnRetry(),
                 CheckpointRetention(keep_ended=repeats is None)]
    common = {"metric": METRIC, "mode": MODE, "trial_dirname_creator": trial_dirname,
              # A new trial reuses a finished one's process: no second torch import, and the
              # node's caches are warm.
              "reuse_actors": True}
    if repeats is not None:
        tune_config = tune.TuneConfig(search_alg=repeats_algorithm(cfg, repeats),
                                      num_samples=len(repeats), **common)
    else:
        scheduler = ASHAScheduler(time_attr="epoch", max_t=cfg.max_epochs,
                                  grace_period=cfg.grace_period,
                                  reduction_factor=cfg.reduction_factor)
        callbacks.append(SchedulerState(scheduler))  # its rungs, saved with Tune's state
        tune_config = tune.TuneConfig(scheduler=scheduler, search_alg=search_algorithm(cfg),
                                      num_samples=cfg.num_samples, **common)
    return tune.Tuner(trainable, tune_config=tune_config,
                      run_config=_run_config(cfg, path, callbacks))


def _storage(cfg: SweepConfig) -> dict:
    """``storage_path`` and, for a path on this machine, the filesystem on which a trial's
    checkpoint goes into storage as a hard link (see trainable/_storage.py), not a copy."""
    if cfg.results_dir is None:
        return {"storage_path": cfg.storage_path}
    return {"storage_path": str(cfg.results_dir.parent),
            "storage_filesystem": local_storage_filesystem()}


def _run_config(cfg: SweepConfig, path: str, callbacks: list) -> tune.RunConfig:
    return tune.RunConfig(
        name=path.rsplit("/", 1)[1], **_storage(cfg), callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
        # Tune keeps every checkpoint, and forces no snapshot of its state for retention:
        # `CheckpointRetention` deletes the superseded ones once its snapshots no longer need them.
        checkpoint_config=tune.CheckpointConfig(), verbose=0)


def _restore(cfg: SweepConfig, path: str, trainable: Callable) -> tune.Tuner:
    """The interrupted Tuner at ``path``, with ``--resume``'s harmless settings."""
    storage = _storage(cfg)
    tuner = tune.Tuner.restore(f"{storage['storage_path'].rstrip('/')}/{path.rsplit('/', 1)[1]}",
                               trainable=trainable, resume_unfinished=True, resume_errored=True,
                               storage_filesystem=storage.get("storage_filesystem"))
    apply_harmless(tuner, cfg)
    if not any(isinstance(c, CheckpointRetention) for c in _internals.restored_callbacks(tuner)):
        heal_checkpoints(tuner)  # a sweep started with Tune's retention (num_to_keep=2)
    return tuner
