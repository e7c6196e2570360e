"""Every private attribute of Ray Tune and Optuna that the sweep reaches, and the versions it was
tested with.

Tune offers no public way to change a restored Tuner's searcher or callbacks, to save ASHA's
rungs with its experiment state (``TuneController.__getstate__`` drops the scheduler, and
``AsyncHyperBandScheduler.save`` pickles the whole scheduler to a file of its own), to ask
``OptunaSearch`` which Tune trial is which Optuna trial, or to say where in storage a trial's
directory is. These are attributes of Ray 2.60 and
Optuna 5.1 that any release may rename, so they are all here, and importing this module fails with
a clear message on versions outside the tested range rather than midway through a sweep.
"""

from __future__ import annotations

from typing import Any

import optuna
import ray
from pyarrow import fs
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler
from ray.tune.search.optuna import OptunaSearch

TESTED = {"ray": (2, 60), "optuna": (5, 1)}  # major, minor: any patch release of these


def check_versions(installed: dict[str, str]) -> None:
    """Raise ImportError naming each package in ``installed`` (name -> version) whose version is
    not the tested one."""
    wrong = []
    for name, version in installed.items():
        major_minor = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        if major_minor != TESTED[name]:
            wrong.append(f"{name} {version} (tested: {'.'.join(map(str, TESTED[name]))}.x)")
    if wrong:
        raise ImportError(f"sweeps reaches private attributes of Ray Tune and Optuna, and was "
                          f"tested with other versions than those installed: {', '.join(wrong)};"
                          " install the versions pyproject.toml names (pip install -e .)")


check_versions({"ray": ray.__version__, "optuna": optuna.__version__})


# --- a restored Tuner ---------------------------------------------------------------------------

def restored_searcher(tuner: Any) -> Any:
    """The search algorithm a restored ``tune.Tuner`` runs (pickled at the sweep's first start)."""
    return tuner._local_tuner._tune_config.search_alg


def restored_callbacks(tuner: Any) -> list:
    """The callbacks a restored ``tune.Tuner`` runs (pickled at the sweep's first start)."""
    return tuner._local_tuner.get_run_config().callbacks or []


# --- a trial's directory in storage -------------------------------------------------------------

def trial_storage(trial: Trial) -> tuple[fs.FileSystem, str]:
    """The filesystem of the sweep's storage and the trial's directory on it."""
    return trial.storage.storage_filesystem, trial.storage.trial_fs_path


# --- ASHA's rungs -------------------------------------------------------------------------------

def asha_state(scheduler: AsyncHyperBandScheduler) -> dict[str, Any]:
    """ASHA's rungs (per bracket: [milestone, {trial id: value}]) and its count of stopped trials,
    as JSON-like data."""
    rungs = [[[milestone, dict(recorded)] for milestone, recorded in bracket._rungs]
             for bracket in scheduler._brackets]
    return {"asha_rungs": rungs, "asha_stopped": scheduler._num_stopped}


def asha_milestones(scheduler: AsyncHyperBandScheduler) -> list[list[int]]:
    """The epochs of ASHA's rungs, per bracket."""
    return [[milestone for milestone, _ in bracket._rungs] for bracket in scheduler._brackets]


def restore_asha(scheduler: AsyncHyperBandScheduler, state: dict[str, Any]) -> int:
    """Put `asha_state`'s rungs back into ``scheduler`` (of the same milestones); returns the
    rung entries restored."""
    restored = 0
    for bracket, rungs in zip(scheduler._brackets, state["asha_rungs"]):
        for (_, recorded), (_, entries) in zip(bracket._rungs, rungs):
            recorded.update(entries)
            restored += len(entries)
    scheduler._num_stopped = state["asha_stopped"]
    return restored


# --- OptunaSearch's bookkeeping -----------------------------------------------------------------

def optuna_study(search: OptunaSearch) -> optuna.Study:
    return search._ot_study


def optuna_trial_ids(search: OptunaSearch) -> dict[int, str]:
    """Optuna trial number -> Tune trial id, of the trials this searcher asked Optuna for."""
    return {t.number: trial_id for trial_id, t in search._ot_trials.items()}


def told_optuna(search: OptunaSearch, trial_id: str) -> bool:
    """Whether this searcher has told Optuna how Tune trial ``trial_id`` ended."""
    return trial_id in search._completed_trials


def mark_told(search: OptunaSearch, trial_id: str) -> None:
    """Record that Optuna already knows how ``trial_id`` ended, so it is not told again."""
    search._completed_trials.add(trial_id)
