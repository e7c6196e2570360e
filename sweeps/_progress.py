"""A one-line progress view of a sweep, printed when it changes, and mirrored to MLflow."""

from __future__ import annotations

import time
from typing import Any

from ray import tune

from .tracking import MlflowTrackingCallback

SHOWN = (("arch", "{}"), ("init", "{}"), ("optim.lr", "lr={:.3g}"),
         ("postproc.beta", "beta={:.2g}"), ("postproc.orth", "orth={}"))


def describe(config: dict[str, Any]) -> str:
    """A trial's sampled config in a few words: ``resnet18 ghn lr=0.0015 orth=True``."""
    return " ".join(fmt.format(config[k]) for k, fmt in SHOWN if k in config)


class ProgressCallback(tune.Callback):
    """Counts trials by state and tracks the best `metric`; prints one line per change.

    With `tracking`, the counts and the best value are logged as metrics of the sweep's parent
    run (step = number of ended trials), and the best trial's name and sampled config as its tags
    ``best.*``, so the MLflow UI shows the sweep's progress and its best configuration so far.
    """

    def __init__(self, metric: str, max_epochs: int,
                 tracking: MlflowTrackingCallback | None = None) -> None:
        self.metric, self.max_epochs, self.tracking = metric, max_epochs, tracking
        self.ended: dict[str, str] = {}  # trial id -> finished | stopped early | failed
        self.best: tuple[float, dict, str] | None = None  # value, sampled config, trial name
        self._last_line = ""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Tune marks the trial RUNNING only after this hook; shown running now, so the view
        # moves as soon as trials start, not at their first epoch.
        self._show(trials, starting=trial.trial_id)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and (self.best is None or value > self.best[0]):
            self.best = (float(value), dict(trial.config), str(trial))
            self._show(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        done = result.get("epoch", 0) >= self.max_epochs or result.get("diverged", 0) > 0
        self.ended[trial.trial_id] = "finished" if done else "stopped early"
        self._show(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended[trial.trial_id] = "failed"
        self._show(trials)

    def counts(self, trials: list, starting: str | None = None) -> dict[str, int]:
        """Trials by state; ``starting``: a trial about to run, not yet marked RUNNING."""
        states = list(self.ended.values())
        running = sum((t.status == "RUNNING" or t.trial_id == starting)
                      and t.trial_id not in self.ended for t in trials)
        return {"running": running,
                "finished": states.count("finished"),
                "stopped early": states.count("stopped early"), "failed": states.count("failed")}

    def _show(self, trials: list, starting: str | None = None) -> None:
        counts = self.counts(trials, starting)
        line = " · ".join(f"{n} {state}" for state, n in counts.items())
        if self.best is not None:
            value, config, _ = self.best
            line += f" | best {self.metric} {value:.3f} ({describe(config)})"
        if line != self._last_line:
            print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
            self._last_line = line
            if self.tracking is not None:
                metrics = {f"trials_{k.replace(' ', '_')}": v for k, v in counts.items()}
                best = None
                if self.best is not None:
                    value, config, name = self.best
                    metrics[f"best_{self.metric}"] = value
                    best = {"trial": name, self.metric: value, **config}
                self.tracking.log_sweep_progress(metrics, step=len(self.ended), best=best)
