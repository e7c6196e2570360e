"""Checkpoint retention that costs Tune no extra snapshots of its experiment state.

Tune's own retention, ``CheckpointConfig(num_to_keep=k)``, deletes a trial's oldest checkpoint as
each new one arrives, and so that its saved state never names a deleted checkpoint as the one to
resume from, it snapshots the whole experiment (every trial's state, about 40 KB a trial, the
searcher, the callbacks) as soon as any trial has made k checkpoints since the last snapshot.
With k = 2 and trials that checkpoint every few seconds, that is about one snapshot per trial,
each as large as the sweep: the driver's cost per trial grew with the number of trials (a
100-trial sweep of 1-second trials took 105 snapshots of ~30 ms; at 1,000 trials each would be
~10 times larger).

Here Tune keeps every checkpoint, so it forces no snapshot and saves its state every 10 s or so
(at most ~5% of its time, its own rule), and `CheckpointRetention` deletes a trial's superseded
checkpoints once `LAG` snapshots have named a newer one as the trial's newest. Tune saves the
callbacks' states (`get_state`, called here) after the trials' states within each snapshot, so
when `get_state` runs the snapshot being written already names each trial's newest checkpoint.
A ``--resume`` after ``kill -9`` finds every checkpoint its saved state resumes from; each trial
keeps its newest checkpoint, plus those superseded since the last `LAG` snapshots.

A trial that has ended keeps its newest checkpoint (its fine-tuned weights), except in the
repeats phase: a repeat measures a chosen configuration on one more seed, and keeping 17 seeds'
weights of 8 configurations would fill a disk (213 MB a convnext_tiny checkpoint with SGD's
momentum). There a finished repeat's last checkpoint goes too, `LAG` snapshots after the one that
records it finished; a repeat that errored keeps it, since ``--resume`` retries it from there.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import tune

log = logging.getLogger(__name__)

# Snapshots that must name a newer checkpoint before an older one goes: two, so that the one
# before the newest, which a driver killed while writing the newest would be read from, is
# covered too.
LAG = 2


class CheckpointRetention(tune.Callback):
    """Deletes each trial's superseded checkpoints, `LAG` snapshots after they were superseded.

    Its cost per hook is the same whatever the sweep's size: a snapshot handles only the trials
    that checkpointed or ended since the previous one.
    """

    def __init__(self, keep_ended: bool = True) -> None:
        self.keep_ended = keep_ended  # does a finished trial keep its newest checkpoint
        # trial id -> its checkpoints not yet superseded at a snapshot, oldest first (after a
        # snapshot: its newest alone); an ended trial leaves once its newest is known for good.
        self.kept: dict[str, list[tune.Checkpoint]] = {}
        # Per snapshot, oldest first: the checkpoints it found superseded, not yet deleted.
        self.superseded: list[list[tune.Checkpoint]] = []
        self._touched: set[str] = set()  # trials that checkpointed or ended since the snapshot
        self._ended: set[str] = set()
        self._finished: set[str] = set()  # ended without an error

    def on_checkpoint(self, iteration: int, trials: list, trial: Any,
                      checkpoint: tune.Checkpoint, **info: Any) -> None:
        self.kept.setdefault(trial.trial_id, []).append(checkpoint)
        self._touched.add(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished.add(trial.trial_id)
        self.on_trial_error(iteration, trials, trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended.add(trial.trial_id)
        self._touched.add(trial.trial_id)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Tune ends an experiment (finished or interrupted) by saving a snapshot, then calls
        this. When no trial has changed since the last snapshot, that snapshot is what a
        ``--resume`` reads, and it names no superseded checkpoint: those still waiting for `LAG`
        more snapshots go now, or a sweep's last seconds would keep all of theirs."""
        if self._touched:  # ended by an error, with changes no snapshot recorded
            return
        for checkpoints in self.superseded:
            delete(checkpoints)
        self.superseded.clear()

    def get_state(self) -> dict[str, Any]:
        """Called by Tune while it writes a snapshot, after the trials' part."""
        now = []
        for trial_id in self._touched:
            made = self.kept.pop(trial_id, [])
            all_go = trial_id in self._finished and not self.keep_ended
            now += made if all_go else made[:-1]
            if made and trial_id not in self._ended:
                self.kept[trial_id] = made[-1:]
        self._touched.clear()
        self._ended.clear()
        self._finished.clear()
        self.superseded.append(now)
        while len(self.superseded) > LAG:
            delete(self.superseded.pop(0))
        return {"kept": self.kept, "superseded": self.superseded}

    def set_state(self, state: dict[str, Any]) -> None:
        self.kept, self.superseded = state["kept"], state["superseded"]


def delete(checkpoints: list[tune.Checkpoint]) -> None:
    """Delete ``checkpoints``; one already gone (a killed driver deleted it after the snapshot
    that a resumed one restored) is no error."""
    for checkpoint in checkpoints:
        try:
            checkpoint.filesystem.delete_dir(checkpoint.path)
        except (FileNotFoundError, OSError) as e:
            log.debug("checkpoint %s not deleted: %s", checkpoint.path, e)
