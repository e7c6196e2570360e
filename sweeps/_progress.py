"""A one-line progress view of a sweep, logged as it changes (at most every few seconds), and
mirrored to MLflow."""

from __future__ import annotations

import collections
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
# At most one progress line this often, in seconds, unless the best trial changes: a line per
# change is about 4 per trial, 4,000 lines for a 1,000-trial sweep.
EVERY_S = 10.0
# Trial states shown, in this order.
STATES = (TrialStatus.RUNNING, TrialStatus.FINISHED, TrialStatus.STOPPED_EARLY,
          TrialStatus.DIVERGED, TrialStatus.FAILED)


def short_config(config: dict[str, Any]) -> str:
    """A trial's sampled config in a few words: ``resnet18 ghn lr=0.0015 orth=True``."""
    return " ".join(fmt.format(config[k]) for k, fmt in SHOWN if k in config)


@dataclass
class TrialState:
    """What the view knows of one trial: enough to rank it with `contract.rank_key`."""

    name: str
    config: dict[str, Any]
    status: TrialStatus = TrialStatus.RUNNING
    best_val: float | None = None
    saved_epoch: int = 0  # the epoch of its last checkpoint: where a retry starts from


class ProgressCallback(tune.Callback):
    """Counts trials by state and tracks the best trial (`contract.rank_key`); logs a line when
    they change, at most one every ``every_s`` seconds (a changed view waits for the next, and
    the experiment's end shows the last), but at once when the best trial changes.

    Each hook costs the same however many trials the sweep has: the counts and the best trial
    are kept up to date as trials change, never recounted over all of them (a 1,000-trial sweep
    fires about 4,000 hooks), and the terminal gets a line per ``every_s``, not per change.

    With `tracking`, each line's counts and best value are logged as metrics of the sweep's
    parent run (step = number of ended trials), and the best trial's name and sampled config as
    its tags ``best.*``, so the MLflow UI shows the sweep's progress and its best configuration so
    far. ``phase="repeats"`` (the seeds after the search) counts under ``repeats_*`` and shows no
    best: the best configuration is the search's.
    """

    def __init__(self, metric: str, max_epochs: int,
                 tracking: MlflowTrackingCallback | None = None, phase: str = "search",
                 every_s: float = EVERY_S) -> None:
        self.metric, self.max_epochs, self.tracking = metric, max_epochs, tracking
        self.phase, self.every_s = phase, every_s
        self.trials: dict[str, TrialState] = {}
        self.best: tuple[float, dict, str] | None = None  # value, sampled config, trial name
        self._reset_view()

    def _reset_view(self) -> None:
        self._running: set[str] = set()  # started, not ended (Tune's RUNNING, or starting)
        self._ended: collections.Counter[TrialStatus] = collections.Counter()
        self._best_id: str | None = None
        self._best_key: tuple | None = None
        self._last_line, self._shown_best = "", None
        self._shown_at = -math.inf  # time.monotonic() of the last line
        self._held = False  # the view changed since the last line

    def get_state(self) -> dict[str, Any]:
        """The trials seen so far, saved by Tune with its experiment state: a resumed sweep's
        view (and the parent run's counters) covers the trials that ended before the restart."""
        return {"trials": {tid: dataclasses.asdict(s) for tid, s in self.trials.items()}}

    def set_state(self, state: dict[str, Any]) -> None:
        self.trials = {tid: TrialState(**{**s, "status": TrialStatus(s["status"])})
                       for tid, s in state["trials"].items()}
        self._reset_view()
        self._ended.update(s.status for s in self.trials.values()
                           if s.status is not TrialStatus.RUNNING)
        self._best_id, self._best_key = self._find_best()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Tune marks the trial RUNNING only after this hook; shown running now, so the view
        # moves as soon as trials start, not at their first epoch.
        if self._state(trial).status is TrialStatus.RUNNING:
            self._running.add(trial.trial_id)
        self._changed()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        state = self._state(trial)
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and (
                state.best_val is None or value > state.best_val):
            state.best_val = float(value)
            self._rank(trial.trial_id)
        if result.get("diverged", 0) > 0:
            self._set_status(trial.trial_id, classify(diverged=True))
        self._changed()

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any,
                      **info: Any) -> None:
        """Tune now holds the checkpoint of the trial's last report, and a retry starts there.
        A report can carry a checkpoint that Tune never takes: Tune asks the trial's process for
        it after the report, and a node lost in between leaves the retry at the one before."""
        self._state(trial).saved_epoch = int((trial.last_result or {}).get("epoch", 0))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        state = self._state(trial)
        self._set_status(trial.trial_id, classify(
            diverged=state.status is TrialStatus.DIVERGED,
            epochs_run=(trial.last_result or {}).get("epoch", 0),
            epochs_planned=self.max_epochs, ended=True))
        self._changed()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._state(trial)
        self._set_status(trial.trial_id, classify(errored=True))
        self._changed()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial stopped unexpectedly (its node was lost, its process killed, or it raised)
        and Tune retries it: say from where, so that the traceback Tune logged just before
        reads as handled. It waits, not counted as running, until a node has room for it."""
        state = self._state(trial)
        self._running.discard(trial.trial_id)
        start = (f"from its checkpoint at epoch {state.saved_epoch}" if state.saved_epoch
                 else "from its start (it had no checkpoint yet)")
        log.warning("[%s] trial %s (%s) stopped unexpectedly; retry %d of %d (--max-failures), "
                    "%s, as soon as a node has room for it", time.strftime("%H:%M:%S"),
                    state.name, short_config(state.config), trial.num_failures, trial.max_failures,
                    start)
        self._changed()

    def on_step(self, iteration: int, trials: list, **info: Any) -> None:
        if self._held and time.monotonic() - self._shown_at >= self.every_s:
            self._show()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # The last view, whenever the line before it was; and a resumed sweep that found
        # nothing left to run still says where it stands.
        if self._held or not self._last_line:
            self._show()

    def _state(self, trial: Any) -> TrialState:
        if trial.trial_id not in self.trials:
            self.trials[trial.trial_id] = TrialState(str(trial), dict(trial.config))
        return self.trials[trial.trial_id]

    def _set_status(self, trial_id: str, status: TrialStatus) -> None:
        state = self.trials[trial_id]
        if state.status is not TrialStatus.RUNNING:
            self._ended[state.status] -= 1
        state.status = status
        if status is not TrialStatus.RUNNING:
            self._ended[status] += 1
            self._running.discard(trial_id)
        self._rank(trial_id)

    def _rank(self, trial_id: str) -> None:
        """Keep the best trial current after ``trial_id`` changed: compared with the best alone,
        unless the best itself got worse (it diverged or failed), which looks at all again."""
        state = self.trials[trial_id]
        key = rank_key(state.status, state.best_val, trial_id)
        if trial_id == self._best_id and (key is None or key > self._best_key):
            self._best_id, self._best_key = self._find_best()
        elif key is not None and (self._best_key is None or key <= self._best_key):
            self._best_id, self._best_key = trial_id, key

    def _find_best(self) -> tuple[str | None, tuple | None]:
        best = best_of(self.trials.items(),
                       key=lambda item: rank_key(item[1].status, item[1].best_val, item[0]))
        if best is None:
            return None, None
        return best[0], rank_key(best[1].status, best[1].best_val, best[0])

    def best_trial(self) -> tuple[str, TrialState] | None:
        """(trial id, state) of the best trial so far, by `contract.rank_key`."""
        return None if self._best_id is None else (self._best_id, self.trials[self._best_id])

    def counts(self) -> dict[str, int]:
        """Trials by state (a trial Tune is starting counts as running)."""
        return {s.label: len(self._running) if s is TrialStatus.RUNNING else self._ended[s]
                for s in STATES}

    def _changed(self) -> None:
        """Show the view now if the best trial changed or the last line is ``every_s`` old;
        else hold it for `on_step`."""
        best = self.best_trial() if self.phase == "search" else None
        if (best and (best[0], best[1].best_val)) != self._shown_best \
                or time.monotonic() - self._shown_at >= self.every_s:
            self._show()
        else:
            self._held = True

    def _show(self) -> None:
        counts = self.counts()
        line = " · ".join(f"{n} {state}" for state, n in counts.items())
        best = self.best_trial() if self.phase == "search" else None
        if best is not None:
            state = best[1]
            self.best = (state.best_val, state.config, state.name)
            self._shown_best = (best[0], state.best_val)
            line += f" | best {self.metric} {state.best_val:.3f} ({short_config(state.config)})"
        if self.phase != "search":
            line = f"{self.phase}: {line}"
        behind = self.tracking.behind() if self.tracking is not None else None
        if behind is not None:  # the store is away: say what waits for it, and since when
            since = time.strftime("%H:%M:%S", time.localtime(time.time() - behind[1]))
            line += f" | MLflow tracking behind: {behind[0]} writes queued (store away since " \
                    f"{since})"
        self._held = False
        if line != self._last_line:
            log.info("[%s] %s", time.strftime("%H:%M:%S"), line)
            self._last_line, self._shown_at = line, time.monotonic()
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
        self.tracking.log_sweep_progress(metrics, step=sum(self._ended.values()), best=best)
