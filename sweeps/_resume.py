"""What ``--resume`` adds to ``Tuner.restore``, so that a resumed sweep runs as if never cut off.

Ray Tune 2.60 restores the trials, the searcher and the callbacks' states from its last saved
experiment state, but not the scheduler (``TuneController.__getstate__`` drops it): a restored
ASHA would start with empty rungs and let through trials an uninterrupted one stops.
`SchedulerState` is a callback whose state is ASHA's rungs, so Tune saves them with the same
snapshot as the trials and puts them back before the trials are requeued.

A killed driver also leaves storage ahead of that snapshot: Tune's checkpoint retention may
already have deleted a checkpoint the snapshot still lists, and deleting it again on the trial's
next checkpoint raises inside Tune (`heal_checkpoints`). And the flags of ``--resume`` may
differ from the sweep's: `config_changes` sorts the differences into those that would change
what the sweep measures and the harmless ones (`HARMLESS`).
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow.fs
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler
from ray.tune.search import ConcurrencyLimiter

from ._config import SweepConfig
from ._identity import ID_FILE, config_record, read_sweep_record

_logger = logging.getLogger(__name__)

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
}
_NOT_COMPARED = ("resume",)


def config_changes(stored: dict[str, Any], cfg: SweepConfig) -> tuple[list[tuple], list[tuple]]:
    """(changes that alter the search or the trials, harmless changes), each as
    ``(field, stored value, new value)``, between the sweep's stored configuration and ``cfg``."""
    now = config_record(cfg)
    harmful, harmless = [], []
    for field in sorted(now):
        old, new = stored.get(field), now[field]
        if field in _NOT_COMPARED or old == new:
            continue
        device_change = field == "gpus_per_trial" and ((old or 0) > 0) != (new > 0)
        (harmless if field in HARMLESS and not device_change else harmful).append(
            (field, old, new))
    return harmful, harmless


def resumed_record(cfg: SweepConfig) -> dict[str, Any]:
    """The stored record of the sweep ``--resume`` continues, once its configuration is compared
    with ``cfg``: Tune restores the searcher and the trials as they were, so a change that
    alters the search or the trials raises ValueError naming the fields (the sweep exits 2);
    harmless ones are printed."""
    try:
        record = read_sweep_record(cfg)
    except FileNotFoundError:
        raise ValueError(f"--resume: {cfg.sweep_path} has no {ID_FILE} (the sweep's id, which "
                         "finds its MLflow parent run); it was started by an older version: "
                         "finish it with that version, or start a new sweep with --name "
                         "NEW_NAME") from None
    if "config" not in record:
        print(f"resume: {ID_FILE} holds no configuration (an older version started the sweep): "
              "the flags are not compared with the sweep's")
        return record
    harmful, harmless = config_changes(record["config"], cfg)
    if harmful:
        changes = "; ".join(f"--{f.replace('_', '-')} {old!r} -> {new!r}"
                            for f, old, new in harmful)
        raise ValueError(f"--resume: the sweep {cfg.sweep_name!r} ran with other values "
                         f"({changes}), which change what it searches or how its trials run. "
                         "Resume it with the values it ran with, or start a new sweep with "
                         "--name NEW_NAME")
    for field, old, new in harmless:
        print(f"resume: --{field.replace('_', '-')} {old!r} -> {new!r} accepted: "
              f"{HARMLESS[field]}")
    return record


def apply_harmless(tuner: tune.Tuner, cfg: SweepConfig) -> None:
    """Give a restored Tuner the harmless settings of ``cfg`` that its pickle fixed.

    A restored Tuner runs the searcher and callbacks pickled at the sweep's first start; Tune
    offers no way to change them, so this reaches into its private ``_local_tuner``.
    """
    internal = getattr(tuner, "_local_tuner", None)
    if internal is None:
        raise RuntimeError("ray.tune.Tuner has no _local_tuner (a Ray other than 2.60?): cannot "
                           "apply --tracking-uri or --max-concurrent to the restored sweep")
    search = internal._tune_config.search_alg
    if hasattr(search, "set_max_concurrency"):
        search.set_max_concurrency(cfg.max_concurrent)
    for callback in internal.get_run_config().callbacks or []:
        if hasattr(callback, "tracking_uri"):
            callback.tracking_uri = cfg.tracking_uri


class Limiter(ConcurrencyLimiter):
    """A ConcurrencyLimiter whose limit a restore leaves as `apply_harmless` set it (Tune puts
    back the saved searcher state, the first start's limit included)."""

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state({**state, "max_concurrent": self.max_concurrent})


class SchedulerState(tune.Callback):
    """Keeps ASHA's rungs in Tune's experiment state, so ``Tuner.restore`` brings them back.

    Tune pickles the callbacks and the scheduler of a Tuner together, so after a restore
    ``scheduler`` is again the scheduler Tune runs. ``restored``: the rung entries put back.
    (ASHA's rungs are private attributes of Ray's scheduler: Tune offers no other way in.)
    """

    def __init__(self, scheduler: AsyncHyperBandScheduler) -> None:
        self.scheduler = scheduler
        self.restored = 0

    def get_state(self) -> dict[str, Any]:
        rungs = [[[milestone, dict(recorded)] for milestone, recorded in bracket._rungs]
                 for bracket in self.scheduler._brackets]
        return {"asha_rungs": rungs, "asha_stopped": self.scheduler._num_stopped}

    def set_state(self, state: dict[str, Any]) -> None:
        saved = state["asha_rungs"]
        brackets = self.scheduler._brackets
        milestones = [[m for m, _ in b._rungs] for b in brackets]
        if [[m for m, _ in bracket] for bracket in saved] != milestones:
            raise ValueError(f"the sweep's saved ASHA rungs are at epochs {saved}, this ASHA's "
                             f"at {milestones}: its grace period, epochs or reduction factor "
                             "changed")
        for bracket, rungs in zip(brackets, saved):
            for (_, recorded), (_, entries) in zip(bracket._rungs, rungs):
                recorded.update(entries)
                self.restored += len(entries)
        self.scheduler._num_stopped = state["asha_stopped"]
        # The sweep's own view, as the progress line: says what the resumed ASHA knows.
        print(f"resume: ASHA's rungs restored ({self.restored} entries)", flush=True)


def heal_checkpoints(tuner: tune.Tuner) -> int:
    """Put an empty placeholder where a checkpoint that Tune's saved state lists is gone.

    Tune keeps each trial's newest two checkpoints and deletes the older one when a new one
    arrives; a driver killed between that deletion and its next state save leaves a state that
    lists a deleted checkpoint. The restored trial's next checkpoint makes Tune delete it again,
    which raises ``FileNotFoundError`` inside Tune (logged with a traceback). The placeholder
    lets Tune delete it quietly. A trial's newest checkpoint, the one it resumes from, is never
    replaced: if that one is gone, Tune's error should be seen. Returns the placeholders made.
    """
    made = 0
    for result in tuner.get_results():
        newest = result.checkpoint.path if result.checkpoint else None
        for checkpoint, _ in result.best_checkpoints or []:
            fs = checkpoint.filesystem
            gone = fs.get_file_info(checkpoint.path).type == pyarrow.fs.FileType.NotFound
            if checkpoint.path != newest and gone:
                fs.create_dir(checkpoint.path)
                made += 1
    if made:
        _logger.info("%d deleted checkpoints that Tune's saved state still lists: placeholders "
                     "made, for Tune's retention to delete", made)
    return made
