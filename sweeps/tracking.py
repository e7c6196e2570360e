"""Driver-side MLflow tracking: one parent run per sweep, one child run per trial.

Trials only report to Ray Tune; this callback, running in the driver, is the single owner of run
lifecycle. The parent run is the sweep's: tagged with its name and its id (``ghn_sweep.sweep_id``,
kept with the Ray experiment), and found again by the id, never by the name alone. The callback
opens a child run when a trial starts, logs each epoch's metrics with step = epoch, and closes
the run FINISHED, KILLED (stopped early, tagged ``ghn_sweep.stopped_early``) or FAILED.
After ``Tuner.restore`` (or a retried trial) it finds the trial's existing run by its
``ray.trial_id`` tag and continues it, skipping epochs that run already holds. At the
experiment's end it settles what a killed driver left open: the runs of trials that ended
meanwhile are closed as Tune recorded them, and a run of a trial Tune never recorded (started
after Tune's last saved state; the restored sweep runs another in its place) is deleted.
Workers never talk to MLflow, so on a cluster the tracking server need only be reachable from
the head node.

MLflow calls run in order on one writer thread, so the hooks return at once: Tune holds a trial
back until the driver's callbacks are done with its result, and a store's latency (tens of ms
for SQLite, more over HTTP) would otherwise be added to every epoch of every trial.

If the tracking store goes away mid-sweep, the writes wait in that queue and are retried with
backoff until it is back (`sweeps._patient`); the progress line says how far tracking is behind.
Writes still not made when the experiment ends (after a grace period, ``GHN_SWEEP_TRACKING_GRACE_S``
seconds, default 120) are kept as JSON lines in ``tracking-pending-<phase>.jsonl`` beside the
sweep's results and replayed when the sweep next starts (``--resume``). Only a store that refuses
the connection for good (not an outage) switches the callback off.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from contract import (
    CONFIG_KEY,
    DIVERGED_TAG,
    ERROR_FILE_TAG,
    EXPERIMENT_KIND,
    INIT_PREFIX,
    INTERRUPTED_TAG,
    PARENT_TAG,
    PHASE_TAG,
    REPEAT_OF,
    REPEAT_OF_TAG,
    REPORTED_METRICS,
    RETRIED_TAG,
    STOPPED_EARLY_TAG,
    SWEEP_ID_TAG,
    SWEEP_TAG,
    TAGS_KEY,
    TRIAL_ID_TAG,
    TRIAL_NAME_TAG,
    TrialStatus,
    classify,
    run_status,
)
from trainable import provenance

from ._config import SweepConfig
from ._patient import (
    GaveUp,
    PatientClient,
    TrialRecord,
    Writer,
    decode,
    encode,
    load_journal,
    save_journal,
)

__all__ = ["MlflowTrackingCallback", "find_parent_run", "probe", "sweep_interrupted",
           "tracking_for"]

log = logging.getLogger(__name__)

PARAM_BATCH = 100  # MLflow's log_batch limit on params per call
METRIC_BATCH = 1000  # and on metrics per call
GRACE_ENV = "GHN_SWEEP_TRACKING_GRACE_S"  # how long the experiment's end waits for the store
DEFAULT_GRACE_S = 120.0
# MLflow's own HTTP retries (7 by default, minutes of backoff per call) would hide an outage from
# the writer's queue and hold each write that long; a few, then the queue's own retries.
MLFLOW_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                         "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
# The writes that end a phase: on replay the new driver's own end does them, with what it knows.
NOT_REPLAYED = {"_end_sweep", "close_parent"}
_WRITES: dict[str, Callable] = {}  # the queued writes by name, for the journal's replay


def find_parent_run(client: MlflowClient, experiment_id: str, sweep: str,
                    sweep_id: str | None = None) -> Any | None:
    """The parent run of sweep ``sweep_id`` (tags ``ghn_sweep.sweep`` and ``ghn_sweep.sweep_id``),
    or with no id the newest parent run of any sweep named ``sweep``; None if there is none."""
    where = f"tags.`{SWEEP_TAG}` = '{_quote(sweep)}'"
    if sweep_id is not None:
        where += f" and tags.`{SWEEP_ID_TAG}` = '{_quote(sweep_id)}'"
    found = client.search_runs([experiment_id], filter_string=where, max_results=1,
                               order_by=["attributes.start_time DESC"])
    return found[0] if found else None


def sweep_interrupted(ended: list[bool], total: int | None) -> bool:
    """Whether Tune ended the experiment before all of it ran (Ctrl-C, a stop signal).

    ``ended``: per trial, whether it really ended -- it errored, or its last result carries
    ``done`` (its last epoch, ASHA's stop, divergence); Tune marks the trials it stops TERMINATED
    too, so their status cannot tell. ``total``: the trials the sweep asked for, not all of
    which may exist yet.
    """
    return sum(ended) < max(len(ended), total or 0)


def _guarded(method: Callable) -> Callable:
    """Queue a write on the callback's writer thread; its arguments (trial records, results) are
    JSON-able, so that a write the store never took can wait on disk for the next start."""
    _WRITES[method.__name__] = method

    @functools.wraps(method)
    def wrapper(self: MlflowTrackingCallback, *args: Any, **kwargs: Any) -> None:
        self._enqueue(method.__name__, list(args), kwargs)

    return wrapper


class MlflowTrackingCallback(tune.Callback):
    """A ``ray.tune.Callback`` that mirrors trials into MLflow runs.

    Args:
        tracking_uri: ``sqlite:///path/mlflow.db`` locally, ``http://host:port`` on a cluster.
        experiment: MLflow experiment name (created if missing).
        sweep: the sweep's name, the parent run's name.
        sweep_params: logged as params of the parent run when it is created.
        parent_tags: set on the parent run when it is created (the sweep's classes against the
            GHN's: `sweeps._classes.class_tags`).
        sweep_id: the sweep's identity, by which its parent run is found again after a
            restore (it travels with the pickled callback); default: a new sweep's fresh id.
        final: whether this experiment's end ends the sweep (closes the parent run FINISHED);
            False for the search when repeats follow it as a second experiment.
        phase: ``search`` or ``repeats``, the experiment whose child runs this callback owns
            (a repeat's run is tagged ``ghn_sweep.repeat_of``).
        journal_dir: where writes the store never took are kept for the next start (the sweep's
            results directory); None: they are logged as lost.
    """

    def __init__(
        self, *, tracking_uri: str, experiment: str, sweep: str,
        sweep_params: dict[str, Any] | None = None, sweep_id: str | None = None,
        final: bool = True, phase: str = "search", parent_tags: dict[str, str] | None = None,
        journal_dir: str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.sweep = sweep
        self.sweep_params = dict(sweep_params or {})
        self.parent_tags = dict(parent_tags or {})
        self.sweep_id = sweep_id or uuid.uuid4().hex
        self.final = final
        self.phase = phase
        self.journal_dir = journal_dir
        self._reset()
        self._restored = False

    def _reset(self) -> None:
        self._client: MlflowClient | None = None
        self._disabled = False
        self._experiment_id: str | None = None
        self._parent_run_id: str | None = None
        self._writer = Writer(self.tracking_uri)
        self._connect_queued = False
        self._total: int | None = None  # trials the sweep asked for, from Tune's setup
        self._runs: dict[str, str] = {}  # trial id -> MLflow run id
        # A parent run this driver opened has only the children it made (`_seen`): a new trial's
        # run needs no search of the store first (one per trial, ~6 ms each on SQLite).
        self._new_parent = False
        self._seen: set[str] = set()  # trial ids whose runs this driver made or found
        self._last_epoch: dict[str, int] = {}  # trial id -> last epoch logged
        self._planned: dict[str, int] = {}  # trial id -> optim.epochs, once known
        self._diverged: set[str] = set()
        self._best_step = -1  # the progress step of the parent's best.* tags (see below)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with the experiment; a restored driver reconnects and finds its
        # runs by tag, so no client or run ids travel.
        return {k: getattr(self, k) for k in ("tracking_uri", "experiment", "sweep",
                                              "sweep_params", "sweep_id", "final",
                                              "phase", "parent_tags", "journal_dir")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # One pickled before it had them: no parent tags, no journal.
        self.__dict__.update({"parent_tags": {}, "journal_dir": None, **state})
        self._reset()
        self._restored = True  # a resumed sweep's: a killed driver may have left runs behind

    # --- Tune hooks -------------------------------------------------------------------------

    def connect(self) -> None:
        """Start connecting to the tracking store, in the background: creating a fresh MLflow
        store takes seconds of CPU. Call it before ``ray.init`` to overlap that with Ray's
        start-up; ``setup`` calls it otherwise. It opens no run, so a sweep that never starts
        leaves none behind.
        """
        if not self._connect_queued:
            self._connect_queued = True
            for name, value in MLFLOW_RETRY_DEFAULTS.items():
                os.environ.setdefault(name, value)
            self._writer.submit(lambda: self._run_guarded(type(self)._connect, ()))

    def setup(self, **info: Any) -> None:
        self._total = info.get("total_num_samples")
        self.connect()
        self._writer.submit(lambda: self._run_guarded(type(self)._open_parent_run, ()))
        self._replay_journal()

    def flush(self) -> None:
        """Wait until every MLflow call queued so far is done (an outage is waited out, until
        the experiment's end gives up on it)."""
        try:
            self._writer.submit(lambda: None).result()
        except GaveUp:
            pass

    def write_timings(self) -> dict[str, float]:
        """How long the store took over this phase's writes (`sweeps._patient.Writer.timings`)."""
        return self._writer.timings()

    def behind(self) -> tuple[int, float] | None:
        """While the store is away: (writes waiting, seconds it has been away); else None."""
        return self._writer.behind()

    @property
    def journal(self) -> Path | None:
        """Where this phase's writes that the store never took wait for the next start."""
        if self.journal_dir is None:
            return None
        return Path(self.journal_dir) / f"tracking-pending-{self.phase}.jsonl"

    def _enqueue(self, name: str, args: list, kwargs: dict[str, Any]) -> None:
        record = {"op": name, "args": encode(args), "kwargs": encode(kwargs)}
        self._writer.submit(lambda: self._run_guarded(_WRITES[name], args, kwargs), record)

    def _replay_journal(self) -> None:
        """Queue the writes a previous driver could not make; the file goes once they are made
        (if the store is away again at the end, `on_experiment_end` writes it anew)."""
        path = self.journal
        records = load_journal(path) if path else []
        if not records:
            return
        log.warning("replaying %d MLflow writes that the store did not take before the sweep "
                    "last stopped (%s)", len(records), path)
        for record in records:
            if record["op"] in NOT_REPLAYED:
                continue
            self._enqueue(record["op"], decode(record["args"]), decode(record.get("kwargs", {})))
        self._writer.submit(lambda: path.unlink(missing_ok=True))

    def other_parent_run(self) -> Any | None:
        """A parent run of another sweep with this sweep's name in the experiment (waits for
        the connection; None also when tracking is off)."""
        found = self._ask(lambda: find_parent_run(self._client, self._experiment_id, self.sweep))
        ours = found is not None and found.data.tags.get(SWEEP_ID_TAG) == self.sweep_id
        return None if ours else found

    def has_parent_run(self) -> bool | None:
        """Whether the store holds this sweep's parent run (waits for the connection; None when
        tracking is off)."""
        found = self._ask(lambda: find_parent_run(self._client, self._experiment_id, self.sweep,
                                                  self.sweep_id) is not None)
        return None if self._disabled else found

    def _ask(self, question: Callable[[], Any]) -> Any:
        """``question()`` on the writer thread, once connected; None if tracking is off or it
        fails (loudly, as any tracking failure)."""
        def guarded() -> Any:
            if self._disabled:
                return None
            try:
                return question()
            except Exception as e:  # noqa: BLE001 - a refusal: loud, not fatal
                log.error("MLflow at %s could not answer (%s: %s)", self.tracking_uri,
                          type(e).__name__, e)
                return None

        self.connect()
        return self._writer.submit(guarded).result()

    @property
    def parent_run_id(self) -> str | None:
        """The sweep's parent run, once opened; None when tracking is off."""
        self.flush()
        return self._parent_run_id

    @property
    def experiment_id(self) -> str | None:
        """The MLflow experiment of the sweep, once connected; None when tracking is off."""
        return self._experiment_id

    # Tune's hooks queue a write with a copy of what it needs, and return.

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._start(TrialRecord.of(trial))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self._result(TrialRecord.of(trial), dict(result))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._completed(TrialRecord.of(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._errored(TrialRecord.of(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._recovered(TrialRecord.of(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Close what is open: FINISHED when every trial ended, else KILLED and tagged
        interrupted (Ctrl-C); ``--resume`` reopens those runs and clears the tag. Returns once
        every MLflow call is done, or the grace period is over (the writes left are kept in
        `journal`), so the driver may exit."""
        interrupted = sweep_interrupted([_ended(t) for t in trials], self._total)
        self._end_sweep(interrupted, [TrialRecord.of(t) for t in trials])
        # With the store away, the journal is written before the grace period too: a scheduler
        # may SIGKILL the driver before it ends.
        early = self.journal is not None and self._writer.behind() is not None
        if early:
            save_journal(self.journal, self._writer.pending_records())
        left = self._writer.drain(_grace_s())
        if left:
            self._keep_what_is_left(left)
        elif early:
            self.journal.unlink(missing_ok=True)

    def _keep_what_is_left(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        path = self.journal
        if path is None:
            log.error("MLflow tracking at %s stayed unavailable: %d writes were not made; the "
                      "metrics are in Ray Tune's results", self.tracking_uri, len(records))
            return
        save_journal(path, records)
        log.error("MLflow tracking at %s stayed unavailable: %d writes were not made. They are "
                  "kept in %s and made when the sweep next starts (--resume); or complete the "
                  "record from Ray's results: python -m sweeps.rebuild <storage>/<name> "
                  "--tracking-uri %s", self.tracking_uri, len(records), path, self.tracking_uri)

    # --- the writes, on the writer thread -----------------------------------------------------

    @_guarded
    def _start(self, trial: TrialRecord) -> None:
        self._ensure_run(trial)

    @_guarded
    def _result(self, trial: TrialRecord, result: dict) -> None:
        self._log_result(trial, result)

    @_guarded
    def _completed(self, trial: TrialRecord) -> None:
        self._complete(trial)

    @_guarded
    def _errored(self, trial: TrialRecord) -> None:
        run_id = self._ensure_run(trial)
        if trial.trial_id not in self._planned:  # failed before its first report
            _log_raw_config(self._client, run_id, trial.config)
        if trial.error_file:
            self._client.set_tag(run_id, ERROR_FILE_TAG, trial.error_file)
        self._close(trial, TrialStatus.FAILED)

    @_guarded
    def _recovered(self, trial: TrialRecord) -> None:
        # Tune retries the trial from its last checkpoint; the run stays open and continues.
        run_id = self._ensure_run(trial)
        self._client.set_tag(run_id, RETRIED_TAG, "true")

    @_guarded
    def _end_sweep(self, interrupted: bool, trials: list) -> None:
        for trial_id in list(self._runs):
            log.warning("trial %s ended without a final status; closing its run KILLED", trial_id)
            self._interrupt(self._runs.pop(trial_id))
        if self._parent_run_id is not None:
            self._settle_open_runs({t.trial_id: t for t in trials})
            if interrupted:
                self._client.set_tag(self._parent_run_id, INTERRUPTED_TAG, "true")
                self._client.set_terminated(self._parent_run_id, status="KILLED")
            elif self.final:
                self._client.set_terminated(self._parent_run_id, status="FINISHED")

    @_guarded
    def close_parent(self) -> None:
        """End the sweep's parent run FINISHED (a non-final phase that nothing follows)."""
        if self._parent_run_id is not None:
            self._client.set_terminated(self._parent_run_id, status="FINISHED")

    @_guarded
    def log_sweep_progress(self, metrics: dict[str, float], step: int,
                           best: dict[str, Any] | None = None) -> None:
        """Progress of the whole sweep on the parent run: ``metrics`` (trial counts, best value)
        at ``step`` (trials ended), and the best trial so far as tags ``best.<key>``, overwritten
        as it changes.

        After a resume Tune's saved state may know fewer ended trials than the killed driver
        had logged: MLflow shows a metric's value at its highest step, and the tags are kept
        (``best.step``) until the resumed sweep has as many ended trials again.
        """
        if self._parent_run_id is None:
            return
        now = int(time.time() * 1000)
        tags = []
        if best and step >= self._best_step:
            self._best_step = step
            tags = [RunTag(f"best.{k}", str(v)) for k, v in {**best, "step": step}.items()]
        self._client.log_batch(
            self._parent_run_id,
            metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()], tags=tags)

    # --- MLflow side ------------------------------------------------------------------------

    def _log_result(self, trial: Any, result: dict) -> None:
        run_id = self._ensure_run(trial)
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        if epoch <= self._last_epoch.get(trial.trial_id, 0):
            return  # re-run after restoring an older checkpoint: the run already has this epoch
        self._last_epoch[trial.trial_id] = epoch
        if result.get("diverged", 0.0) > 0:
            self._diverged.add(trial.trial_id)
        resolved = result.get(CONFIG_KEY)
        if resolved:  # the trial's own resolved config: what it really ran with
            self._planned[trial.trial_id] = int(resolved["optim.epochs"])
            _log_params(self._client, run_id, resolved)
        self._client.log_batch(run_id, metrics=_metrics(result, epoch),
                               tags=[RunTag(k, str(v)) for k, v in
                                     (result.get(TAGS_KEY) or {}).items()])

    def _complete(self, trial: Any) -> None:
        """Close the run of a trial Tune completed: a trial whose planned epochs are not known
        (it never sent its config) ran what it planned."""
        run_id = self._ensure_run(trial)
        last = self._last_epoch.get(trial.trial_id, 0)
        ran = int((trial.last_result or {}).get("epoch", last))
        if ran < last:  # a killed driver's attempt went further than the trial did in the end
            run_id, last = self._rewind(trial.trial_id, run_id, ran), ran
        epochs = self._planned.get(trial.trial_id, last)
        status = classify(diverged=trial.trial_id in self._diverged, epochs_run=last,
                          epochs_planned=epochs, ended=True)
        if status is TrialStatus.DIVERGED:
            self._client.set_tag(run_id, DIVERGED_TAG, "true")
        elif status is TrialStatus.STOPPED_EARLY:  # ASHA's decision (or a stopper's)
            self._client.set_tag(run_id, STOPPED_EARLY_TAG, f"scheduler at epoch {last}/{epochs}")
        self._close(trial, status)

    def _rewind(self, trial_id: str, run_id: str, epoch: int) -> str:
        """The trial's run as of ``epoch``: a new run with the old one's params, tags and metric
        points up to it, and the old run deleted. Returns the new run's id.

        A killed driver may have logged epochs after Tune's last saved state; the resumed sweep
        re-runs the trial from that state, and ASHA, deciding again with what it knows now, can
        stop it sooner. MLflow deletes no metric points, so the run is rebuilt without them, and
        MLflow holds the epochs Ray's results hold.
        """
        old = self._client.get_run(run_id)
        new = self._client.create_run(self._experiment_id, run_name=old.info.run_name,
                                      tags=dict(old.data.tags)).info.run_id
        _log_params(self._client, new, old.data.params)
        points = [m for key in old.data.metrics
                  for m in self._client.get_metric_history(run_id, key) if m.step <= epoch]
        for i in range(0, len(points), METRIC_BATCH):
            self._client.log_batch(new, metrics=points[i : i + METRIC_BATCH])
        self._client.delete_run(run_id)
        self._runs[trial_id], self._last_epoch[trial_id] = new, epoch
        log.warning("trial %s: a killed driver had logged epochs after %d that the resumed sweep "
                    "did not run (ASHA stopped it sooner); its MLflow run %s is replaced by %s "
                    "without them", trial_id, epoch, run_id, new)
        return new

    def _settle_open_runs(self, trials: dict[str, Any]) -> None:
        """The child runs of this phase that a killed driver left: still RUNNING once Tune's
        experiment ended (its MLflow calls were queued, or its trial was never recorded), or of
        a trial Tune's experiment does not hold.

        A run of a trial Tune recorded is closed as the trial ended (its last result logged if
        the run lacks it), or KILLED and tagged interrupted if the trial did not end. A run of a
        trial Tune has no record of is deleted; in a restored sweep closed ones too (the killed
        driver may have run the trial to its end after Tune's last saved state): the restored
        sweep sampled another trial in its place, and Tune's results, the report's other source,
        do not hold it either.
        """
        for run in self._child_runs(open_only=not self._restored):
            if (REPEAT_OF_TAG in run.data.tags) != (self.phase == "repeats"):
                continue  # the other phase's
            trial = trials.get(run.data.tags.get(TRIAL_ID_TAG))
            if trial is None:  # (closed ones are listed only in a restored sweep)
                epochs = int(run.data.metrics.get("epoch", 0))
                (log.warning if epochs else log.info)(
                    "deleting run %s (%s): the sweep's killed driver started its trial after "
                    "Tune's last saved state, and the resumed sweep ran another in its place%s",
                    run.info.run_id, run.info.run_name,
                    f"; the {epochs} epoch(s) it logged are not part of the sweep"
                    if epochs else "")
                self._client.delete_run(run.info.run_id)
            elif run.info.status != "RUNNING":
                continue
            elif trial.status == "ERROR":
                self._ensure_run(trial)
                self._close(trial, TrialStatus.FAILED)
            elif _ended(trial):
                self._log_result(trial, trial.last_result)
                self._complete(trial)
            else:
                self._interrupt(run.info.run_id)

    def _child_runs(self, open_only: bool) -> list:
        """The runs under the sweep's parent run (``open_only``: those still RUNNING), page by
        page."""
        where = f"tags.`{PARENT_TAG}` = '{self._parent_run_id}'"
        if open_only:
            where += " and attributes.status = 'RUNNING'"
        runs, token = [], None
        while True:
            page = self._client.search_runs([self._experiment_id], filter_string=where,
                                            max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _run_guarded(self, method: Callable, args: tuple | list, kwargs: dict | None = None,
                     ) -> None:
        """One write; an outage is waited out inside it (`PatientClient`), a refusal is logged
        and the write skipped: no tracking failure may stop training."""
        if self._disabled:
            return
        try:
            method(self, *args, **(kwargs or {}))
        except GaveUp:
            raise  # the sweep ended with the store away: the write goes to the journal
        except Exception as e:  # noqa: BLE001 - any tracking failure must not stop training
            if method.__name__ == "_connect":
                self._disable(e)
            else:
                log.error("MLflow at %s refused a write (%s: %s: %s); it is skipped",
                          self.tracking_uri, method.__name__.lstrip("_"), type(e).__name__, e)

    def _connect(self) -> None:
        self._writer.call(probe, self.tracking_uri)
        client = PatientClient(MlflowClient(tracking_uri=self.tracking_uri), self._writer)
        exp = client.get_experiment_by_name(self.experiment)
        self._experiment_id = exp.experiment_id if exp else client.create_experiment(
            self.experiment, tags=dict([EXPERIMENT_KIND]))
        self._client = client

    def _open_parent_run(self) -> None:
        """Open the sweep's parent run, or after a restore reopen it."""
        found = find_parent_run(self._client, self._experiment_id, self.sweep, self.sweep_id)
        if found:
            self._parent_run_id = found.info.run_id
            self._best_step = int(found.data.tags.get("best.step", -1))
            _reopen(self._client, found)
            log.info("continuing parent run %s of sweep %s", self._parent_run_id, self.sweep)
        else:
            # The driver's code, packages and machine; each trial tags its own run likewise.
            tags = {SWEEP_TAG: self.sweep, SWEEP_ID_TAG: self.sweep_id, **provenance(),
                    **self.parent_tags}
            run = self._client.create_run(self._experiment_id, run_name=self.sweep, tags=tags)
            self._parent_run_id = run.info.run_id
            self._new_parent = True
            _log_params(self._client, self._parent_run_id, self.sweep_params)

    def _ensure_run(self, trial: Any) -> str:
        """The trial's open run: known, found by its trial-id tag (restore), or created."""
        trial_id = trial.trial_id
        if trial_id in self._runs:
            return self._runs[trial_id]
        if self._new_parent and trial_id not in self._seen:  # no run of it can exist yet
            self._seen.add(trial_id)
            self._runs[trial_id] = self._create_run(trial)
            return self._runs[trial_id]
        self._seen.add(trial_id)
        found = self._client.search_runs(
            [self._experiment_id],
            filter_string=(f"tags.`{TRIAL_ID_TAG}` = '{_quote(trial_id)}' and "
                           f"tags.`{PARENT_TAG}` = '{self._parent_run_id}'"),
            max_results=1)
        if found:
            run_id = found[0].info.run_id
            _reopen(self._client, found[0])
            self._last_epoch[trial_id] = int(found[0].data.metrics.get("epoch", 0))
            if "optim.epochs" in found[0].data.params:
                self._planned[trial_id] = int(found[0].data.params["optim.epochs"])
            log.info("trial %s continues MLflow run %s", trial_id, run_id)
        else:
            run_id = self._create_run(trial)
        self._runs[trial_id] = run_id
        return run_id

    def _create_run(self, trial: Any) -> str:
        """A child run tagged from Tune's config; params come with the trial's first report.

        Tune's config may be partial or carry sweep-only keys (a wrapper resolves it against a
        recipe), so the params logged are the trial's own resolved ``TrialConfig.to_flat()``.
        """
        config = dict(trial.config)
        tags = {PARENT_TAG: self._parent_run_id, TRIAL_ID_TAG: trial.trial_id,
                TRIAL_NAME_TAG: str(trial)}
        tags.update({k: str(config[k]) for k in ("arch", "init", "ghn") if k in config})
        if REPEAT_OF in config:  # a further seed of a search trial's configuration
            tags.update({REPEAT_OF_TAG: str(config[REPEAT_OF]),
                         PHASE_TAG: "repeats"})
        run = self._client.create_run(self._experiment_id, run_name=str(trial), tags=tags)
        return run.info.run_id

    def _close(self, trial: Any, status: TrialStatus) -> None:
        run_id = self._runs.pop(trial.trial_id, None)
        if run_id is not None:
            self._client.set_terminated(run_id, status=run_status(status))

    def _interrupt(self, run_id: str) -> None:
        """Close a run whose trial did not end: the sweep was cut off; --resume reopens it."""
        self._client.set_tag(run_id, INTERRUPTED_TAG, "true")
        self._client.set_terminated(run_id, status=run_status(TrialStatus.INTERRUPTED))

    def _disable(self, error: Exception) -> None:
        self._disabled = True
        log.error(
            "MLflow tracking at %s refused this driver (%s: %s). Training continues; metrics are "
            "kept only in Ray Tune's results. No further MLflow calls will be made by this "
            "driver.",
            self.tracking_uri, type(error).__name__, error)


def _grace_s() -> float:
    """How long the experiment's end waits for an away tracking store (``GHN_SWEEP_TRACKING_
    GRACE_S``): long enough for a server's restart, short enough not to hold a stopped sweep."""
    return float(os.environ.get(GRACE_ENV, DEFAULT_GRACE_S))


def _ended(trial: Any) -> bool:
    """Whether Tune's trial really ended: it errored, or its last result carries ``done``."""
    return trial.status == "ERROR" or bool((trial.last_result or {}).get("done"))


def _reopen(client: MlflowClient, run: Any) -> None:
    """A run continued after a restore: RUNNING again, and no longer marked interrupted."""
    client.update_run(run.info.run_id, status="RUNNING")
    if INTERRUPTED_TAG in run.data.tags:
        client.delete_tag(run.info.run_id, INTERRUPTED_TAG)


def _metrics(result: dict, epoch: int) -> list[Metric]:
    """Our stable metric names at step = epoch; the init diagnostics at step 0."""
    now = int(time.time() * 1000)
    out = []
    for key, value in result.items():
        ours = key in REPORTED_METRICS or key.startswith(INIT_PREFIX)
        if ours and isinstance(value, (int, float)) and not isinstance(value, bool):
            step = 0 if key.startswith(INIT_PREFIX) else epoch
            out.append(Metric(key, float(value), now, step))
    return out


def _log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, str(v)) for k, v in sorted(params.items())]
    for i in range(0, len(items), PARAM_BATCH):
        client.log_batch(run_id, params=items[i : i + PARAM_BATCH])


def _log_raw_config(client: MlflowClient, run_id: str, config: dict) -> None:
    """Best effort: Tune's config as params, so a trial that never reported still shows it."""
    try:
        _log_params(client, run_id, dict(config))
    except Exception as e:  # noqa: BLE001 - e.g. a conflicting value from an earlier attempt
        log.debug("could not log the raw config of run %s: %s", run_id, e)


def _quote(value: str) -> str:
    return str(value).replace("'", "\\'")


def probe(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast on an unreachable server instead of MLflow's minutes of HTTP retries."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    requests.get(uri.rstrip("/") + "/health", timeout=timeout_s).raise_for_status()


def tracking_for(cfg: SweepConfig, sweep_id: str, *, final: bool, phase: str = "search",
                 parent_tags: dict[str, str] | None = None) -> MlflowTrackingCallback:
    """The tracking callback of one phase of sweep ``cfg``; ``final``: its end closes the
    parent run; ``parent_tags``: set on the parent run if this callback creates it."""
    return MlflowTrackingCallback(
        tracking_uri=cfg.tracking_uri, experiment=cfg.experiment, sweep=cfg.sweep_name,
        sweep_params={f"sweep.{k}": v for k, v in cfg.__dict__.items()}, sweep_id=sweep_id,
        final=final, phase=phase, parent_tags=parent_tags,
        journal_dir=str(cfg.results_dir or Path.cwd() / cfg.sweep_name))
