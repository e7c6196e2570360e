"""A one-line progress view of a sweep, logged when it changes, and mirrored to MLflow."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from ray import tune

from contract import TrialStatus, best_of, classify, rank_key

from .tracking import MlflowTrackingCallback

log = logging.getLogger(__name__)

SHOWN = (("arch", "{}"), ("init", "{}"), ("optim.lr", "lr={:.3g}"),
         ("postproc.beta", "beta={:.2g}"), ("postproc.orth", "orth={}"),
         ("postproc.layer", "layer={}"), ("postproc.max_sz", "max_sz={}"))
# Trial states shown, in this order.
STATES = (TrialStatus.RUNNING, TrialStatus.FINISHED, TrialStatus.STOPPED_EARLY,
          TrialStatus.DIVERGED, TrialStatus.FAILED)


def describe(config: dict[str, Any]) -> str:
    """A trial's sampled config in a few words: ``resnet18 ghn lr=0.0015 orth=True``."""
    return " ".join(fmt.format(config[k]) for k, fmt in SHOWN if k in config)


@dataclass
class TrialState:
    """What the view knows of one trial: enough to rank it with `contract.rank_key`."""

    name: str
    config: dict[str, Any]
    status: TrialStatus = TrialStatus.RUNNING
    best_val: float | None = None
    saved_epoch: int = 0  # the epoch of its last checkpoint Tune holds: a retry's start


class ProgressCallback(tune.Callback):
    """Counts trials by state and tracks the best trial (`contract.rank_key`); logs one line per
    change.

    With `tracking`, the counts and the best value are logged as metrics of the sweep's parent
    run (step = number of ended trials), and the best trial's name and sampled config as its tags
    ``best.*``, so the MLflow UI shows the sweep's progress and its best configuration so far.
    ``phase="repeats"`` (the seeds after the search) counts under ``repeats_*`` and ranks
    nothing: the best configuration is the search's.
    """

    def __init__(self, metric: str, max_epochs: int,
                 tracking: MlflowTrackingCallback | None = None, phase: str = "search") -> None:
        self.metric, self.max_epochs, self.tracking = metric, max_epochs, tracking
        self.phase = phase
        self.trials: dict[str, TrialState] = {}
        self.best: tuple[float, dict, str] | None = None  # value, sampled config, trial name
        self._last_line = ""

    def get_state(self) -> dict[str, Any]:
        """The trials seen so far, saved by Tune with its experiment state: a resumed sweep's
        view (and the parent run's counters) covers the trials that ended before the restart."""
        return {"trials": {tid: dataclasses.asdict(s) for tid, s in self.trials.items()}}

    def set_state(self, state: dict[str, Any]) -> None:
        self.trials = {tid: TrialState(**{**s, "status": TrialStatus(s["status"])})
                       for tid, s in state["trials"].items()}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Tune marks the trial RUNNING only after this hook; shown running now, so the view
        # moves as soon as trials start, not at their first epoch.
        self._state(trial)
        self._show(trials, starting=trial.trial_id)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        state = self._state(trial)
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and (
                state.best_val is None or value > state.best_val):
            state.best_val = float(value)
        if result.get("diverged", 0) > 0:
            state.status = classify(diverged=True)
        if result.get("checkpoint_dir_name"):  # Tune's key: this report saved a checkpoint
            state.saved_epoch = int(result.get("epoch", 0))
        self._show(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        state = self._state(trial)
        state.status = classify(diverged=state.status is TrialStatus.DIVERGED,
                                epochs_run=(trial.last_result or {}).get("epoch", 0),
                                epochs_planned=self.max_epochs, ended=True)
        self._show(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._state(trial).status = classify(errored=True)
        self._show(trials)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial stopped unexpectedly (its node was lost, its process killed, or it raised)
        and Tune retries it: say from where, so that the traceback Tune logged just before
        reads as handled. It waits, not counted as running, until a node has room for it."""
        state = self._state(trial)
        start = (f"from its checkpoint at epoch {state.saved_epoch}" if state.saved_epoch
                 else "from its start (it had no checkpoint yet)")
        log.warning("[%s] trial %s (%s) stopped unexpectedly; retry %d of %d (--max-failures), "
                    "%s, as soon as a node has room for it", time.strftime("%H:%M:%S"),
                    state.name, describe(state.config), trial.num_failures, trial.max_failures,
                    start)
        self._show(trials)

    def _state(self, trial: Any) -> TrialState:
        if trial.trial_id not in self.trials:
            self.trials[trial.trial_id] = TrialState(str(trial), dict(trial.config))
        return self.trials[trial.trial_id]

    def best_trial(self) -> tuple[str, TrialState] | None:
        """(trial id, state) of the best trial so far, by `contract.rank_key`."""
        return best_of(self.trials.items(),
                       key=lambda item: rank_key(item[1].status, item[1].best_val, item[0]))

    def counts(self, trials: list, starting: str | None = None) -> dict[str, int]:
        """Trials by state; ``starting``: a trial about to run, not yet marked RUNNING."""
        ended = {tid: s.status for tid, s in self.trials.items()
                 if s.status is not TrialStatus.RUNNING}
        running = sum((t.status == "RUNNING" or t.trial_id == starting)
                      and t.trial_id not in ended for t in trials)
        states = list(ended.values())
        return {s.label: running if s is TrialStatus.RUNNING else states.count(s)
                for s in STATES}

    def _show(self, trials: list, starting: str | None = None) -> None:
        counts = self.counts(trials, starting)
        line = " · ".join(f"{n} {state}" for state, n in counts.items())
        best = self.best_trial() if self.phase == "search" else None
        if best is not None:
            state = best[1]
            self.best = (state.best_val, state.config, state.name)
            line += f" | best {self.metric} {state.best_val:.3f} ({describe(state.config)})"
        if self.phase != "search":
            line = f"{self.phase}: {line}"
        behind = self.tracking.behind() if self.tracking is not None else None
        if behind is not None:  # the store is away: say what waits for it, and since when
            since = time.strftime("%H:%M:%S", time.localtime(time.time() - behind[1]))
            line += f" | MLflow tracking behind: {behind[0]} writes queued (store away since " \
                    f"{since})"
        if line != self._last_line:
            log.info("[%s] %s", time.strftime("%H:%M:%S"), line)
            self._last_line = line
            if self.tracking is not None:
                self._mirror(counts)

    def _mirror(self, counts: dict[str, int]) -> None:
        prefix = "trials" if self.phase == "search" else self.phase
        metrics = {f"{prefix}_{k.replace(' ', '_')}": v for k, v in counts.items()}
        best = None
        if self.best is not None and self.phase == "search":
            value, config, name = self.best
            metrics[f"best_{self.metric}"] = value
            best = {"trial": name, self.metric: value, **config}
        ended = sum(s.status is not TrialStatus.RUNNING for s in self.trials.values())
        self.tracking.log_sweep_progress(metrics, step=ended, best=best)
