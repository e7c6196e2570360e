"""What ``--resume`` adds to ``Tuner.restore``, so that a resumed sweep runs as if never cut off.

Ray Tune 2.60 restores the trials, the searcher and the callbacks' states from its last saved
experiment state, but not the scheduler (``TuneController.__getstate__`` drops it): a restored
ASHA would start with empty rungs and let through trials an uninterrupted one stops.
`SchedulerState` is a callback whose state is ASHA's rungs, so Tune saves them with the same
snapshot as the trials and puts them back before the trials are requeued.

A killed driver also leaves storage ahead of that snapshot: Tune's checkpoint retention may
already have deleted a checkpoint the snapshot still lists, and deleting it again on the trial's
next checkpoint raises inside Tune (`heal_checkpoints`). The flags of ``--resume`` that may change
(`sweeps._preflight.HARMLESS`) reach the restored Tuner through `apply_harmless`.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow.fs
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler

from . import _internals
from ._config import SweepConfig

log = logging.getLogger(__name__)


def apply_harmless(tuner: tune.Tuner, cfg: SweepConfig) -> None:
    """Give a restored Tuner the harmless settings of ``cfg`` that its pickle fixed: the
    concurrency limit and the tracking store's address."""
    search = _internals.restored_searcher(tuner)
    if hasattr(search, "set_max_concurrency"):
        search.set_max_concurrency(cfg.max_concurrent)
    for callback in _internals.restored_callbacks(tuner):
        if hasattr(callback, "tracking_uri"):
            callback.tracking_uri = cfg.tracking_uri


class SchedulerState(tune.Callback):
    """Keeps ASHA's rungs in Tune's experiment state, so ``Tuner.restore`` brings them back.

    Tune pickles the callbacks and the scheduler of a Tuner together, so after a restore
    ``scheduler`` is again the scheduler Tune runs. ``restored``: the rung entries put back.
    """

    def __init__(self, scheduler: AsyncHyperBandScheduler) -> None:
        self.scheduler = scheduler
        self.restored = 0

    def get_state(self) -> dict[str, Any]:
        return _internals.asha_state(self.scheduler)

    def set_state(self, state: dict[str, Any]) -> None:
        saved = [[m for m, _ in bracket] for bracket in state["asha_rungs"]]
        milestones = _internals.asha_milestones(self.scheduler)
        if saved != milestones:
            raise ValueError(f"the sweep's saved ASHA rungs are at epochs {saved}, this ASHA's "
                             f"at {milestones}: its grace period, epochs or reduction factor "
                             "changed")
        self.restored += _internals.restore_asha(self.scheduler, state)
        # The sweep's own view, as the progress line: says what the resumed ASHA knows.
        log.info("resume: ASHA's rungs restored (%d entries)", self.restored)


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
        log.debug("%d deleted checkpoints that Tune's saved state still lists: placeholders "
                  "made, for Tune's retention to delete", made)
    return made
