"""Everything a sweep can check before Ray starts, so that bad input fails before any trial.

In order: that the storage can be written and the tracking server is MLflow's (`sweeps._reach`),
the sweep's place in Ray's storage (a fresh sweep must not merge into another of its name;
``--resume`` needs one, started with the same flags, bar the harmless ones in `HARMLESS`), the GHN
checkpoint and the data (downloaded and decoded here, once: an empty class folder or a file that
does not decode is named), then the MLflow store (a fresh sweep's name must be free there; a
resumed sweep's store must hold its parent run). A fresh sweep's id and configuration are written
last. Every refusal is a `BadInput`, on which the command exits 2; none deletes anything."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from ghn import resolve_checkpoint
from trainable import prepare_data

from ._classes import class_tags
from ._config import SweepConfig
from ._identity import ID_FILE, config_record, new_sweep_id, read_sweep_record, write_sweep_id
from ._reach import storage_problem, tracking_problem
from ._space import baseline_configs, trial_config
from .tracking import MlflowTrackingCallback, tracking_for

log = logging.getLogger(__name__)

# Flags that may change on --resume, and why each does not change what the sweep measures. Any
# other field (search ranges, epochs, seed, data, ASHA's settings, retries, repeats, test
# evaluation, checkpointing, the MLflow experiment) shapes the trials or is fixed in Tune's saved
# state, so changing it exits 2.
HARMLESS = {
    "address": "where Ray runs, not what it runs",
    "storage": "the sweep was found there (the same place spelt another way)",
    "name": "the sweep was found by it (its default name, given explicitly, or the reverse)",
    "tracking_uri": "the same MLflow store reached at another address (its parent run of this "
                    "sweep must be there)",
    "max_concurrent": "how many trials run at once, not which",
    "cpus_per_trial": "the CPUs Ray reserves per trial",
    "gpus_per_trial": "the share of a GPU per trial, while trials keep training on a GPU (from 0 "
                      "or to 0 it changes the device, which is not harmless)",
    "preset": "a preset only fills the other fields, which are compared one by one",
    "progress_every": "how often the driver prints its progress line",
}
_NOT_COMPARED = ("resume",)


class BadInput(ValueError):
    """Input the sweep cannot run with; the message says what to do instead."""


@dataclass
class Cleared:
    """A sweep cleared to start: its id, and its search's tracking callback, connecting."""

    sweep_id: str
    tracking: MlflowTrackingCallback


def preflight(cfg: SweepConfig) -> Cleared:
    """Check the sweep ``cfg`` as the module says; raises `BadInput`."""
    for problem in (storage_problem(cfg.storage_path), tracking_problem(cfg.tracking_uri)):
        if problem:
            raise BadInput(problem)
    record = _check_storage(cfg)
    prepare_inputs(cfg)
    sweep_id = str(record["sweep_id"]) if record else new_sweep_id()
    tags = None if cfg.resume else class_tags(cfg)
    tracking = tracking_for(cfg, sweep_id, final=cfg.repeats == 0, parent_tags=tags)
    new_store = not _store_exists(cfg.tracking_uri)  # asked before connect() creates it
    tracking.connect()  # in the background, while the name is checked and Ray starts
    if not cfg.resume:  # a clash exits 2, with no run and no Ray experiment
        if not new_store:  # a new store holds no sweep: don't wait ~4 s for its creation
            _refuse_name_clash(cfg, tracking)
        write_sweep_id(cfg, sweep_id, tags)
    elif record.get("config", {}).get("tracking_uri", cfg.tracking_uri) != cfg.tracking_uri:
        _refuse_other_store(cfg, tracking, record["config"]["tracking_uri"])
    return Cleared(sweep_id, tracking)


def _check_storage(cfg: SweepConfig) -> dict[str, Any] | None:
    """A resumed sweep's stored record; None for a fresh sweep, whose name must be free."""
    exists = tune.Tuner.can_restore(cfg.sweep_path)
    if cfg.resume and not exists:
        raise BadInput(f"--resume: there is no sweep to resume at {cfg.sweep_path}")
    if cfg.resume:
        return resumed_record(cfg)
    # A second fresh run would merge into the first (Ray, Optuna, MLflow).
    if exists:
        _name_taken(f"a sweep named {cfg.sweep_name!r} already exists at {cfg.sweep_path}")
    if tune.Tuner.can_restore(cfg.repeats_path):
        _name_taken(f"the repeats of a sweep named {cfg.sweep_name!r} exist at "
                    f"{cfg.repeats_path}")
    return None


def _name_taken(what: str) -> typing.NoReturn:
    raise BadInput(f"--name: {what}; continue it with --resume, or start another with "
                   "--name NEW_NAME")


def prepare_inputs(cfg: SweepConfig) -> None:
    """The GHN checkpoint and the data, downloaded here, once, before any trial."""
    try:
        resolve_checkpoint(cfg.ghn)
    except FileNotFoundError as e:
        raise BadInput(f"--ghn: {e}") from None
    try:
        prepare_data(trial_config(baseline_configs(cfg)[0], cfg).data)
    except (OSError, RuntimeError, ValueError) as e:
        if str(e).startswith("data.classes: "):  # CIFAR-100's names, known once downloaded
            raise BadInput(f"--classes: {str(e).removeprefix('data.classes: ')}") from None
        raise BadInput(f"--dataset {cfg.dataset!r}: {e}") from None


def config_changes(stored: dict[str, Any], cfg: SweepConfig) -> tuple[list[tuple], list[tuple]]:
    """(changes that alter the search or the trials, harmless changes), each as
    ``(field, stored value, new value)``, between the sweep's stored configuration and ``cfg``."""
    now = config_record(cfg)
    harmful, harmless = [], []
    for field in sorted(now):
        old, new = stored.get(field), now[field]
        if field in _NOT_COMPARED or old == new or _added_since(field, stored, new):
            continue
        device_change = field == "gpus_per_trial" and ((old or 0) > 0) != (new > 0)
        (harmless if field in HARMLESS and not device_change else harmful).append(
            (field, old, new))
    return harmful, harmless


def _added_since(field: str, stored: dict[str, Any], new: Any) -> bool:
    """A field the sweep's version did not have, at its default: the sweep ran as it says."""
    default = next(f.default for f in dataclasses.fields(SweepConfig) if f.name == field)
    return field not in stored and new == json.loads(json.dumps(default))


def resumed_record(cfg: SweepConfig) -> dict[str, Any]:
    """The stored record of the sweep ``--resume`` continues, once its configuration is compared
    with ``cfg``: Tune restores the searcher and the trials as they were, so a change that
    alters the search or the trials raises `BadInput` naming the fields; harmless ones are
    logged."""
    try:
        record = read_sweep_record(cfg)
    except FileNotFoundError:
        raise BadInput(f"--resume: {cfg.sweep_path} has no {ID_FILE} (the sweep's id, which "
                       "finds its MLflow parent run); it was started by an older version: "
                       "finish it with that version, or start a new sweep with --name "
                       "NEW_NAME") from None
    if "config" not in record:
        log.info("resume: %s holds no configuration (an older version started the sweep): "
                 "the flags are not compared with the sweep's", ID_FILE)
        return record
    harmful, harmless = config_changes(record["config"], cfg)
    if harmful:
        changes = "; ".join(f"--{f.replace('_', '-')} {old!r} -> {new!r}"
                            for f, old, new in harmful)
        raise BadInput(f"--resume: the sweep {cfg.sweep_name!r} ran with other values "
                       f"({changes}), which change what it searches or how its trials run. "
                       "Resume it with the values it ran with, or start a new sweep with "
                       "--name NEW_NAME")
    for field, old, new in harmless:
        log.info("resume: --%s %r -> %r accepted: %s", field.replace("_", "-"), old, new,
                 HARMLESS[field])
    return record


def _refuse_name_clash(cfg: SweepConfig, tracking: MlflowTrackingCallback) -> None:
    """A fresh sweep must not share its parent run's name with another sweep's."""
    other = tracking.other_parent_run()
    if other is not None:
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(other.info.start_time / 1000))
        raise BadInput(f"--name: MLflow experiment {cfg.experiment!r} at {cfg.tracking_uri} "
                       f"already holds a sweep named {cfg.sweep_name!r} (parent run "
                       f"{other.info.run_id}, started {started}), whose Ray results are not at "
                       f"{cfg.sweep_path}. Start this sweep with --name NEW_NAME, or continue "
                       "that one with --resume and the --storage it used")


def _refuse_other_store(cfg: SweepConfig, tracking: MlflowTrackingCallback,
                        stored_uri: str) -> None:
    """A resumed sweep's new --tracking-uri must reach the store that holds its parent run."""
    if tracking.has_parent_run() is False:
        raise BadInput(f"--tracking-uri: the MLflow store at {cfg.tracking_uri} holds no parent "
                       f"run of this sweep (experiment {cfg.experiment!r}, sweep id "
                       f"{tracking.sweep_id}); it is tracked at {stored_uri}: resume it with that "
                       "--tracking-uri, or the same store's new address")


def _store_exists(uri: str) -> bool:
    """False only for a SQLite store whose file is not there yet."""
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).exists()
