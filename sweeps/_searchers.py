"""The searchers of a sweep's two phases: Optuna TPE for the search, a fixed list for the repeats,
each behind a concurrency limit that ``--resume`` may change."""

from __future__ import annotations

import json
import typing

import optuna
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from contract import METRIC, MODE, TrialStatus, classify

from . import _internals
from ._config import SweepConfig
from ._space import SearchSpace, baselines


class PrunedAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna a trial stopped early (by ASHA) as PRUNED, not COMPLETE.

    Ray's OptunaSearch reports every epoch to the Optuna trial as an intermediate value, then
    completes a stopped trial with its last value, as if it had run to the end. TPE ranks
    pruned trials below complete ones, by the epoch they reached and the value there, which is
    what a stopped trial says about its config.
    """

    def __init__(self, *args: typing.Any, max_epochs: int, **kwargs: typing.Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_epochs = max_epochs
        self._told_before_restore: set[str] = set()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._told_before_restore:
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self._told_before_restore:  # Optuna keeps the first telling
            _internals.mark_told(self, trial_id)
            return
        stopped = bool(result) and classify(
            errored=error, diverged=result.get("diverged", 0) > 0,
            epochs_run=result.get("epoch", 0), epochs_planned=self.max_epochs,
            ended=True) is TrialStatus.STOPPED_EARLY
        # OptunaSearch tells PRUNED for a trial that ended without a result and without error.
        super().on_trial_complete(trial_id, None if stopped else result, error)

    def restore(self, checkpoint_path: str) -> None:
        """The searcher of Tune's last saved state, reconciled with the study, which is ahead.

        The study is written at once (SQLite), Tune's state only now and then. A trial that
        ended after the last state save of a killed driver is told to Optuna already, yet Tune
        runs it again (from its checkpoint): Optuna refuses a second telling ("Cannot tell a
        COMPLETE trial"), so it is skipped. A trial the killed driver started after that save is
        unknown to the restored sweep, which samples another in its place: it failed.
        """
        super().restore(checkpoint_path)
        ours = _internals.optuna_trial_ids(self)
        study = _internals.optuna_study(self)
        self._told_before_restore = set()
        for t in study.get_trials(deepcopy=False):
            if t.number not in ours:
                if t.state == optuna.trial.TrialState.RUNNING:
                    study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            elif t.state.is_finished() and not _internals.told_optuna(self, ours[t.number]):
                self._told_before_restore.add(ours[t.number])


class FixedConfigs(Searcher):
    """Hands out a given list of configs, each once, in order: the repeats phase.

    (Tune's BasicVariantGenerator needs every key of its points in a param space; these
    configs differ in their keys by init method.)
    """

    def __init__(self, configs: list[dict]) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self.configs, self.handed_out = list(configs), 0

    def suggest(self, trial_id: str) -> dict | str:
        if self.handed_out >= len(self.configs):
            return Searcher.FINISHED
        self.handed_out += 1
        return dict(self.configs[self.handed_out - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        pass  # nothing to learn

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as f:
            json.dump({"configs": self.configs, "handed_out": self.handed_out}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            state = json.load(f)
        self.configs, self.handed_out = state["configs"], state["handed_out"]


class Limiter(ConcurrencyLimiter):
    """A ConcurrencyLimiter whose limit a restore leaves as ``--resume`` set it (Tune puts back
    the saved searcher state, the first start's limit included)."""

    def set_state(self, state: dict[str, typing.Any]) -> None:
        limit = self.max_concurrent
        super().set_state(state)
        self.set_max_concurrency(limit)


def search_algorithm(cfg: SweepConfig) -> Limiter:
    """TPE over the sweep's space, the baselines first; its study next to the results."""
    storage = None
    if cfg.results_dir is not None:  # the study sits next to the results, for inspection
        cfg.results_dir.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.RDBStorage(f"sqlite:///{cfg.results_dir / 'optuna.db'}")
    search = PrunedAwareOptunaSearch(
        space=SearchSpace(cfg), metric=METRIC, mode=MODE, points_to_evaluate=baselines(cfg),
        sampler=optuna.samplers.TPESampler(seed=cfg.seed), study_name=cfg.sweep_name,
        storage=storage, max_epochs=cfg.max_epochs)
    return Limiter(search, max_concurrent=cfg.max_concurrent)


def repeats_algorithm(cfg: SweepConfig, configs: list[dict]) -> Limiter:
    """Exactly ``configs``, in order."""
    return Limiter(FixedConfigs(configs), max_concurrent=cfg.max_concurrent)
