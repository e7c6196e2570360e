"""Read a sweep from MLflow: its parent run, and the child runs whose parent it is.

Children are chosen by the `mlflow.parentRunId` tag, so runs of other sweeps in the same
experiment never leak into the tables. Tag names, and how a run's status and tags say how its trial
ended, are the `contract`'s.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contract import (
    EPOCH_METRICS,
    INIT_PREFIX,
    PARENT_TAG,
    PROVENANCE_PREFIXES,
    REPEAT_OF_TAG,
    SWEEP_ID_TAG,
    SWEEP_TAG,
    TRIAL_ID_TAG,
    TRIAL_NAME_TAG,
    TrialStatus,
    status_of_run,
)

from ._data import ReportError, Sweep, Trial

_logger = logging.getLogger(__name__)

# A metric's history is one request. A tracking server answers several at once, which at 1,000
# trials x 9 metrics turns minutes of round trips into seconds; a local SQLite store or file
# store serialises them, and threads only add locking to it.
_SERVER_FETCHES = 8


def read_mlflow(
    *, tracking_uri: str, experiment: str | None = None, parent_run_id: str | None = None,
    sweep: str | None = None,
) -> Sweep:
    """The sweep of `parent_run_id`, or of `experiment` (the latest sweep there, or `sweep`)."""
    _check_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    notes: list[str] = []
    parent = _find_parent(client, experiment, parent_run_id, sweep, notes)
    runs = _all_runs(client, parent.info.experiment_id)
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    others = len(runs) - len(children) - 1
    if others > 0:
        notes.append(f"{others} other run(s) in the experiment (other sweeps) were left out.")
    histories = _histories(client, tracking_uri, children)
    trials = [_trial(run, histories) for run in children]
    # KILLED: the sweep was stopped (Ctrl-C) and may be resumed; its report is a snapshot.
    running = (parent.info.status in ("RUNNING", "KILLED")
               or any(t.status in (TrialStatus.RUNNING, TrialStatus.INTERRUPTED)
                       for t in trials))
    name = parent.data.tags.get(SWEEP_TAG) or parent.info.run_name or parent.info.run_id
    _logger.info("sweep %s: %d trials from parent run %s", name, len(trials), parent.info.run_id)
    return Sweep(name=name, source=f"MLflow {tracking_uri}, parent run {parent.info.run_id}",
                 in_progress=running, trials=trials, params=dict(parent.data.params),
                 parent_run_id=parent.info.run_id, notes=notes,
                 provenance=_provenance(parent.data.tags), tags=dict(parent.data.tags))


def _check_store(uri: str) -> None:
    """A missing SQLite file would be created empty by MLflow: say where we looked instead."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise ReportError(f"no MLflow store at {path.resolve()} (--tracking-uri {uri}); run "
                              "from the directory the sweep ran in, or pass --tracking-uri")


def _find_parent(client: MlflowClient, experiment: str | None, run_id: str | None,
                 sweep: str | None, notes: list[str]) -> Run:
    if run_id:
        try:
            run = client.get_run(run_id)
        except MlflowException as e:
            raise ReportError(f"no MLflow run {run_id!r} in the tracking store: {e}") from e
        if SWEEP_TAG not in run.data.tags:
            notes.append(f"run {run_id} has no {SWEEP_TAG} tag; read as a sweep's parent anyway.")
        return run
    if not experiment:
        raise ReportError("give --experiment NAME or --parent-run ID")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ReportError(f"no MLflow experiment {experiment!r}; experiments: {names}")
    parents = [r for r in _all_runs(client, exp.experiment_id) if SWEEP_TAG in r.data.tags]
    if sweep:  # its name, or its id (ghn_sweep.sweep_id) where names repeat
        parents = [r for r in parents
                   if sweep in (r.data.tags[SWEEP_TAG], r.data.tags.get(SWEEP_ID_TAG))]
    if not parents:
        which = f"named {sweep!r} " if sweep else ""
        raise ReportError(f"experiment {experiment!r} has no sweep {which}(no run tagged "
                          f"{SWEEP_TAG}); run a sweep first, or pass --parent-run ID")
    parents.sort(key=lambda r: r.info.start_time or 0, reverse=True)
    if len(parents) > 1:
        rest = ", ".join(f"{r.data.tags[SWEEP_TAG]} (parent run {r.info.run_id})"
                         for r in parents[1:])
        notes.append(f"the experiment holds {len(parents)} sweeps{' of that name' if sweep else ''}"
                     f"; this report is of the latest started, parent run "
                     f"{parents[0].info.run_id}. Others (choose with --sweep or --parent-run): "
                     f"{rest}.")
    return parents[0]


def _all_runs(client: MlflowClient, experiment_id: str) -> list[Run]:
    """Every active run of the experiment, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _histories(client: MlflowClient, uri: str,
               runs: list[Run]) -> dict[tuple[str, str], dict[int, float]]:
    """Every epoch metric's history of every run, by (run id, metric): concurrently from a
    tracking server, one after the other from a local store."""
    keys = [(r.info.run_id, name) for r in runs for name in EPOCH_METRICS
            if name in r.data.metrics]

    def fetch(key: tuple[str, str]) -> dict[int, float]:
        return {int(m.step): float(m.value) for m in client.get_metric_history(*key)
                if m.step >= 1}

    if uri.startswith(("http://", "https://")):
        with ThreadPoolExecutor(_SERVER_FETCHES) as pool:
            return dict(zip(keys, pool.map(fetch, keys)))
    return {key: fetch(key) for key in keys}


def _trial(run: Run, histories: dict[tuple[str, str], dict[int, float]]) -> Trial:
    tags, metrics = run.data.tags, run.data.metrics
    config: dict[str, object] = dict(run.data.params)
    for key in ("arch", "init", "ghn"):
        if key not in config and key in tags:
            config[key] = tags[key]
    history = {name: histories[run.info.run_id, name] for name in EPOCH_METRICS
               if name in metrics}
    end, start = run.info.end_time, run.info.start_time
    return Trial(
        trial_id=tags.get(TRIAL_ID_TAG, run.info.run_id),
        name=tags.get(TRIAL_NAME_TAG, run.info.run_name or ""),
        status=status_of_run(run.info.status, tags, metrics.get("diverged", 0.0) > 0),
        config=config, history=history,
        init={k: v for k, v in metrics.items() if k.startswith(INIT_PREFIX)},
        run_id=run.info.run_id,
        wall_time_s=(end - start) / 1000 if end and start else None,
        repeat_of=tags.get(REPEAT_OF_TAG), provenance=_provenance(tags))


def _provenance(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if k.startswith(PROVENANCE_PREFIXES)}
